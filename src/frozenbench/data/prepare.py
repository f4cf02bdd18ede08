"""Turn verified downloads into the layout the readers consume (the same as the mini datasets).

- ``coco``: the archives' ``train2017/``, ``val2017/``, ``test2017/`` and ``annotations/`` side by side;
- ``ade``: the content of ``ADEChallengeData2016/``;
- ``kinetics``: clips decoded and re-encoded at ``prepare.short_side``, csv annotations,
  ``classes.txt``, mmaction2 file lists, and ``prepare_report.json`` listing every clip
  that was missing or corrupt (they are left out of the lists, never silently).
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

from frozenbench.data.archive import extract, merge_tree
from frozenbench.data.download import ChecksumRecords, RemoteFile, list_folder, listed_files, verify_downloads
from frozenbench.data.manifest import MANIFEST, content_digest
from frozenbench.errors import UserError
from frozenbench.utils.atomic import TMP_MARKER, atomic_dir, remove_temporaries, write_json


def _extract_into(archive: Path, root: Path, sources: dict[str, Path] | None = None) -> None:
    """Extract ``archive`` and merge its tree into ``root``: folders present in both are merged, a
    file (or a file against a folder) present in both is refused, never overwritten. ``sources``
    (shared by the archives merged into one root) lets a conflict name the earlier archive."""
    staging = root.parent / f".{root.name}.extract-{archive.name}"
    shutil.rmtree(staging, ignore_errors=True)
    extract(archive, staging)
    try:
        merge_tree(staging, root, archive, sources)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _extract_archives(files: list[RemoteFile], downloads: Path, out: Path, log: Callable[[str], None]) -> None:
    sources: dict[str, Path] = {}
    for remote in files:
        if remote.extract:
            log(f"extracting {remote.filename}")
            _extract_into(downloads / remote.filename, out, sources)


def prepare_coco(
    files: list[RemoteFile], downloads: Path, out: Path, options: dict[str, Any], log: Callable[[str], None]
) -> dict[str, Any]:
    _extract_archives(files, downloads, out, log)
    if not (out / "annotations").is_dir():
        raise UserError(f"{downloads}: the archives held no annotations/ folder")
    return {"splits": sorted(p.name for p in out.iterdir() if p.is_dir())}


def prepare_ade(
    files: list[RemoteFile], downloads: Path, out: Path, options: dict[str, Any], log: Callable[[str], None]
) -> dict[str, Any]:
    _extract_archives(files, downloads, out, log)
    inner = out / "ADEChallengeData2016"
    if inner.is_symlink() or not inner.is_dir():
        raise UserError(f"{downloads}: expected ADEChallengeData2016/ inside the archive")
    entries = sorted(inner.iterdir())
    for entry in entries:  # all checked before any is moved
        target = out / entry.name
        if entry.is_symlink() or target.is_symlink():
            raise UserError(
                f"{downloads}: ADEChallengeData2016/{entry.name} or {entry.name} is a link; "
                f"refusing to flatten through it"
            )
        if target.exists():
            raise UserError(
                f"{downloads}: ADEChallengeData2016/{entry.name} would collide with {entry.name}, "
                f"which the archives also hold next to ADEChallengeData2016/"
            )
    for entry in entries:
        entry.rename(out / entry.name)  # a rename: never copies, follows or creates a link
    inner.rmdir()
    return {
        "images": {split: len(list((out / "images" / split).glob("*.jpg"))) for split in ("training", "validation")}
    }


# A keyframe every second: mmaction2's decoders seek to each sampled clip, and a seek costs a
# decode from the previous keyframe (x264's default GOP of 250 frames is 8 s at 30 fps).
KEYFRAME_SECONDS = 1


def resize_clip(src: Path, dst: Path, short_side: int) -> int:
    """Decode ``src`` and re-encode it as H.264 (yuv420p, a keyframe every second) with its short side at
    ``short_side``, one frame at a time (memory independent of the clip's length); written atomically.
    Returns the frame count."""
    import av

    from frozenbench.utils.atomic import atomic_file

    with av.open(str(src)) as source:
        stream = source.streams.video[0]
        fps = int(round(float(stream.average_rate or 30)))
        h, w = stream.codec_context.height, stream.codec_context.width
        if not h or not w:
            raise ValueError("no video dimensions")
        scale = short_side / min(h, w)
        # yuv420p needs even sizes
        width, height = max(2, int(round(w * scale / 2)) * 2), max(2, int(round(h * scale / 2)) * 2)
        frames = 0
        with atomic_file(dst) as tmp:
            with av.open(str(tmp), mode="w", format="mp4") as container:
                out = container.add_stream("libx264", rate=fps)
                out.width, out.height, out.pix_fmt = width, height, "yuv420p"
                # one thread per clip: the pool runs one clip per core, which scales better than x264's threads
                out.options = {
                    "crf": "18",
                    "preset": "veryfast",
                    "g": str(max(1, fps * KEYFRAME_SECONDS)),
                    "x264-params": "threads=1:lookahead-threads=1",
                }
                for frame in source.decode(video=0):
                    resized = frame.reformat(width=width, height=height, format="yuv420p", interpolation="BILINEAR")
                    # frame index in the encoder's 1/fps time base: monotonic whatever the source's timestamps
                    resized.pts, resized.time_base = frames, Fraction(1, fps)
                    for packet in out.encode(resized):
                        container.mux(packet)
                    frames += 1
                for packet in out.encode():
                    container.mux(packet)
            if not frames:
                raise ValueError("no decodable frames")
    return frames


def _prepare_one(job: tuple[str, str, int]) -> tuple[str, str | None]:
    """Pool worker: (destination, None) once the clip is written, or (destination, error)."""
    import av

    src, dst, short_side = job
    try:
        resize_clip(Path(src), Path(dst), short_side)
        return dst, None
    except (av.error.FFmpegError, ValueError, IndexError, OSError) as err:  # undecodable: list it, keep going
        return dst, f"{type(err).__name__}: {err}"


# A crashed decoder (a segfault in libav on a broken clip, the kernel's OOM killer) takes its
# worker with it and breaks the whole pool; the clips in flight at that moment are retried one
# process each, so only the culprit is listed as corrupt.
CRASH_ERROR = "the decoding process died (crash or out of memory)"


def _spawn_pool(workers: int):
    """A process pool whose workers start fresh (``spawn``): a forked copy of a parent that has
    loaded torch, OpenMP and libav threads can die or hang in the child."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=max(1, workers), mp_context=multiprocessing.get_context("spawn"))


def encode_clips(
    jobs: list[tuple[str, str, int]],
    workers: int,
    run_one: Callable[[tuple[str, str, int]], tuple[str, str | None]] | None = None,
) -> dict[str, str]:
    """Re-encode every ``(source, destination, short side)`` job on ``workers`` processes and return
    ``{clip name: error}`` for those that failed. At most two jobs per worker are in flight, so a
    worker that dies costs a solo retry of that many clips, not of the rest of the tarball."""
    from collections import deque
    from concurrent.futures import FIRST_COMPLETED, wait
    from concurrent.futures.process import BrokenProcessPool

    run_one = run_one or _prepare_one
    failed: dict[str, str] = {}
    queue = deque(jobs)
    while queue:
        suspects: list[tuple[str, str, int]] = []
        with _spawn_pool(workers) as pool:
            running: dict[Any, tuple[str, str, int]] = {}
            try:
                while queue or running:
                    while queue and len(running) < 2 * max(1, workers):
                        job = queue.popleft()
                        running[pool.submit(run_one, job)] = job
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        dst, error = future.result()
                        del running[future]
                        if error is not None:
                            failed[Path(dst).name] = error
            except BrokenProcessPool:
                suspects = list(running.values())
        for job in suspects:  # alone in a fresh process each: a crash now names its clip
            # the broken pool's workers were killed mid-write: their temporaries must not reach the dataset
            remove_temporaries(job[1])
            with _spawn_pool(1) as solo:
                try:
                    dst, error = solo.submit(run_one, job).result()
                except BrokenProcessPool:
                    dst, error = job[1], CRASH_ERROR
                    remove_temporaries(job[1])
            if error is not None:
                failed[Path(dst).name] = error
    return failed


def _read_kinetics_csvs(files: list[RemoteFile], downloads: Path) -> dict[str, list[dict[str, Any]]]:
    """Rows of every labelled split csv (test.csv without labels is skipped)."""
    from frozenbench.data.validate import KINETICS_COLUMNS

    rows_by_split = {}
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
        rows_by_split[split] = rows
    return rows_by_split


def _archives(files: list[RemoteFile], downloads: Path) -> list[Path]:
    """The tarballs the url lists name (verified by ``prepare``), in a stable order; never another
    file that happens to lie in the folder."""
    archives = []
    for remote in files:
        if remote.url_list:
            folder = downloads / list_folder(remote)
            archives += sorted(folder / listed.filename for listed in listed_files(remote, downloads / remote.filename))
    return archives


def prepare_kinetics_clips(
    files: list[RemoteFile], downloads: Path, work: Path, short_side: int, workers: int, log: Callable[[str], None]
) -> dict[str, Any]:
    """Re-encode every listed clip into ``work/videos/<split>/``, resumably.

    One tarball at a time: extracted into ``work/raw/``, its wanted clips re-encoded by a pool of
    ``workers`` processes (each clip written atomically), its raw files removed, then a marker
    ``work/done/<list>--<tarball>.json`` records what it held and which clips failed to decode. A rerun
    after a kill skips marked tarballs and finished clips, so peak disk is the output plus one
    extracted tarball. Returns ``{"by_split": rows, "corrupt": {clip: error}, "found": {clip}}``.
    """
    from frozenbench.data.synth.kinetics import clip_filename

    # finished clips are only reused by a run with the same encoding: another short side (or a
    # changed encoder) starts the work folder afresh instead of mixing two versions
    settings = {"short_side": short_side, "keyframe_seconds": KEYFRAME_SECONDS, "encoder": "libx264 crf 18 veryfast"}
    settings_path = work / "settings.json"
    if work.exists() and (not settings_path.exists() or json.loads(settings_path.read_text()) != settings):
        log(f"{work}: left by a run with other settings; starting afresh")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    write_json(settings_path, settings)
    rows_by_split = _read_kinetics_csvs(files, downloads)
    wanted = {}
    for split, rows in rows_by_split.items():
        (work / "videos" / split).mkdir(parents=True, exist_ok=True)
        for row in rows:
            wanted[clip_filename(row["youtube_id"], int(row["time_start"]), int(row["time_end"]))] = split
    done_dir, raw = work / "done", work / "raw"
    done_dir.mkdir(parents=True, exist_ok=True)
    for leftover in (work / "videos").glob(f"*/.*{TMP_MARKER}*"):  # clips a kill cut short
        leftover.unlink()
    found: set[str] = set()
    corrupt: dict[str, str] = {}
    started, encoded = time.time(), 0
    for archive in _archives(files, downloads):
        marker = done_dir / f"{archive.parent.name}--{archive.name}.json"  # two lists may share a tarball name
        if marker.exists():
            record = json.loads(marker.read_text())
            found.update(record["clips"])
            corrupt.update(record["corrupt"])
            continue
        shutil.rmtree(raw, ignore_errors=True)  # a killed run's half-extracted tarball
        raw.mkdir(parents=True)
        log(f"extracting {archive.name}")
        _extract_into(archive, raw)
        held = {p.name: p for p in raw.rglob("*.mp4") if p.name in wanted}
        jobs = [
            (str(src), str(work / "videos" / wanted[name] / name), short_side)
            for name, src in sorted(held.items())
            if not (work / "videos" / wanted[name] / name).exists()
        ]
        failed = encode_clips(jobs, workers)
        encoded += len(jobs)
        write_json(marker, {"clips": sorted(held), "corrupt": failed})
        found.update(held)
        corrupt.update(failed)
        shutil.rmtree(raw, ignore_errors=True)
        log(
            f"{archive.name}: {len(held)} clips ({len(jobs)} re-encoded, {len(failed)} undecodable); "
            f"{encoded / max(time.time() - started, 1e-9):.2f} clips/s"
        )
    return {"by_split": rows_by_split, "corrupt": corrupt, "found": found}


def prepare_kinetics(
    files: list[RemoteFile],
    downloads: Path,
    out: Path,
    options: dict[str, Any],
    log: Callable[[str], None],
    work: Path | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    from frozenbench.data.synth.kinetics import clip_filename, write_csv, write_lists

    short_side = int(options.get("short_side", 320))
    work = work or out.parent / f".{out.name}.work"
    clips = prepare_kinetics_clips(files, downloads, work, short_side, workers, log)
    report: dict[str, list[dict[str, str]]] = {"missing": [], "corrupt": []}
    rows_by_split: dict[str, list[dict[str, Any]]] = {}
    labels: set[str] = set()
    # the finished clips move into the new dataset folder; a failed run keeps them in the work folder
    (out / "videos").mkdir(parents=True, exist_ok=True)
    for split, rows in clips["by_split"].items():
        kept = []
        for row in rows:
            name = clip_filename(row["youtube_id"], int(row["time_start"]), int(row["time_end"]))
            entry = {"split": split, "clip": name, "label": row["label"]}
            if name not in clips["found"]:
                report["missing"].append(entry)
            elif name in clips["corrupt"]:
                report["corrupt"].append({**entry, "error": clips["corrupt"][name]})
            else:
                kept.append(
                    {
                        "label": row["label"],
                        "youtube_id": row["youtube_id"],
                        "time_start": int(row["time_start"]),
                        "time_end": int(row["time_end"]),
                        "split": split,
                    }
                )
                labels.add(row["label"])
        write_csv(out / "annotations" / f"{split}.csv", kept)
        rows_by_split[split] = kept
    for split in clips["by_split"]:
        (work / "videos" / split).rename(out / "videos" / split)
    write_lists(out, rows_by_split, sorted(labels))
    write_json(out / "prepare_report.json", report)
    for kind, entries in report.items():
        if entries:
            log(f"WARNING: {len(entries)} {kind} clip(s), listed in {out.name}/prepare_report.json")
    shutil.rmtree(work, ignore_errors=True)
    return {
        "clips": {s: len(r) for s, r in rows_by_split.items()},
        "missing": len(report["missing"]),
        "corrupt": len(report["corrupt"]),
    }


PREPARERS = {"coco": prepare_coco, "ade": prepare_ade, "kinetics": prepare_kinetics}


def prepare(
    spec: dict[str, Any],
    downloads: str | Path,
    out: str | Path,
    log: Callable[[str], None] = print,
    workers: int = 1,
    records: ChecksumRecords | None = None,
    verified: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the dataset folder ``out`` from the files in ``downloads`` (atomically), each checked
    first against its published digest or the one ``records`` holds (``verified``: the download's
    marker, which spares hashing a file unchanged since it was verified).
    ``workers``: processes for the per-clip work of Kinetics (the rule's threads)."""
    if spec["format"] not in PREPARERS:
        raise UserError(f"no preparation for format {spec['format']!r}")
    downloads, out = Path(downloads), Path(out)
    files = [RemoteFile.from_config(entry) for entry in spec["download"]["files"]]
    verify_downloads(files, downloads, records, verified)
    remove_temporaries(out)  # left by a killed earlier run of this job
    with atomic_dir(out) as tmp:
        if spec["format"] == "kinetics":
            # resumable work lives beside the output, outside the temporary folder a failure deletes
            summary = prepare_kinetics(
                files,
                downloads,
                tmp,
                spec.get("prepare", {}),
                log,
                work=out.parent / f".{out.name}.work",
                workers=workers,
            )
        else:
            summary = PREPARERS[spec["format"]](files, downloads, tmp, spec.get("prepare", {}), log)
        if (tmp / MANIFEST).exists():
            raise UserError(f"{downloads}: the archives hold a {MANIFEST} of their own; refusing to replace it")
        write_json(
            tmp / MANIFEST,
            {
                "format": spec["format"],
                "source": "download",
                "spec": spec,
                "summary": summary,
                "content_digest": content_digest(tmp),
            },
        )
    return summary
