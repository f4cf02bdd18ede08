"""The committed bad-input corpus (tests/data/bad/, made by tests/data/make_bad_corpus.py).

Each case runs the command a user would run and checks: a non-zero exit, one clear message
naming the file and the problem, no traceback, and no output left behind.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .conftest import REPO, run_cmd
from .test_archives import ARCHIVE_CASES
from .test_config import CONFIG_CASES

BAD = REPO / "tests" / "data" / "bad"
RESULTS: list[tuple[str, bool]] = []  # reported by conftest's terminal summary


def coco_dataset(tmp: Path, annotations: str) -> tuple[Path, Path]:
    root = tmp / "coco"
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    shutil.copy(BAD / "image.jpg", root / "val2017" / "000000000001.jpg")
    shutil.copy(BAD / annotations, root / "annotations" / "instances_val2017.json")
    return root, root / "annotations" / "instances_val2017.json"


def ade_dataset(tmp: Path, label: str) -> tuple[Path, Path]:
    root = tmp / "ade"
    for split in ("training", "validation"):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
    shutil.copy(BAD / "image.jpg", root / "images" / "validation" / "ADE_val_00000001.jpg")
    shutil.copy(BAD / label, root / "annotations" / "validation" / "ADE_val_00000001.png")
    return root, root / "annotations" / "validation" / "ADE_val_00000001.png"


def imagefolder(tmp: Path, bad: str) -> tuple[Path, Path]:
    root = tmp / "folder"
    for split in ("train", "val"):
        (root / split / "square").mkdir(parents=True)
        shutil.copy(BAD / "image.jpg", root / split / "square" / "ok.jpg")
    shutil.copy(BAD / bad, root / "train" / "square" / bad)
    return root, root / "train" / "square" / bad


def kinetics(tmp: Path, bad: str) -> tuple[Path, Path]:
    root = tmp / "k400"
    (root / "annotations").mkdir(parents=True)
    (root / "videos" / "val").mkdir(parents=True)
    (root / "videos" / "train").mkdir(parents=True)
    (root / "classes.txt").write_text("growing\n")
    header = "label,youtube_id,time_start,time_end,split\n"
    (root / "annotations" / "train.csv").write_text(header)
    (root / "annotations" / "val.csv").write_text(header + "growing,abcdefghijk,0,10,val\n")
    clip = root / "videos" / "val" / "abcdefghijk_000000_000010.mp4"
    shutil.copy(BAD / bad, clip)
    return root, clip


def validate_case(fmt, build, expected):
    def case(tmp: Path):
        root, named = build(tmp)
        return ["frozenbench", "validate", "--format", fmt, str(root)], named, expected, None

    return case


def convert_case(name, expected):
    def case(tmp: Path):
        out = tmp / "checkpoints" / "x.pth"
        return (
            [
                "frozenbench",
                "convert-checkpoint",
                "--src",
                str(BAD / name),
                "--layout",
                "official_swin",
                "--arch",
                "swin_tiny",
                "--out",
                str(out),
            ],
            BAD / name,
            expected,
            out,
        )

    return case


def config_case(name, expected):
    def case(tmp: Path):
        out = tmp / "data" / "shapes-coco"
        return (
            ["frozenbench", "synth", "--config", str(BAD / name), "--dataset", "shapes-coco", "--out", str(out)],
            BAD / name,
            expected,
            out,
        )

    return case


_SERVER = None


def server():
    """One faulty HTTP server on 127.0.0.1 for the download cases, started on first use."""
    global _SERVER
    if _SERVER is None:
        from .fault_server import FaultServer

        _SERVER = FaultServer().__enter__()
    return _SERVER


def download_case(
    path: str,
    body: bytes,
    faults: list[str],
    expected: str,
    checksum: str = "unpublished",
    url_list: bool = False,
    recorded: bytes | None = None,
):
    """`frozenbench download` of one file served with ``faults``; ``recorded``: the bytes whose digest
    another machine already recorded in the shared checksum file."""

    def case(tmp: Path):
        import hashlib
        import json

        url = server().add(f"/{tmp.name}{path}", body, faults)
        digest = {"unpublished": "none"} if checksum == "unpublished" else {"sha256": hashlib.sha256(body).hexdigest()}
        spec = {
            "source": "download",
            "format": "kinetics",
            "download": {
                "files": [
                    {
                        "url": url,
                        "filename": path.rsplit("/", 1)[-1],
                        "checksum": digest,
                        "extract": False,
                        "url_list": url_list,
                    }
                ]
            },
        }
        records = tmp / "checksums" / "k400.sha256"
        if recorded is not None:
            records.parent.mkdir(parents=True)
            records.write_text(f"{hashlib.sha256(recorded).hexdigest()}  {path.rsplit('/', 1)[-1]}\n")
        out = tmp / "downloads" / "k400"
        return (
            [
                "frozenbench",
                "download",
                "--spec",
                json.dumps(spec),
                "--out",
                str(out),
                "--checksums",
                str(records),
                "--backoff",
                "0.01",
                "--attempts",
                "2",
            ],
            url,
            expected,
            out / path.rsplit("/", 1)[-1],
        )

    return case


def url_list_case(lines: list[str], expected: str):
    def case(tmp: Path):
        listing = "\n".join(line.format(url=server().url) for line in lines).encode()
        args, _, _, listed = download_case(
            "/k400_train_path.txt", listing, [], expected, checksum="sha256", url_list=True
        )(tmp)
        # the error names the list's line; none of its archives is fetched
        return args, listed, expected, listed.parent / "k400_train_path"

    return case


def tampered_archive_case(tmp: Path):
    """An archive changed on disk after `frozenbench download` verified it: prepare refuses it."""
    import hashlib
    import io
    import json
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ADEChallengeData2016/objectInfo150.txt", "Idx\tRatio\tTrain\tVal\tName\n")
    body = buf.getvalue()
    downloads = tmp / "downloads" / "ade20k"
    downloads.mkdir(parents=True)
    archive = downloads / "ADEChallengeData2016.zip"
    archive.write_bytes(body[:-1] + bytes([body[-1] ^ 1]))
    spec = {
        "source": "download",
        "format": "ade",
        "download": {
            "files": [
                {
                    "url": "http://127.0.0.1/ADEChallengeData2016.zip",
                    "filename": archive.name,
                    "checksum": {"sha256": hashlib.sha256(body).hexdigest()},
                }
            ]
        },
    }
    out = tmp / "data" / "ade20k"
    return (
        [
            "frozenbench",
            "prepare",
            "--spec",
            json.dumps(spec),
            "--downloads",
            str(downloads),
            "--checksums",
            str(tmp / "k.sha256"),
            "--out",
            str(out),
        ],
        archive,
        "sha256 mismatch",
        out,
    )


def hostile_archive_case(filename: str, expected: str):
    """`frozenbench prepare` of a downloaded archive (its published digest matches) that tries to
    write outside the dataset, through a link, or far more than it holds."""

    def case(tmp: Path):
        import hashlib
        import json

        downloads = tmp / "downloads" / "ade20k"
        downloads.mkdir(parents=True)
        archive = downloads / filename
        shutil.copy(BAD / filename, archive)
        spec = {
            "source": "download",
            "format": "ade",
            "download": {
                "files": [
                    {
                        "url": f"http://127.0.0.1/{filename}",
                        "filename": filename,
                        "checksum": {"sha256": hashlib.sha256(archive.read_bytes()).hexdigest()},
                    }
                ]
            },
        }
        out = tmp / "data" / "ade20k"
        return (
            [
                "frozenbench",
                "prepare",
                "--spec",
                json.dumps(spec),
                "--downloads",
                str(downloads),
                "--checksums",
                str(tmp / "k.sha256"),
                "--out",
                str(out),
            ],
            archive,
            expected,
            out,
        )

    return case


def broken_config_case(name: str):
    """`frozenbench check-config` (what every subcommand and the DAG run first) on a config with an
    unsafe name or a broken cross-reference."""

    def case(tmp: Path):
        import yaml

        from .test_config import CONFIG_CASES, broken_config

        path = tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(broken_config(name)))
        return ["frozenbench", "check-config", str(path)], path, CONFIG_CASES[name][2], None

    return case


BODY = bytes(range(256)) * 64
CASES = {
    "truncated_jpeg": validate_case("imagefolder", lambda t: imagefolder(t, "truncated.jpg"), "unreadable image"),
    "zero_byte_mp4": validate_case("kinetics", lambda t: kinetics(t, "empty.mp4"), "empty file (0 bytes)"),
    "truncated_mp4": validate_case("kinetics", lambda t: kinetics(t, "truncated.mp4"), "undecodable video"),
    "coco_nan_bbox": validate_case("coco", lambda t: coco_dataset(t, "coco_nan_bbox.json"), "bbox must be 4 finite"),
    "coco_negative_bbox": validate_case(
        "coco", lambda t: coco_dataset(t, "coco_negative_bbox.json"), "negative width or height"
    ),
    "coco_unknown_category": validate_case(
        "coco", lambda t: coco_dataset(t, "coco_unknown_category.json"), "unknown category_id 42"
    ),
    "coco_short_polygon": validate_case(
        "coco", lambda t: coco_dataset(t, "coco_short_polygon.json"), "polygon with 2 points"
    ),
    "ade_out_of_range": validate_case("ade", lambda t: ade_dataset(t, "ade_out_of_range.png"), "out of range"),
    "ade_size_mismatch": validate_case(
        "ade", lambda t: ade_dataset(t, "ade_size_mismatch.png"), "label map is 24x20 but its image is 32x32"
    ),
    "ckpt_missing_keys": convert_case("ckpt_missing_keys.pth", "missing"),
    "ckpt_wrong_shape": convert_case("ckpt_wrong_shape.pth", "shape mismatch"),
    "ckpt_extra_keys": convert_case("ckpt_extra_keys.pth", "not on the ignore list: not_a_swin_key"),
    "ckpt_runs_code": convert_case("ckpt_runs_code.pth", "arbitrary unpickling"),
    "config_wrong_type": config_case("config_wrong_type.yaml", "datasets.shapes-coco.synth.num_train"),
    "config_unknown_key": config_case("config_unknown_key.yaml", "'colour' was unexpected"),
    # poisoned first downloads: never recorded, never used
    "download_cut_without_length": download_case(
        "/part_0.tar.gz", BODY, ["nolength-cut:1000"] * 2, "announced no length"
    ),
    "download_differs_from_shared_record": download_case(
        "/part_1.tar.gz", BODY, ["corrupt"] * 2, "sha256 mismatch", recorded=BODY
    ),
    "download_redirect_to_ftp": download_case(
        "/part_2.tar.gz", BODY, ["redirect:ftp://127.0.0.1/x"], "refusing a redirect from http to ftp://"
    ),
    "url_list_file_scheme": url_list_case(["file:///etc/passwd"], "only http(s) URLs are fetched"),
    "url_list_duplicate_name": url_list_case(["{url}/a/part.tar.gz", "{url}/b/part.tar.gz"], "is already listed"),
    "url_list_unsafe_name": url_list_case(["{url}/..%2F..%2Fpart.tar.gz"], "unsafe file name"),
    "archive_changed_after_download": tampered_archive_case,
    **{name: hostile_archive_case(filename, expected) for name, (filename, expected) in ARCHIVE_CASES.items()},
    **{f"config_{name}": broken_config_case(name) for name in CONFIG_CASES},
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_gets_a_clear_error_and_leaves_nothing(name, tmp_path):
    args, named_file, expected, output = CASES[name](tmp_path)
    passed = False
    try:
        proc = run_cmd(args, timeout=300)
        text = proc.stdout + proc.stderr
        assert proc.returncode != 0, text
        assert "Traceback" not in text, text
        error = text[text.find("error:") :] if "error:" in text else text
        lines = [line for line in text.splitlines() if expected in line]
        # Either one line names file and problem (validators), or one error message does
        # (the config validator lists the keys under the line that names the file).
        assert lines and (
            any(str(named_file) in line for line in lines) or (str(named_file) in error and expected in error)
        ), text
        assert "this checkpoint ran code while loading" not in text
        if output is not None:  # neither the artifact nor a temporary sibling of it
            assert not output.exists()
            assert not output.parent.exists() or list(output.parent.glob(f".{output.name}*")) == []
        passed = True
    finally:
        RESULTS.append((name, passed))
