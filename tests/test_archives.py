"""Extraction of hostile archives (frozenbench.data.archive) and the merge of several archives.

Every hostile archive is crafted here, at test time, inside a sandbox: the target sits a few folders
deep under ``tmp_path`` and every escape the archive attempts points back into ``tmp_path``, so a
refusal that failed would show as a changed sandbox, never as a write elsewhere on the machine.
``ARCHIVE_CASES`` names the committed ones (tests/data/bad/, made by tests/data/make_bad_corpus.py)
and what each must be refused for.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
import warnings
import zipfile
from pathlib import Path

import pytest

from frozenbench.data.archive import DEFAULT_MAX_MEMBERS, MAX_MEMBERS_ENV, MIN_MAX_BYTES, extract
from frozenbench.data.download import RemoteFile
from frozenbench.data.manifest import content_digest
from frozenbench.data.prepare import _extract_into, prepare_ade
from frozenbench.data.synth import synthesize
from frozenbench.errors import UserError
from frozenbench.utils.atomic import TMP_MARKER, remove_tree

from .conftest import REPO, run_cmd
from .test_atomic import deep_tree

BAD = REPO / "tests" / "data" / "bad"

# case -> (file in tests/data/bad/, what the error must say); each error also names the file
ARCHIVE_CASES: dict[str, tuple[str, str]] = {
    "archive_traversal": ("archive_traversal.tar", "has a '..' component"),
    "archive_absolute_name": ("archive_absolute.zip", "is an absolute path"),
    "archive_symlink_escape": ("archive_symlink_escape.tar", "is a symlink"),
    "archive_hardlink": ("archive_hardlink.tar", "is a hard link"),
    "archive_symlink_chain": ("archive_symlink_chain.tar", "is a symlink"),
    "archive_bomb": ("archive_bomb.zip", "refusing a possible decompression bomb"),
}

REG, DIR, SYM, LNK = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
SENTINEL = b"must never change\n"
DEEP = "a/" * 1000 + "f.txt"  # 2005 bytes: under PATH_MAX, over Python's recursion limit
LONG = "/".join(["d" * 200] * 21)  # 21 levels, 4220 bytes


# -- crafting -----------------------------------------------------------------------------------


def make_tar(path: Path, members: list[tuple], mode: str = "w") -> Path:
    """``members``: (name, tar type, data for files or link target for links[, file mode])."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as tf:
        for name, kind, payload, *file_mode in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = file_mode[0] if file_mode else 0o644
            if "\x00" in name:  # the ustar field would end at the NUL: only a pax header keeps it
                info.pax_headers = {"path": name}
            if kind in (REG, tarfile.AREGTYPE):
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
            else:
                info.linkname = payload or ""
                tf.addfile(info)
    return path


def make_zip(path: Path, entries: list[tuple], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """``entries``: (name, data[, unix mode for external_attr])."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name": wanted here
        with zipfile.ZipFile(path, "w", compression=compression) as zf:
            for name, data, *unix_mode in entries:
                info = zipfile.ZipInfo(name)
                info.compress_type = compression
                info.create_system = 3
                info.external_attr = (unix_mode[0] if unix_mode else 0o100644) << 16
                zf.writestr(info, data)
    return path


def chain_members(dest: Path, steps: str = "abcdefghijklmnop") -> list[tuple]:
    """The long-symlink-chain bypass of the ``data`` filter (CVE-2025-4517), sized for ``dest``:
    links to long folder names push ``os.path.realpath`` past PATH_MAX, where it stops resolving;
    ``escape`` then points at the folder above ``dest`` and ``escape/escaped.txt`` lands there."""
    path_max = os.pathconf(dest.parent, "PC_PATH_MAX")
    comp = "d" * ((path_max - len(str(dest)) - 1) // (len(steps) + 1))
    members, path = [], ""
    for step in steps:
        members += [(os.path.join(path, comp), DIR, None), (os.path.join(path, step), SYM, comp)]
        path = os.path.join(path, comp)
    link = os.path.join(*steps, "l" * 254)
    return members + [
        (link, SYM, "/".join([".."] * len(steps))),
        ("escape", SYM, link + "/.."),
        ("escape/escaped.txt", REG, b"escaped\n"),
    ]


def set_encrypted_flag(path: Path) -> None:
    """Set bit 0 (encrypted) of the flags in every local and central header of the zip ``path``."""
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(signature)
        while at >= 0:
            data[at + offset] |= 0x1
            at = data.find(signature, at + 4)
    path.write_bytes(bytes(data))


# -- the sandbox --------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` (links not followed) with what it is and its content's digest."""
    seen = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            rel = str(path.relative_to(root))
            if path.is_symlink():
                seen[rel] = f"link -> {os.readlink(path)}"
            elif path.is_dir():
                seen[rel] = "dir"
            else:
                seen[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return seen


class Sandbox:
    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path
        self.sentinel = tmp_path / "outside.txt"
        self.sentinel.write_bytes(SENTINEL)
        self.downloads = tmp_path / "downloads"
        self.downloads.mkdir()
        self.dest = tmp_path / "work" / "deep" / "dest"  # "../../../x" from inside it is tmp_path/x
        self.dest.parent.mkdir(parents=True)

    def refused(self, archive: Path, *expected: str, **limits) -> str:
        """Extract ``archive``, expect a refusal naming it and saying ``expected``; check that
        nothing exists at the target and nothing changed around it."""
        before = snapshot(self.root)
        with pytest.raises(UserError) as info:
            extract(archive, self.dest, **limits)
        message = str(info.value)
        assert message.startswith(f"{archive}: "), message
        for text in expected:
            assert text in message, message
        assert not self.dest.exists() and not self.dest.is_symlink()
        assert list(self.dest.parent.iterdir()) == [], "a temporary folder was left behind"
        assert snapshot(self.root) == before, "the archive changed something outside its target"
        assert self.sentinel.read_bytes() == SENTINEL
        return message


@pytest.fixture
def box(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)


# -- refusals -----------------------------------------------------------------------------------


def tar_cases(box: Sandbox) -> dict[str, tuple[list[tuple], str, str]]:
    """case -> (members, the member the error must name, what it must say)."""
    absolute = str(box.root / "absolute.txt")
    return {
        "dotdot": (
            [("ok.txt", REG, b"ok"), ("../../../escaped.txt", REG, b"x")],
            "../../../escaped.txt",
            "has a '..' component",
        ),
        "dotdot_inside": (
            [("a/../../../../escaped.txt", REG, b"x")],
            "a/../../../../escaped.txt",
            "has a '..' component",
        ),
        "absolute_etc": ([("/etc/frozenbench-escaped", REG, b"x")], "/etc/frozenbench-escaped", "is an absolute path"),
        "absolute_sandbox": ([(absolute, REG, b"x")], absolute, "is an absolute path"),
        "nul": ([("a\x00b.txt", REG, b"x")], "a\x00b.txt", "contains a NUL byte"),
        "symlink_out": ([("images", SYM, "../../.."), ("images/escaped.txt", REG, b"x")], "images", "is a symlink"),
        "symlink_absolute": (
            [("images", SYM, str(box.root)), ("images/escaped.txt", REG, b"x")],
            "images",
            "is a symlink",
        ),
        "dot_chain": (
            [("a", SYM, "."), ("b", SYM, "a/a/a/a/a/a/a/a"), ("c", SYM, "b/../../.."), ("c/escaped.txt", REG, b"x")],
            "a",
            "is a symlink",
        ),
        "hardlink_out": (
            [("ok.txt", REG, b"ok"), ("stolen.txt", LNK, "../../../outside.txt")],
            "stolen.txt",
            "is a hard link",
        ),
        "hardlink_member": (
            [("a.txt", REG, b"a"), ("b.txt", LNK, "a.txt"), ("b.txt", REG, b"over")],
            "b.txt",
            "is a hard link",
        ),
        "char_device": ([("null", tarfile.CHRTYPE, None)], "null", "is a character device"),
        "block_device": ([("sda", tarfile.BLKTYPE, None)], "sda", "is a block device"),
        "fifo": ([("pipe", tarfile.FIFOTYPE, None)], "pipe", "is a fifo"),
        "duplicate": ([("a/b.txt", REG, b"1"), ("a/b.txt", REG, b"2")], "a/b.txt", "occurs twice"),
        "under_a_file": ([("a", REG, b"file"), ("a/b.txt", REG, b"x")], "a/b.txt", "which the archive has as a file"),
        "file_over_folder": ([("a/b.txt", REG, b"x"), ("a", REG, b"file")], "a", "also has folders inside it"),
        # names a terminal, a log line or a file list cannot show as they are
        "newline": ([("images/a\nb.jpg", REG, b"x")], "images/a\nb.jpg", "contains the control character U+000A"),
        "escape_sequence": ([("\x1b[2J\x1b[Hok.txt", REG, b"x")], "\x1b[2J\x1b[Hok.txt", "control character U+001B"),
        "bidi_override": ([("photo\u202egpj.exe", REG, b"x")], "photo\u202egpj.exe", "control character U+202E"),
        # what the digest, the sweep and PATH_MAX could not take
        "thousand_deep": ([(DEEP, REG, b"x")], DEEP, "is 1001 levels deep (limit: 64)"),
        "long_component": ([("a" * 256, REG, b"x")], "a" * 256, "has a component of 256 bytes (limit: 255"),
        "long_name": ([(LONG, REG, b"x")], LONG, f"is a name of {len(LONG)} bytes (limit: 4096)"),
        # one of the two would replace the other on macOS or Windows
        "case_collision": (
            [("Images/a.jpg", REG, b"a"), ("images/b.jpg", REG, b"b")],
            "images/b.jpg",
            "collides with 'Images', earlier in the archive: the names differ only in case",
        ),
        "case_collision_file": ([("README.txt", REG, b"a"), ("readme.txt", REG, b"b")], "readme.txt", "collides"),
        "normalisation_collision": (
            [("caf\u00e9.jpg", REG, b"a"), ("cafe\u0301.jpg", REG, b"b")],
            "cafe\u0301.jpg",
            "Unicode normalisation",
        ),
    }


TAR_CASES = [
    "dotdot",
    "dotdot_inside",
    "absolute_etc",
    "absolute_sandbox",
    "nul",
    "symlink_out",
    "symlink_absolute",
    "dot_chain",
    "hardlink_out",
    "hardlink_member",
    "char_device",
    "block_device",
    "fifo",
    "duplicate",
    "under_a_file",
    "file_over_folder",
    "newline",
    "escape_sequence",
    "bidi_override",
    "thousand_deep",
    "long_component",
    "long_name",
    "case_collision",
    "case_collision_file",
    "normalisation_collision",
]


@pytest.mark.parametrize("case", TAR_CASES)
def test_hostile_tar_is_refused_and_leaves_nothing(box, case):
    members, member, expected = tar_cases(box)[case]
    archive = make_tar(box.downloads / f"{case}.tar.gz", members, mode="w:gz")
    box.refused(archive, f"member {member!r}", expected)
    assert not Path("/etc/frozenbench-escaped").exists()


ZIP_CASES = {
    "dotdot": ([("ok.txt", b"ok"), ("../../../escaped.txt", b"x")], "../../../escaped.txt", "has a '..' component"),
    "absolute": ([("/etc/frozenbench-escaped", b"x")], "/etc/frozenbench-escaped", "is an absolute path"),
    "backslash": ([("..\\..\\..\\escaped.txt", b"x")], "..\\..\\..\\escaped.txt", "contains a backslash"),
    "drive": ([("C:/escaped.txt", b"x")], "C:/escaped.txt", "starts with a drive letter"),
    "symlink": (
        [("images", b"../../..", stat.S_IFLNK | 0o777), ("images/escaped.txt", b"x")],
        "images",
        "is a symlink",
    ),
    "fifo": ([("pipe", b"", stat.S_IFIFO | 0o644)], "pipe", "is a fifo"),
    "duplicate": ([("a/b.txt", b"1"), ("a/b.txt", b"2")], "a/b.txt", "occurs twice"),
    "under_a_file": ([("a", b"file"), ("a/b.txt", b"x")], "a/b.txt", "which the archive has as a file"),
    "folder_with_data": ([("a/", b"data")], "a/", "is a folder holding 4 bytes"),
}


@pytest.mark.parametrize("case", sorted(ZIP_CASES))
def test_hostile_zip_is_refused_and_leaves_nothing(box, case):
    entries, member, expected = ZIP_CASES[case]
    archive = make_zip(box.downloads / f"{case}.zip", entries)
    box.refused(archive, f"member {member!r}", expected)


def test_symlink_refusal_says_only_files_and_folders_are_extracted(box):
    archive = make_tar(box.downloads / "link.tar", [("a/b", SYM, "../../..")])
    message = box.refused(archive)
    assert message == (
        f"{archive}: member 'a/b' is a symlink (to '../../..'); only regular files and folders are extracted"
    )


def test_long_symlink_chain_is_refused(box):
    archive = make_tar(box.downloads / "chain.tar", chain_members(box.dest))
    box.refused(archive, "member 'a'", "is a symlink")
    assert not (box.dest.parent / "escaped.txt").exists()


def test_data_filter_alone_lets_the_symlink_chain_out_on_this_python(tmp_path):
    """Why archive.py extracts by hand: the same archive escapes ``extractall(filter="data")``."""
    dest = tmp_path / "work" / "dest"
    dest.mkdir(parents=True)
    archive = make_tar(tmp_path / "chain.tar", chain_members(dest))
    with tarfile.open(archive) as tf:
        try:
            tf.extractall(dest, filter="data")
        except tarfile.FilterError as err:
            pytest.skip(f"this Python's data filter is fixed (CVE-2025-4517): {err}")
    assert (tmp_path / "work" / "escaped.txt").read_bytes() == b"escaped\n"


def test_encrypted_zip_member_is_refused(box):
    archive = make_zip(box.downloads / "secret.zip", [("secret.txt", b"x" * 100)], compression=zipfile.ZIP_STORED)
    set_encrypted_flag(archive)
    box.refused(archive, "member 'secret.txt'", "is encrypted")


def test_zip_bomb_is_refused_by_the_default_ratio(box):
    archive = box.downloads / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("zeros.bin", "w") as f:  # streamed: memory stays at one chunk
            zeros = bytes(1 << 20)
            for _ in range(300):
                f.write(zeros)
    size = archive.stat().st_size
    assert size * 100 < MIN_MAX_BYTES < 300 << 20  # the floor of 256 MiB is what refuses it
    message = box.refused(
        archive,
        "member 'zeros.bin'",
        f"more than {MIN_MAX_BYTES} bytes uncompressed",
        f"100 x the archive's {size} bytes",
        "refusing a possible decompression bomb",
    )
    assert "limit" in message


def test_tar_past_max_bytes_is_refused_while_streaming(box):
    archive = make_tar(
        box.downloads / "big.tar.gz", [("a.bin", REG, bytes(600)), ("b.bin", REG, bytes(600))], mode="w:gz"
    )
    box.refused(
        archive,
        "member 'b.bin'",
        "more than 1000 bytes uncompressed (limit: max_bytes)",
        "decompression bomb",
        max_bytes=1000,
    )


def test_within_max_bytes_is_extracted(box):
    archive = make_tar(box.downloads / "ok.tar", [("a.bin", REG, bytes(600)), ("b.bin", REG, bytes(400))])
    extract(archive, box.dest, max_bytes=1000)
    assert (box.dest / "b.bin").stat().st_size == 400


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_more_members_than_max_members_is_refused(box, kind):
    names = [f"f{i}.txt" for i in range(5)]
    if kind == "tar":
        archive = make_tar(box.downloads / "many.tar", [(name, REG, b"x") for name in names])
    else:
        archive = make_zip(box.downloads / "many.zip", [(name, b"x") for name in names])
    box.refused(archive, "member 'f3.txt'", "more than 3 members (limit: max_members)", max_members=3)


def patch_zip_name(path: Path, placeholder: bytes, raw: bytes, utf8_flag: bool | None = None) -> None:
    """Put the bytes ``raw`` where the name ``placeholder`` stands in the zip ``path`` (local and
    central headers alike), and set or clear the UTF-8 flag (bit 11) of both: names and flags that
    ``zipfile`` never writes, but other tools and attackers do."""
    assert len(raw) == len(placeholder)
    data = bytearray(path.read_bytes().replace(placeholder, raw))
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(signature)
        while at >= 0 and utf8_flag is not None:
            data[at + offset + 1] = (data[at + offset + 1] | 0x08) if utf8_flag else (data[at + offset + 1] & ~0x08)
            at = data.find(signature, at + 4)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_tar_name_that_is_not_utf8_is_refused_with_its_bytes(box, fmt):
    """A tar made on a Latin-1 system: the old extraction wrote it, then the digest crashed."""
    archive = box.downloads / "latin1.tar"
    with tarfile.open(archive, "w", format=fmt, encoding="latin-1") as tf:
        info = tarfile.TarInfo("images/caf\u00e9.jpg")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    box.refused(archive, "member b'images/caf\\xe9.jpg' has a name that is not valid UTF-8")


def test_zip_name_that_is_not_utf8_is_refused_with_its_bytes(box):
    """Without the UTF-8 flag zipfile reads cp437, where every byte decodes: the old extraction
    wrote a Windows zip's 'caf\x82.jpg' as 'café.jpg'."""
    archive = make_zip(box.downloads / "cp437.zip", [("images/cafX.jpg", b"x")])
    patch_zip_name(archive, b"cafX.jpg", b"caf\x82.jpg", utf8_flag=False)
    box.refused(archive, "member b'images/caf\\x82.jpg' has a name that is not valid UTF-8")


def test_zip_name_flagged_utf8_that_is_not_is_refused_with_its_bytes(box):
    archive = make_zip(box.downloads / "liar.zip", [("cafX.jpg", b"x")])
    patch_zip_name(archive, b"cafX.jpg", b"caf\xff.jpg", utf8_flag=True)
    box.refused(archive, "member b'caf\\xff.jpg' has a name that is not valid UTF-8", "flags it as UTF-8")


def test_zip_name_in_utf8_without_the_flag_is_extracted_as_utf8(box):
    archive = make_zip(box.downloads / "noflag.zip", [("cafXX.jpg", b"x")])
    patch_zip_name(archive, b"cafXX.jpg", "café.jpg".encode(), utf8_flag=False)
    extract(archive, box.dest)
    assert os.listdir(box.dest) == ["café.jpg"]  # not the cp437 reading 'cafÃ©.jpg'


def test_zip_name_with_a_nul_byte_is_refused(box):
    """zipfile's ``filename`` stops at the NUL ('evil.txt'): the old extraction wrote that."""
    archive = make_zip(box.downloads / "nul.zip", [("evil.txtX.jpg", b"x")])
    patch_zip_name(archive, b"evil.txtX.jpg", b"evil.txt\x00.jpg")
    box.refused(archive, "member 'evil.txt\\x00.jpg' contains a NUL byte")


def test_zip_member_holding_less_than_it_declares_is_refused(box):
    """The CRC-32 matches what the member holds, so zipfile ends it early without an error."""
    archive = make_zip(box.downloads / "short.zip", [("a.txt", b"hello " * 100)])
    data = bytearray(archive.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.find(signature)
        data[at + offset : at + offset + 4] = (10_000).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    box.refused(archive, "member 'a.txt' holds 600 bytes but declares 10000: a corrupt or crafted archive")


def test_oversized_tar_extended_header_is_refused_before_it_is_read(box):
    """tarfile reads a pax header whole into memory: a few compressed MB can declare gigabytes."""
    archive = box.downloads / "pax.tar.gz"
    with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("a.txt")
        info.pax_headers = {"comment": "x" * (2 << 20)}
        tf.addfile(info, io.BytesIO(b""))
    box.refused(archive, "an extended header of", "bytes (limit: 1048576) at its start", "memory bomb")


def test_chain_of_tar_extended_headers_is_refused(box):
    """tarfile follows consecutive extended headers by recursion: 2000 of them took it past the
    recursion limit."""
    archive = box.downloads / "chain.tar"
    with tarfile.open(archive, "w", format=tarfile.USTAR_FORMAT) as tf:
        tf.addfile(tarfile.TarInfo("ok.txt"))
        for _ in range(2000):
            header = tarfile.TarInfo("PaxHeader")
            header.type = tarfile.XHDTYPE
            tf.addfile(header)
        tf.addfile(tarfile.TarInfo("b.txt"))
    box.refused(archive, "more than 8 extended headers in a row after member 'ok.txt'")


def test_member_limit_comes_from_the_environment(box, monkeypatch):
    """2 million members by default (COCO train2017: 118k files); a larger dataset raises it."""
    assert DEFAULT_MAX_MEMBERS == 2_000_000
    archive = make_tar(box.downloads / "many.tar", [(f"f{i}.txt", REG, b"") for i in range(5)])
    monkeypatch.setenv(MAX_MEMBERS_ENV, "4")
    box.refused(archive, "member 'f4.txt' is number 5: more than 4 members (limit: 4, $FROZENBENCH_ARCHIVE_MAX_MEMBERS")
    monkeypatch.setenv(MAX_MEMBERS_ENV, "lots")
    with pytest.raises(UserError, match="FROZENBENCH_ARCHIVE_MAX_MEMBERS='lots': expected a positive whole number"):
        extract(archive, box.dest)
    monkeypatch.setenv(MAX_MEMBERS_ENV, "5")
    extract(archive, box.dest)


def test_not_an_archive_is_refused(box):
    archive = box.downloads / "notes.zip"
    archive.write_bytes(b"not an archive at all\n" * 10)
    box.refused(archive, "not a zip or tar archive")


def test_corrupt_zip_member_is_refused(box):
    archive = make_zip(box.downloads / "crc.zip", [("a.txt", b"hello world" * 10)], compression=zipfile.ZIP_STORED)
    data = bytearray(archive.read_bytes())
    at = data.find(b"hello world")
    data[at] ^= 0xFF  # stored bytes no longer match the CRC
    archive.write_bytes(bytes(data))
    box.refused(archive, "member 'a.txt'", "cannot extract", "BadZipFile")


def test_existing_destination_is_not_touched(box):
    archive = make_tar(box.downloads / "ok.tar", [("a.txt", REG, b"a")])
    box.dest.mkdir()
    (box.dest / "keep.txt").write_text("keep")
    with pytest.raises(FileExistsError):
        extract(archive, box.dest)
    assert [p.name for p in box.dest.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("name,expected", sorted(ARCHIVE_CASES.values()))
def test_committed_hostile_archive_is_refused(box, name, expected):
    box.refused(BAD / name, expected)


# -- what must work -----------------------------------------------------------------------------

TREE = {
    "a/b/c.txt": b"deep\n",
    "a/d.bin": bytes(range(256)) * 9,
    "e.json": b'{"x": 1}\n',
    "a/b/empty": b"",
    "images/training/ADE_train_00000001.jpg": os.urandom(5000),
}


def check_tree(dest: Path) -> None:
    files = {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert files == TREE
    for path in dest.rglob("*"):
        mode = path.lstat().st_mode
        assert not path.is_symlink()
        assert not mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX)
        if path.is_file():
            assert not mode & 0o111, f"{path}: executable bit from the archive"


def test_zip_with_nested_folders_extracts_byte_identically(box):
    entries = [("a/", b"", stat.S_IFDIR | 0o777)] + [(name, data, stat.S_IFREG | 0o4777) for name, data in TREE.items()]
    entries.append(("images/", b"", stat.S_IFDIR | 0o755))  # a folder entry after its files
    archive = make_zip(box.downloads / "tree.zip", entries)
    extract(archive, box.dest)
    check_tree(box.dest)


def test_tar_gz_with_nested_folders_extracts_byte_identically(box):
    members = [("./", DIR, None, 0o777), ("./a", DIR, None, 0o777)]
    members += [(f"./{name}", REG, data, 0o6777) for name, data in TREE.items()]
    archive = make_tar(box.downloads / "tree.tar.gz", members, mode="w:gz")
    extract(archive, box.dest)
    check_tree(box.dest)


def ade_zip(path: Path, names: list[str]) -> Path:
    return make_zip(path, [(f"ADEChallengeData2016/{name}", name.encode()) for name in names])


def ade_files(*names: str) -> list[RemoteFile]:
    return [RemoteFile(url=f"https://example.org/{name}", filename=name, checksum={"md5": "0" * 32}) for name in names]


def test_archives_sharing_nested_folders_are_merged(box):
    ade_zip(box.downloads / "train.zip", ["images/training/a.jpg", "annotations/training/a.png"])
    ade_zip(box.downloads / "val.zip", ["images/validation/b.jpg", "annotations/validation/b.png", "objectInfo150.txt"])
    out = box.root / "out"
    out.mkdir()
    prepare_ade(ade_files("train.zip", "val.zip"), box.downloads, out, {}, lambda message: None)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == [
        "annotations/training/a.png",
        "annotations/validation/b.png",
        "images/training/a.jpg",
        "images/validation/b.jpg",
        "objectInfo150.txt",
    ]
    assert (out / "images" / "validation" / "b.jpg").read_bytes() == b"images/validation/b.jpg"
    assert not (out / "ADEChallengeData2016").exists()


def test_two_archives_providing_the_same_file_are_refused(box):
    first = ade_zip(box.downloads / "one.zip", ["images/training/a.jpg"])
    second = make_zip(box.downloads / "two.zip", [("ADEChallengeData2016/images/training/a.jpg", b"other")])
    out = box.root / "out"
    out.mkdir()
    with pytest.raises(UserError) as info:
        prepare_ade(ade_files("one.zip", "two.zip"), box.downloads, out, {}, lambda message: None)
    message = str(info.value)
    assert message.startswith(
        f"{second}: ADEChallengeData2016/images/training/a.jpg (a file) is also provided by an earlier archive, {first}"
    ), message
    assert "refusing to overwrite it" in message
    # the first archive's copy is untouched
    assert (out / "ADEChallengeData2016/images/training/a.jpg").read_bytes() == b"images/training/a.jpg"


def test_a_file_against_a_folder_is_refused(box):
    first = make_zip(box.downloads / "one.zip", [("annotations/x.json", b"{}")])
    second = make_zip(box.downloads / "two.zip", [("annotations", b"a file")])
    root = box.root / "root"
    root.mkdir()
    sources: dict[str, Path] = {}
    _extract_into(first, root, sources)
    with pytest.raises(
        UserError, match="annotations \\(a file\\) is also provided by an earlier archive, .*one.zip \\(a folder\\)"
    ):
        _extract_into(second, root, sources)
    assert (root / "annotations" / "x.json").read_bytes() == b"{}"


def test_conflict_without_a_record_still_names_the_path(box):
    archive = make_zip(box.downloads / "one.zip", [("a/b.txt", b"new")])
    root = box.root / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "b.txt").write_bytes(b"old")
    with pytest.raises(UserError, match="a/b.txt \\(a file\\) is also provided by an earlier archive"):
        _extract_into(archive, root)
    assert (root / "a" / "b.txt").read_bytes() == b"old"
    assert sorted(p.name for p in box.root.iterdir() if p.name.startswith(".")) == []  # no staging left


def test_ade_flattening_refuses_a_collision(box):
    make_zip(
        box.downloads / "ade.zip",
        [("ADEChallengeData2016/images/training/a.jpg", b"a"), ("images/training/b.jpg", b"b")],
    )
    out = box.root / "out"
    out.mkdir()
    with pytest.raises(UserError, match="ADEChallengeData2016/images would collide with images"):
        prepare_ade(ade_files("ade.zip"), box.downloads, out, {}, lambda message: None)
    assert (out / "ADEChallengeData2016" / "images" / "training" / "a.jpg").read_bytes() == b"a"


# -- what a failed extraction leaves, and the digest ---------------------------------------------


def test_content_digest_of_a_thousand_deep_tree_with_a_name_that_is_not_utf8(tmp_path, monkeypatch):
    """Path.rglob recursed per level (RecursionError) and the name's str would not encode."""
    monkeypatch.setenv("FROZENBENCH_DIGEST_CACHE", str(tmp_path / "cache"))
    first, second = tmp_path / "first", tmp_path / "second"
    try:
        deep_tree(first, 1000, odd=False)
        deep_tree(second, 1000, odd=False)
        assert content_digest(first) == content_digest(second)
        bottom = os.fsencode(second) + b"/a" * 1000
        os.rename(bottom + b"/caf\xe9.jpg", bottom + b"/caf\xe8.jpg")
        assert content_digest(first) != content_digest(second)
    finally:  # pytest's own removal of old temporary folders is shutil.rmtree: RecursionError
        remove_tree(first)
        remove_tree(second)


def test_second_prepare_after_a_crashed_one_sweeps_its_leftover(tmp_path):
    """A run killed mid-extraction (or one that crashed on a deep tree before this fix) left
    ``data/.ade20k.tmp-*``: the next ``frozenbench prepare`` removes it, links not followed, and
    builds the dataset."""
    from .test_atomic import outside_folder
    from .test_download import zip_tree
    from .test_synth import tiny_spec

    synth = tmp_path / "synth-ade"
    synthesize(tiny_spec("shapes-ade"), synth)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    archive = downloads / "ADEChallengeData2016.zip"
    archive.write_bytes(zip_tree(synth, arc_prefix="ADEChallengeData2016/"))
    entry = {"url": "http://127.0.0.1/x.zip", "filename": archive.name}
    entry["checksum"] = {"sha256": hashlib.sha256(archive.read_bytes()).hexdigest()}
    spec = {"source": "download", "format": "ade", "download": {"files": [entry]}}
    out = tmp_path / "data" / "ade20k"
    outside = outside_folder(tmp_path)
    try:
        leftover = deep_tree(out.parent / f".ade20k{TMP_MARKER}killed", 1200, outside)
        staging = deep_tree(out.parent / f".ade20k{TMP_MARKER}killed.extract-{archive.name}", 1200, outside)
        args = ["frozenbench", "prepare", "--spec", json.dumps(spec), "--downloads", str(downloads)]
        proc = run_cmd([*args, "--checksums", str(tmp_path / "k.sha256"), "--out", str(out)], timeout=300)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        assert not leftover.exists() and not staging.exists()
        assert sorted(p.name for p in out.parent.iterdir()) == ["ade20k"]
        assert (out / "frozenbench_dataset.json").exists()
        assert (outside / "keep.txt").read_text() == "keep"
    finally:  # whatever happened: pytest's own removal of old temporary folders would crash on it
        remove_tree(out.parent)
