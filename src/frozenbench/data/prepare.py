"""Turn verified downloads into the layout the readers consume (the same as the mini datasets).

- ``coco``: the archives' ``train2017/``, ``val2017/``, ``test2017/`` and ``annotations/`` side by side;
- ``ade``: the content of ``ADEChallengeData2016/``;
- ``kinetics``: clips decoded and re-encoded at ``prepare.short_side``, csv annotations,
  ``classes.txt``, mmaction2 file lists, and ``prepare_report.json`` listing every clip
  that was missing or corrupt (they are left out of the lists, never silently).
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from frozenbench.data.download import RemoteFile, extract
from frozenbench.errors import UserError
from frozenbench.utils.atomic import atomic_dir, write_bytes, write_json


def _extract_into(archive: Path, root: Path) -> None:
    """Extract ``archive`` and merge its top-level entries into ``root``."""
    staging = root.parent / f".{root.name}.extract-{archive.name}"
    shutil.rmtree(staging, ignore_errors=True)
    extract(archive, staging)
    try:
        for entry in staging.iterdir():
            target = root / entry.name
            if target.is_dir() and entry.is_dir():
                for child in entry.iterdir():
                    child.rename(target / child.name)
            else:
                entry.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _extract_archives(files: list[RemoteFile], downloads: Path, out: Path, log: Callable[[str], None]) -> None:
    for remote in files:
        if remote.extract:
            log(f"extracting {remote.filename}")
            _extract_into(downloads / remote.filename, out)


def prepare_coco(files: list[RemoteFile], downloads: Path, out: Path, options: dict[str, Any],
                 log: Callable[[str], None]) -> dict[str, Any]:
    _extract_archives(files, downloads, out, log)
    if not (out / "annotations").is_dir():
        raise UserError(f"{downloads}: the archives held no annotations/ folder")
    return {"splits": sorted(p.name for p in out.iterdir() if p.is_dir())}


def prepare_ade(files: list[RemoteFile], downloads: Path, out: Path, options: dict[str, Any],
                log: Callable[[str], None]) -> dict[str, Any]:
    _extract_archives(files, downloads, out, log)
    inner = out / "ADEChallengeData2016"
    if not inner.is_dir():
        raise UserError(f"{downloads}: expected ADEChallengeData2016/ inside the archive")
    for entry in inner.iterdir():
        entry.rename(out / entry.name)
    inner.rmdir()
    return {"images": {split: len(list((out / "images" / split).glob("*.jpg"))) for split in ("training", "validation")}}


def resize_clip(src: Path, dst: Path, short_side: int) -> int:
    """Decode ``src`` and re-encode it as H.264 with its short side at ``short_side``; returns the frame count."""
    import av
    from PIL import Image

    from frozenbench.data.synth.kinetics import encode_mp4

    with av.open(str(src)) as container:
        stream = container.streams.video[0]
        fps = int(round(float(stream.average_rate or 30)))
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise ValueError("no decodable frames")
    h, w = frames[0].shape[:2]
    scale = short_side / min(h, w)
    size = (max(2, int(round(w * scale / 2)) * 2), max(2, int(round(h * scale / 2)) * 2))  # yuv420p needs even sizes
    resized = np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in frames])
    write_bytes(dst, encode_mp4(resized, fps))
    return len(frames)


def prepare_kinetics(files: list[RemoteFile], downloads: Path, out: Path, options: dict[str, Any],
                     log: Callable[[str], None]) -> dict[str, Any]:
    from frozenbench.data.synth.kinetics import clip_filename, write_csv, write_lists
    from frozenbench.data.validate import KINETICS_COLUMNS

    short_side = int(options.get("short_side", 320))
    raw = out.parent / f".{out.name}.raw"
    shutil.rmtree(raw, ignore_errors=True)
    raw.mkdir()
    try:
        for remote in files:
            if remote.url_list:
                listed_dir = downloads / remote.filename.removesuffix(".txt")
                for archive in sorted(listed_dir.glob("*")):
                    if archive.name.startswith(".") or archive.suffix == ".json":
                        continue
                    log(f"extracting {archive.name}")
                    _extract_into(archive, raw)
        available = {p.name: p for p in raw.rglob("*.mp4")}
        report: dict[str, list[dict[str, str]]] = {"missing": [], "corrupt": []}
        rows_by_split: dict[str, list[dict[str, Any]]] = {}
        labels: set[str] = set()
        for remote in files:
            if not remote.filename.endswith(".csv"):
                continue
            split = remote.filename.removesuffix(".csv")
            with open(downloads / remote.filename, newline="") as f:
                reader = csv.DictReader(f)
                if reader.fieldnames is None or not set(KINETICS_COLUMNS[:4]) <= set(reader.fieldnames):
                    raise UserError(f"{downloads / remote.filename}: header must contain {','.join(KINETICS_COLUMNS)}")
                rows = list(reader)
            if split == "test" and "label" not in (rows[0] if rows else {}):
                continue
            (out / "videos" / split).mkdir(parents=True, exist_ok=True)
            kept = []
            for row in rows:
                name = clip_filename(row["youtube_id"], int(row["time_start"]), int(row["time_end"]))
                entry = {"split": split, "clip": name, "label": row["label"]}
                if name not in available:
                    report["missing"].append(entry)
                    continue
                import av

                try:
                    resize_clip(available[name], out / "videos" / split / name, short_side)
                except (av.error.FFmpegError, ValueError, IndexError) as err:  # undecodable: list it, keep going
                    report["corrupt"].append({**entry, "error": f"{type(err).__name__}: {err}"})
                    continue
                kept.append({"label": row["label"], "youtube_id": row["youtube_id"],
                             "time_start": int(row["time_start"]), "time_end": int(row["time_end"]),
                             "split": split})
                labels.add(row["label"])
            write_csv(out / "annotations" / f"{split}.csv", kept)
            rows_by_split[split] = kept
        write_lists(out, rows_by_split, sorted(labels))
        write_json(out / "prepare_report.json", report)
        for kind, entries in report.items():
            if entries:
                log(f"WARNING: {len(entries)} {kind} clip(s), listed in {out.name}/prepare_report.json")
        return {"clips": {s: len(r) for s, r in rows_by_split.items()},
                "missing": len(report["missing"]), "corrupt": len(report["corrupt"])}
    finally:
        shutil.rmtree(raw, ignore_errors=True)


PREPARERS = {"coco": prepare_coco, "ade": prepare_ade, "kinetics": prepare_kinetics}


def prepare(spec: dict[str, Any], downloads: str | Path, out: str | Path,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build the dataset folder ``out`` from the verified files in ``downloads`` (atomically)."""
    if spec["format"] not in PREPARERS:
        raise UserError(f"no preparation for format {spec['format']!r}")
    downloads, out = Path(downloads), Path(out)
    files = [RemoteFile.from_config(entry) for entry in spec["download"]["files"]]
    for remote in files:
        if not (downloads / remote.filename).exists():
            raise UserError(f"{downloads / remote.filename}: missing; run `frozenbench download` first")
    with atomic_dir(out) as tmp:
        summary = PREPARERS[spec["format"]](files, downloads, tmp, spec.get("prepare", {}), log)
        write_json(tmp / "frozenbench_dataset.json", {"format": spec["format"], "source": "download",
                                                       "spec": spec, "summary": summary})
    return summary
