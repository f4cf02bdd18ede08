"""Turn verified downloads into the layout the readers consume (the same as the mini datasets).

- ``coco``: the archives' ``train2017/``, ``val2017/``, ``test2017/`` and ``annotations/`` side by side;
- ``ade``: the content of ``ADEChallengeData2016/``;
- ``kinetics``: clips decoded and re-encoded at ``prepare.short_side``, csv annotations,
  ``classes.txt``, mmaction2 file lists, and ``prepare_report.json`` listing every clip
  that was missing or corrupt (they are left out of the lists, never silently) or whose header
  announces another frame count than decodes (kept, with the frames that decode).

Every dataset is validated as ``frozenbench validate`` would before its manifest, the mark of a
finished dataset, is written; one that fails is not written at all.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

from frozenbench.data.archive import extract, merge_tree
from frozenbench.data.download import ChecksumRecords, RemoteFile, list_folder, listed_files, verify_downloads
from frozenbench.data.formats import MODULES, ade, coco, kinetics
from frozenbench.data.manifest import MANIFEST, content_digest
from frozenbench.data.validate_video import spawn_pool
from frozenbench.errors import UserError
from frozenbench.utils.atomic import TMP_MARKER, atomic_dir, remove_temporaries, remove_tree, write_json


def _extract_into(archive: Path, root: Path, sources: dict[str, Path] | None = None) -> None:
    """Extract ``archive`` and merge its tree into ``root``: folders present in both are merged, a
    file (or a file against a folder) present in both is refused, never overwritten. ``sources``
    (shared by the archives merged into one root) lets a conflict name the earlier archive."""
    staging = root.parent / f".{root.name}.extract-{archive.name}"
    remove_tree(staging, ignore_errors=True)
    extract(archive, staging)
    try:
        merge_tree(staging, root, archive, sources)
    finally:
        remove_tree(staging, ignore_errors=True)


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
    if not (out / coco.ANNOTATIONS_FOLDER).is_dir():
        raise UserError(f"{downloads}: the archives held no {coco.ANNOTATIONS_FOLDER}/ folder")
    return {"splits": sorted(p.name for p in out.iterdir() if p.is_dir())}


def prepare_ade(
    files: list[RemoteFile], downloads: Path, out: Path, options: dict[str, Any], log: Callable[[str], None]
) -> dict[str, Any]:
    _extract_archives(files, downloads, out, log)
    inner = out / ade.ARCHIVE_FOLDER
    if inner.is_symlink() or not inner.is_dir():
        raise UserError(f"{downloads}: expected {ade.ARCHIVE_FOLDER}/ inside the archive")
    entries = sorted(inner.iterdir())
    for entry in entries:  # all checked before any is moved
        target = out / entry.name
        if entry.is_symlink() or target.is_symlink():
            raise UserError(
                f"{downloads}: {ade.ARCHIVE_FOLDER}/{entry.name} or {entry.name} is a link; "
                f"refusing to flatten through it"
            )
        if target.exists():
            raise UserError(
                f"{downloads}: {ade.ARCHIVE_FOLDER}/{entry.name} would collide with {entry.name}, "
                f"which the archives also hold next to {ade.ARCHIVE_FOLDER}/"
            )
    for entry in entries:
        entry.rename(out / entry.name)  # a rename: never copies, follows or creates a link
    inner.rmdir()
    # counted per release folder name (training, validation): the manifest's summary keeps them
    return {
        "images": {
            ade.SPLIT_FOLDERS[split]: len(list((out / ade.image_dir(split)).glob(f"*{ade.IMAGE_SUFFIX}")))
            for split in ade.SPLIT_FOLDERS
        }
    }


# A keyframe every second: mmaction2's decoders seek to each sampled clip, and a seek costs a
# decode from the previous keyframe (x264's default GOP of 250 frames is 8 s at 30 fps).
KEYFRAME_SECONDS = 1


@dataclass(frozen=True)
class ClipResult:
    """What re-encoding one clip found: the frames that decoded and the count its container's
    header announced (0 when it announces none)."""

    frames: int
    header_frames: int

    def frame_count_note(self) -> str | None:
        """The disagreement between header and decodable frames, None when they agree."""
        if self.header_frames and self.header_frames != self.frames:
            return f"the container announces {self.header_frames} frames but {self.frames} decode"
        return None


def resize_clip(src: Path, dst: Path, short_side: int) -> ClipResult:
    """Decode ``src`` and re-encode it as H.264 (yuv420p, a keyframe every second) with its short side at
    ``short_side``, one frame at a time (memory independent of the clip's length); written atomically.

    Every frame keeps its source timestamp (shifted so the clip starts at 0): a variable-rate clip,
    or one with dropped frames, plays as long as its source. Numbering frames at a rounded average
    rate instead would squeeze every gap out and play such a clip faster."""
    import av

    from frozenbench.utils.atomic import atomic_file

    with av.open(str(src)) as source:
        stream = source.streams.video[0]
        header_frames = int(stream.frames or 0)
        rate = stream.average_rate or stream.guessed_rate or 30
        fps = max(1, int(round(float(rate))))
        # the source's own time base, so no timestamp is rounded; a stream without one gets 1/90000
        time_base = stream.time_base or Fraction(1, 90000)
        step = max(1, int(round(1 / (float(rate) * time_base))))  # one nominal frame, in time_base
        h, w = stream.codec_context.height, stream.codec_context.width
        if not h or not w:
            raise ValueError("no video dimensions")
        width, height = _scaled_even_size(w, h, short_side)
        frames, first, last = 0, None, None
        with atomic_file(dst) as tmp:
            with av.open(str(tmp), mode="w", format="mp4") as container:
                out = _add_h264_stream(container, fps, width, height, time_base)
                for frame in source.decode(video=0):
                    pts, first = _output_pts(frame.pts, first, last, step)
                    resized = frame.reformat(width=width, height=height, format="yuv420p", interpolation="BILINEAR")
                    resized.pts, resized.time_base = pts, time_base
                    for packet in out.encode(resized):
                        container.mux(packet)
                    frames, last = frames + 1, pts
                for packet in out.encode():
                    container.mux(packet)
            if not frames:
                raise ValueError("no decodable frames")
    return ClipResult(frames, header_frames)


def _scaled_even_size(w: int, h: int, short_side: int) -> tuple[int, int]:
    """The re-encoded clip's (width, height): the short side at ``short_side``, both even."""
    scale = short_side / min(h, w)
    # yuv420p needs even sizes
    return max(2, int(round(w * scale / 2)) * 2), max(2, int(round(h * scale / 2)) * 2)


def _add_h264_stream(container: Any, fps: int, width: int, height: int, time_base: Fraction) -> Any:
    """The output's H.264 stream: yuv420p, crf 18, a keyframe every ``KEYFRAME_SECONDS``, one thread."""
    out = container.add_stream("libx264", rate=fps)
    out.width, out.height, out.pix_fmt = width, height, "yuv420p"
    out.codec_context.time_base = out.time_base = time_base
    # one thread per clip: the pool runs one clip per core, which scales better than x264's threads
    out.options = {
        "crf": "18",
        "preset": "veryfast",
        "g": str(max(1, fps * KEYFRAME_SECONDS)),
        "x264-params": "threads=1:lookahead-threads=1",
    }
    return out


def _output_pts(source_pts: int | None, first: int | None, last: int | None, step: int) -> tuple[int, int | None]:
    """A frame's output timestamp (its source's, shifted to start at 0, always increasing) and the shift."""
    nominal = last + step if last is not None else 0  # a frame without a timestamp: one step on
    if source_pts is None:
        pts = nominal
    else:
        if first is None:  # the source time that becomes the output's (next) timestamp
            first = source_pts - nominal
        pts = source_pts - first
    if last is not None and pts <= last:
        # a repeated or backwards timestamp (a broken muxer): the encoder needs them
        # increasing; the smallest step keeps the timing of the frames after it
        pts = last + 1
    return pts, first


def _prepare_one(job: tuple[str, str, int]) -> tuple[str, str | None, str | None]:
    """Pool worker: (destination, None, note) once the clip is written, or (destination, error, None);
    the note tells a header frame count that disagrees with the decodable frames."""
    import av

    src, dst, short_side = job
    try:
        return dst, None, resize_clip(Path(src), Path(dst), short_side).frame_count_note()
    except (av.error.FFmpegError, ValueError, IndexError, OSError) as err:  # undecodable: list it, keep going
        return dst, f"{type(err).__name__}: {err}", None


# A crashed decoder (a segfault in libav on a broken clip, the kernel's OOM killer) takes its
# worker with it and breaks the whole pool; the clips in flight at that moment are retried one
# process each, so only the culprit is listed as corrupt.
CRASH_ERROR = "the decoding process died (crash or out of memory)"


def encode_clips(
    jobs: list[tuple[str, str, int]],
    workers: int,
    run_one: Callable[[tuple[str, str, int]], tuple] | None = None,
    notes: dict[str, str] | None = None,
) -> dict[str, str]:
    """Re-encode every ``(source, destination, short side)`` job on ``workers`` processes and return
    ``{clip name: error}`` for those that failed; ``notes`` (when given) gains ``{clip name: note}``
    for the clips whose worker returned a note (``run_one`` returns (destination, error[, note])).
    At most two jobs per worker are in flight, so a worker that dies costs a solo retry of that
    many clips, not of the rest of the tarball."""
    from collections import deque
    from concurrent.futures import FIRST_COMPLETED, wait
    from concurrent.futures.process import BrokenProcessPool

    run_one = run_one or _prepare_one
    failed: dict[str, str] = {}

    def record(result: tuple) -> None:
        dst, error, note = (*result, None)[:3]
        if error is not None:
            failed[Path(dst).name] = error
        if note is not None and notes is not None:
            notes[Path(dst).name] = note

    queue = deque(jobs)
    while queue:
        suspects: list[tuple[str, str, int]] = []
        with spawn_pool(workers) as pool:
            running: dict[Any, tuple[str, str, int]] = {}
            try:
                while queue or running:
                    while queue and len(running) < 2 * max(1, workers):
                        job = queue.popleft()
                        running[pool.submit(run_one, job)] = job
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        record(future.result())
                        del running[future]
            except BrokenProcessPool:
                suspects = list(running.values())
        _retry_alone(suspects, run_one, record)
    return failed


def _retry_alone(
    suspects: list[tuple[str, str, int]], run_one: Callable[[tuple[str, str, int]], tuple], record: Callable
) -> None:
    """Rerun the jobs a broken pool had in flight, each alone in a fresh process: a crash now names its clip."""
    from concurrent.futures.process import BrokenProcessPool

    for job in suspects:
        # the broken pool's workers were killed mid-write: their temporaries must not reach the dataset
        remove_temporaries(job[1])
        with spawn_pool(1) as solo:
            try:
                record(solo.submit(run_one, job).result())
            except BrokenProcessPool:
                record((job[1], CRASH_ERROR))
                remove_temporaries(job[1])


def _kinetics_csv_rows(path: Path, split: str) -> list[tuple[str, dict[str, Any]]] | None:
    """``(file:line, row)`` of one split csv; None for a test csv without labels (skipped)."""
    try:
        # utf-8-sig: a byte-order mark (a spreadsheet's csv export) is not part of the first column's name
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            if "label" not in header and split == "test":
                return None
            if not set(kinetics.CSV_COLUMNS[:4]) <= set(header):
                raise UserError(
                    f"{path}: header must contain {','.join(kinetics.CSV_COLUMNS)}, got {','.join(header) or 'nothing'}"
                )
            return [(f"{path}:{reader.line_num}", row) for row in reader]
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
    except csv.Error as err:
        raise UserError(f"{path}:{reader.line_num}: unreadable csv: {err}") from None


def _kinetics_clip(where: str, row: dict[str, Any]) -> dict[str, Any]:
    """The row as a dataset row (integer times), or a UserError naming ``where`` (file:line)."""
    if any(row.get(key) is None for key in ("label", "youtube_id", "time_start", "time_end")):
        raise UserError(f"{where}: the row has fewer columns than the header")
    try:
        start, end = int(row["time_start"]), int(row["time_end"])
    except ValueError:
        raise UserError(
            f"{where}: time_start/time_end must be integers, got {row['time_start']!r}, {row['time_end']!r}"
        ) from None
    if end <= start:
        raise UserError(f"{where}: time_end {end} <= time_start {start}")
    label, ytid = row["label"], row["youtube_id"]
    if not label.strip() or "\n" in label or "\r" in label:
        # classes.txt holds one label a line: an empty or multi-line label would shift every index
        raise UserError(f"{where}: label {label!r} must be non-empty and on one line")
    if not ytid:
        raise UserError(f"{where}: empty youtube_id")
    return {"label": label, "youtube_id": ytid, "time_start": start, "time_end": end}


def _read_kinetics_csvs(
    files: list[RemoteFile], downloads: Path, log: Callable[[str], None] = print
) -> dict[str, list[dict[str, Any]]]:
    """Rows of every labelled split csv (test.csv without labels is skipped), with integer times.

    A clip listed twice with the same label in the same split is kept once; listed with another
    label or in another split it is refused, naming both lines: the clip cannot mean both."""
    rows_by_split: dict[str, list[dict[str, Any]]] = {}
    seen: dict[tuple[str, int, int], tuple[str, dict[str, Any]]] = {}
    for remote in files:
        if not remote.filename.endswith(".csv"):
            continue
        split = remote.filename.removesuffix(".csv")
        rows = _kinetics_csv_rows(downloads / remote.filename, split)
        if rows is None:
            continue
        kept = []
        for where, row in rows:
            clip = {**_kinetics_clip(where, row), "split": split}
            key = (clip["youtube_id"], clip["time_start"], clip["time_end"])
            if key in seen:
                first_where, first = seen[key]
                if (first["label"], first["split"]) != (clip["label"], clip["split"]):
                    raise UserError(
                        f"{where}: clip {key[0]!r} {key[1]}-{key[2]} is also listed at {first_where} with label "
                        f"{first['label']!r} in {first['split']}, here with label {clip['label']!r} in {split}"
                    )
                log(f"{where}: a repeat of {first_where} (the same clip and label); kept once")
                continue
            seen[key] = (where, clip)
            kept.append(clip)
        rows_by_split[split] = kept
    return rows_by_split


def _held_clips(raw: Path, wanted: dict[str, Any]) -> dict[str, Path]:
    """``{source name: path}`` of the wanted clips an extracted tarball holds; a name is matched on
    the member's trailing path, so an id holding a slash still finds its clip."""
    held = {}
    for path in raw.rglob("*.mp4"):
        parts = path.relative_to(raw).parts
        for first in range(len(parts)):
            name = "/".join(parts[first:])
            if name in wanted:
                held[name] = path
                break
    return held


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
    extracted tarball. Returns ``{"by_split": rows, "corrupt": {clip: error}, "found": {clip},
    "frame_counts": {clip: note}}``: ``found`` holds the mirror's names (``kinetics.source_clip_name``),
    the others the dataset's file names (``kinetics.clip_filename``).
    """
    # the csvs first: one that is refused leaves no work folder behind
    rows_by_split = _read_kinetics_csvs(files, downloads, log)
    _open_work_folder(work, short_side, log)
    wanted = _wanted_clips(work, rows_by_split)
    done_dir, raw = work / "done", work / "raw"
    done_dir.mkdir(parents=True, exist_ok=True)
    for leftover in (work / kinetics.VIDEOS_FOLDER).glob(f"*/.*{TMP_MARKER}*"):  # clips a kill cut short
        leftover.unlink()
    found: set[str] = set()
    corrupt: dict[str, str] = {}
    frame_counts: dict[str, str] = {}
    started, encoded = time.time(), 0
    for archive in _archives(files, downloads):
        marker = done_dir / f"{archive.parent.name}--{archive.name}.json"  # two lists may share a tarball name
        if marker.exists():
            record = json.loads(marker.read_text())
        else:
            record, jobs = _encode_archive(archive, raw, wanted, short_side, workers, log)
            write_json(marker, record)
            remove_tree(raw, ignore_errors=True)
            encoded += jobs
            log(
                f"{archive.name}: {len(record['clips'])} clips ({jobs} re-encoded, {len(record['corrupt'])} "
                f"undecodable); {encoded / max(time.time() - started, 1e-9):.2f} clips/s"
            )
        found.update(record["clips"])
        corrupt.update(record["corrupt"])
        frame_counts.update(record.get("frame_counts", {}))
    return {"by_split": rows_by_split, "corrupt": corrupt, "found": found, "frame_counts": frame_counts}


def _open_work_folder(work: Path, short_side: int, log: Callable[[str], None]) -> None:
    """Create ``work`` with its settings, first removing one that a run with other settings left."""
    # finished clips are only reused by a run with the same encoding: another short side (or a
    # changed encoder) starts the work folder afresh instead of mixing two versions
    settings = {"short_side": short_side, "keyframe_seconds": KEYFRAME_SECONDS, "encoder": "libx264 crf 18 veryfast"}
    settings_path = work / "settings.json"
    if work.exists() and (not settings_path.exists() or json.loads(settings_path.read_text()) != settings):
        log(f"{work}: left by a run with other settings; starting afresh")
        remove_tree(work)
    work.mkdir(parents=True, exist_ok=True)
    write_json(settings_path, settings)


def _wanted_clips(work: Path, rows_by_split: dict[str, list[dict[str, Any]]]) -> dict[str, Path]:
    """``{the mirror's name of a clip: where the work folder keeps it re-encoded}``; creates the split folders."""
    wanted: dict[str, Path] = {}
    for split, rows in rows_by_split.items():
        kinetics.video_dir(work, split).mkdir(parents=True, exist_ok=True)
        for row in rows:
            clip = (row["youtube_id"], row["time_start"], row["time_end"])
            wanted[kinetics.source_clip_name(*clip)] = kinetics.video_dir(work, split) / kinetics.clip_filename(*clip)
    return wanted


def _encode_archive(
    archive: Path, raw: Path, wanted: dict[str, Path], short_side: int, workers: int, log: Callable[[str], None]
) -> tuple[dict[str, Any], int]:
    """Extract one tarball into ``raw`` and re-encode its wanted unfinished clips: its marker record
    (the clips it holds, those that failed, frame-count notes) and how many clips were re-encoded."""
    remove_tree(raw, ignore_errors=True)  # a killed run's half-extracted tarball
    raw.mkdir(parents=True)
    log(f"extracting {archive.name}")
    _extract_into(archive, raw)
    held = _held_clips(raw, wanted)
    jobs = [
        (str(src), str(wanted[name]), short_side) for name, src in sorted(held.items()) if not wanted[name].exists()
    ]
    notes: dict[str, str] = {}
    failed = encode_clips(jobs, workers, notes=notes)
    return {"clips": sorted(held), "corrupt": failed, "frame_counts": notes}, len(jobs)


def prepare_kinetics(
    files: list[RemoteFile],
    downloads: Path,
    out: Path,
    options: dict[str, Any],
    log: Callable[[str], None],
    work: Path | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """Write the Kinetics dataset into ``out``; its clips move there from ``work``, which is left
    for the caller to remove once the dataset is validated (:func:`prepare`)."""
    short_side = int(options.get("short_side", 320))
    work = work or out.parent / f".{out.name}.work"
    clips = prepare_kinetics_clips(files, downloads, work, short_side, workers, log)
    rows_by_split, labels, report = _sort_clips(clips)
    # the finished clips move into the new dataset folder; a failed run keeps them in the work folder
    (out / kinetics.VIDEOS_FOLDER).mkdir(parents=True, exist_ok=True)
    for split, kept in rows_by_split.items():
        kinetics.write_csv(kinetics.csv_path(out, split), kept)
    for split in clips["by_split"]:
        kinetics.video_dir(work, split).rename(kinetics.video_dir(out, split))
    kinetics.write_lists(out, rows_by_split, sorted(labels))
    write_json(out / "prepare_report.json", report)
    for kind in ("missing", "corrupt"):
        if report[kind]:
            log(f"WARNING: {len(report[kind])} {kind} clip(s), listed in {out.name}/prepare_report.json")
    if report["frame_count_mismatch"]:
        log(
            f"WARNING: {len(report['frame_count_mismatch'])} clip(s) whose header announces another frame "
            f"count than decodes (kept with the frames that decode), listed in {out.name}/prepare_report.json"
        )
    return {
        "clips": {s: len(r) for s, r in rows_by_split.items()},
        "missing": len(report["missing"]),
        "corrupt": len(report["corrupt"]),
    }


def _sort_clips(
    clips: dict[str, Any],
) -> tuple[dict[str, list[dict[str, Any]]], set[str], dict[str, list[dict[str, Any]]]]:
    """The rows kept by split (their clip re-encoded), their labels, and the report of the clips
    missing, corrupt or kept with a header frame count that disagrees."""
    report: dict[str, list[dict[str, Any]]] = {"missing": [], "corrupt": [], "frame_count_mismatch": []}
    rows_by_split: dict[str, list[dict[str, Any]]] = {}
    labels: set[str] = set()
    for split, rows in clips["by_split"].items():
        kept = []
        for row in rows:
            key = (row["youtube_id"], row["time_start"], row["time_end"])
            name = kinetics.clip_filename(*key)
            entry = {"split": split, "clip": name, "youtube_id": row["youtube_id"], "label": row["label"]}
            if kinetics.source_clip_name(*key) not in clips["found"]:
                report["missing"].append(entry)
            elif name in clips["corrupt"]:
                report["corrupt"].append({**entry, "error": clips["corrupt"][name]})
            else:
                if name in clips["frame_counts"]:  # kept: its clip holds the frames that decode
                    report["frame_count_mismatch"].append({**entry, "note": clips["frame_counts"][name]})
                kept.append(row)
                labels.add(row["label"])
        rows_by_split[split] = kept
    return rows_by_split, labels, report


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
    work = out.parent / f".{out.name}.work"
    with atomic_dir(out) as tmp:
        if spec["format"] == "kinetics":
            # resumable work lives beside the output, outside the temporary folder a failure deletes
            summary = prepare_kinetics(files, downloads, tmp, spec.get("prepare", {}), log, work=work, workers=workers)
        else:
            summary = PREPARERS[spec["format"]](files, downloads, tmp, spec.get("prepare", {}), log)
        if (tmp / MANIFEST).exists():
            raise UserError(f"{downloads}: the archives hold a {MANIFEST} of their own; refusing to replace it")
        try:
            check_output(spec["format"], tmp, out, log, workers)
        except UserError as err:
            if spec["format"] != "kinetics":
                raise
            # the encoded clips go back to the work folder: a rerun after the fix reuses them
            for split in (tmp / kinetics.VIDEOS_FOLDER).iterdir():
                split.rename(kinetics.video_dir(work, split.name))
            raise UserError(f"{err} (the re-encoded clips wait in {work}; delete it to re-encode them all)") from None
        # the manifest is the last file written: a dataset folder without one is unfinished
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
    remove_tree(work, ignore_errors=True)
    return summary


def check_output(fmt: str, tmp: Path, out: Path, log: Callable[[str], None], workers: int = 1) -> None:
    """Validate the dataset built in ``tmp`` (to become ``out``) as ``frozenbench validate`` would;
    a problem is a UserError naming the file as it would stand in ``out``: a preparation bug or a
    source the checks before missed never becomes a dataset that looks finished."""
    validator = MODULES[fmt].validate
    report = validator(tmp, workers) if fmt == "kinetics" else validator(tmp)

    def final(problem: Any) -> str:
        return str(problem).replace(str(tmp), str(out))

    if report.warnings:
        log(f"WARNING: {len(report.warnings)} warning(s) validating {out.name}, the first: {final(report.warnings[0])}")
    if report.problems:
        more = f" (and {len(report.problems) - 1} more problem(s))" if len(report.problems) > 1 else ""
        raise UserError(
            f"{final(report.problems[0])}{more}: the prepared {fmt} dataset fails validation; nothing written"
        )
