"""Archives ``frozenbench prepare`` unpacks: changed after download, built to escape or explode,
or to break what comes after the extraction (the digest, the leftover sweep, file lists, terminals).

The crafted ones are made by each case's builder (the deep, the many-membered and the lying ones
cost nothing to generate and would only bloat ``tests/data/bad/``); the helpers that craft them are
those of ``tests/test_archives.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from frozenbench.data.archive import MAX_MEMBERS_ENV
from frozenbench.utils.atomic import TMP_MARKER

from ..test_archives import ARCHIVE_CASES, REG, make_tar, make_zip, patch_zip_name
from ..test_atomic import deep_tree
from .case import BAD, Builder, Case

KIND = "archives"


def prepare_case(tmp: Path, archive: Path, published: bytes, expected: str) -> Case:
    """``frozenbench prepare`` of the ADE20K archive ``archive`` whose published digest is that of ``published``."""
    entry = {
        "url": f"http://127.0.0.1/{archive.name}",
        "filename": archive.name,
        "checksum": {"sha256": hashlib.sha256(published).hexdigest()},
    }
    spec = {"source": "download", "format": "ade", "download": {"files": [entry]}}
    out = tmp / "data" / "ade20k"
    records = tmp / "k.sha256"
    args = ["frozenbench", "prepare", "--spec", json.dumps(spec), "--downloads", str(archive.parent)]
    args += ["--checksums", str(records), "--out", str(out)]
    return Case(args, archive, expected, output=out, records=records)


def tampered_archive_case(tmp: Path) -> Case:
    """An archive changed on disk after `frozenbench download` verified it: prepare refuses it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ADEChallengeData2016/objectInfo150.txt", "Idx\tRatio\tTrain\tVal\tName\n")
    body = buf.getvalue()
    archive = tmp / "downloads" / "ade20k" / "ADEChallengeData2016.zip"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(body[:-1] + bytes([body[-1] ^ 1]))
    return prepare_case(tmp, archive, body, "sha256 mismatch")


def hostile_archive_case(filename: str, expected: str) -> Builder:
    """A downloaded archive (its published digest matches) that tries to write outside the dataset,
    through a link, or far more than it holds."""

    def case(tmp: Path) -> Case:
        archive = tmp / "downloads" / "ade20k" / filename
        archive.parent.mkdir(parents=True)
        shutil.copy(BAD / filename, archive)
        return prepare_case(tmp, archive, archive.read_bytes(), expected)

    return case


ADE = "ADEChallengeData2016/"
OK = (ADE + "objectInfo150.txt", b"Idx\tRatio\tTrain\tVal\tName\n")  # what precedes the hostile member


def crafted_case(craft: Callable[[Path], None], filename: str, expected: str, **extra) -> Builder:
    """``frozenbench prepare`` of the ADE20K archive ``filename`` that ``craft(path)`` writes (its
    published digest matches); ``extra``: the ``Case``'s environment and so on."""

    def case(tmp: Path) -> Case:
        archive = tmp / "downloads" / "ade20k" / filename
        archive.parent.mkdir(parents=True)
        craft(archive)
        return dataclasses.replace(prepare_case(tmp, archive, archive.read_bytes(), expected), **extra)

    return case


def tar_of(*members: tuple, mode: str = "w") -> Callable[[Path], None]:
    return lambda path: make_tar(path, [(OK[0], REG, OK[1]), *members], mode=mode)


def zip_of(*entries: tuple, patch: tuple[bytes, bytes] | None = None, utf8_flag: bool | None = None):
    def craft(path: Path) -> None:
        make_zip(path, [OK, *entries])
        if patch is not None:
            patch_zip_name(path, *patch, utf8_flag=utf8_flag)

    return craft


def latin1_tar(path: Path) -> None:
    """Made on a system whose file names are Latin-1: the old prepare crashed in the digest."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tf:
        info = tarfile.TarInfo(ADE + "images/training/caf\u00e9.jpg")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))


def lying_zip(path: Path) -> None:
    """The central directory declares 10000 bytes; the member holds 600 (CRC-32 of those 600)."""
    make_zip(path, [OK, (ADE + "images/training/a.jpg", b"hello " * 100)])
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.rfind(signature)
        data[at + offset : at + offset + 4] = (10_000).to_bytes(4, "little")
    path.write_bytes(bytes(data))


def header_bomb(path: Path) -> None:
    """A 4 MiB pax header in 4 KB of gzip: tarfile would read it whole into memory."""
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo(ADE + "objectInfo150.txt")
        info.pax_headers = {"comment": "x" * (4 << 20)}
        tf.addfile(info, io.BytesIO(b""))


def header_chain(path: Path) -> None:
    """2000 extended headers in a row: tarfile follows them by recursion (RecursionError)."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        tf.addfile(tarfile.TarInfo(ADE + "objectInfo150.txt"))
        for _ in range(2000):
            header = tarfile.TarInfo("PaxHeader")
            header.type = tarfile.XHDTYPE
            tf.addfile(header)


def many_members(path: Path) -> None:
    """1001 empty files with the limit set at 1000: what 2 million and one would be at the default."""
    make_tar(path, [(f"{ADE}images/training/{i:06d}.jpg", REG, b"") for i in range(1001)], mode="w:gz")


def leftover_case(tmp: Path) -> Case:
    """A run killed mid-extraction (or one that crashed on a deep tree before) left a temporary
    dataset and an extraction staging folder 1200 levels deep, holding a name that is not UTF-8, a
    fifo, a folder without permissions and a link out; the next prepare (of an archive refused in
    turn) sweeps them (the old sweep died of RecursionError on every later run) and says why it
    stopped."""
    out = tmp / "data" / "ade20k"
    outside = tmp / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    case = crafted_case(tar_of((ADE + "images/a\nb.jpg", REG, b"x")), "leftover.tar", "control character U+000A")(tmp)
    deep_tree(out.parent / f".ade20k{TMP_MARKER}killed", 1200, outside)
    deep_tree(out.parent / f".ade20k{TMP_MARKER}killed.extract-leftover.tar", 1200, outside)  # its staging
    return case


DEEP = ADE + "a/" * 1000 + "f.txt"
CASES: dict[str, Builder] = {
    "archive_changed_after_download": tampered_archive_case,
    **{name: hostile_archive_case(filename, expected) for name, (filename, expected) in ARCHIVE_CASES.items()},
    # what broke the cleanup, the digest or the memory after (or while) extracting
    "archive_thousand_deep_member": crafted_case(tar_of((DEEP, REG, b"x")), "deep.tar", "levels deep (limit: 64)"),
    "archive_component_past_name_max": crafted_case(
        tar_of((ADE + "x" * 256, REG, b"x")), "long.tar", "has a component of 256 bytes (limit: 255"
    ),
    "archive_tar_name_not_utf8": crafted_case(latin1_tar, "latin1.tar", "has a name that is not valid UTF-8"),
    "archive_zip_name_not_utf8": crafted_case(
        zip_of((ADE + "images/training/cafX.jpg", b"x"), patch=(b"cafX.jpg", b"caf\x82.jpg"), utf8_flag=False),
        "cp437.zip",
        "has a name that is not valid UTF-8",
    ),
    "archive_too_many_members": crafted_case(
        many_members, "many.tar.gz", "more than 1000 members (limit: 1000", env={MAX_MEMBERS_ENV: "1000"}
    ),
    "archive_leftover_deep_tree_is_swept": leftover_case,
    "archive_tar_header_bomb": crafted_case(header_bomb, "pax.tar.gz", "refusing a possible memory bomb"),
    "archive_tar_header_chain": crafted_case(header_chain, "chain.tar", "more than 8 extended headers in a row"),
    # names that lie to a terminal, a log or a file list, or that another file system would merge
    "archive_newline_in_name": crafted_case(
        zip_of((ADE + "images/training/a\nb.jpg", b"x")), "newline.zip", "control character U+000A"
    ),
    "archive_terminal_escape_in_name": crafted_case(
        tar_of((ADE + "images/\x1b]0;pwned\x07.jpg", REG, b"x")), "escape.tar", "control character U+001B"
    ),
    "archive_zip_nul_in_name": crafted_case(
        zip_of((ADE + "evil.txtX.jpg", b"x"), patch=(b"evil.txtX.jpg", b"evil.txt\x00.jpg")),
        "nul.zip",
        "contains a NUL byte",
    ),
    "archive_case_collision": crafted_case(
        zip_of((ADE + "images/training/A.jpg", b"a"), (ADE + "images/training/a.jpg", b"b")),
        "case.zip",
        "differ only in case",
    ),
    "archive_zip_declared_size_lies": crafted_case(
        lying_zip, "lying.zip", "holds 600 bytes but declares 10000: a corrupt or crafted archive"
    ),
}
