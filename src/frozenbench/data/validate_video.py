"""The Kinetics checks of ``frozenbench validate`` (and of ``prepare``'s own output).

Beyond "every clip decodes": a clip whose container announces another frame count than decodes
is a warning naming both counts (the samplers of mmaction2 trust the decoded frames, a reader
trusting the header seeks past the end); a clip listed twice in the csvs (with another label, or
in both splits) and an mmaction2 list whose paths or label indices say something else than the
csv and ``classes.txt`` are problems: training reads the lists, so a clip would silently be
learnt under a label the annotations do not give it.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from frozenbench.data.validate import KINETICS_COLUMNS, Problem, Report


def clip_frame_counts(path: Path) -> tuple[int, int, str | None]:
    """(frames the container's header announces (0: none), frames that decode, None) for a
    decodable clip, else (header count, 0, reason)."""
    import av

    if not path.exists():
        return 0, 0, "missing"
    if path.stat().st_size == 0:
        return 0, 0, "empty file (0 bytes)"
    header = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return 0, 0, "no video stream"
            header = int(container.streams.video[0].frames or 0)
            frames = sum(1 for _ in container.decode(video=0))
    except Exception as err:  # av.error.* for truncated or foreign files
        return header, 0, f"undecodable video ({type(err).__name__}: {err})"
    if frames == 0:
        announced = f" (its header announces {header})" if header else ""
        return header, 0, f"video has no decodable frames{announced}"
    return header, frames, None


def _check_clip(path: str) -> tuple[str, int, int, str | None]:
    """Pool worker for :func:`check_clips`."""
    return (path, *clip_frame_counts(Path(path)))


def check_clips(paths: list[Path], workers: int = 1) -> list[tuple[str, int, int, str | None]]:
    """:func:`clip_frame_counts` of every path, on ``workers`` processes (``prepare`` validates a
    whole re-encoded Kinetics this way), in the order given."""
    if workers <= 1 or len(paths) < 2:
        return [_check_clip(str(p)) for p in paths]
    from frozenbench.data.prepare import _spawn_pool

    with _spawn_pool(workers) as pool:
        return list(pool.map(_check_clip, [str(p) for p in paths], chunksize=16))


def _read_csv(csv_path: Path, report: Report) -> list[tuple[str, dict[str, Any]]] | None:
    """``(file:line, row)`` of a split csv, or None (reported) when it cannot be read as one."""
    try:
        # utf-8-sig: a byte-order mark (a spreadsheet's export) is not part of the first column's name
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != KINETICS_COLUMNS:
                got = ",".join(reader.fieldnames or [])
                report.problems.append(
                    Problem(str(csv_path), f"header must be {','.join(KINETICS_COLUMNS)}, got {got}")
                )
                return None
            return [(f"{csv_path}:{reader.line_num}", row) for row in reader]
    except UnicodeDecodeError as err:
        report.problems.append(Problem(str(csv_path), f"not UTF-8 text ({err.reason} at byte {err.start})"))
    except csv.Error as err:
        report.problems.append(Problem(str(csv_path), f"unreadable csv: {err}"))
    return None


def _check_list(root: Path, split: str, expected: dict[str, tuple[str, int]], report: Report) -> None:
    """``<split>_list_videos.txt`` must list exactly the csv's clips, each with its label's index.
    ``expected``: {path relative to root: (csv file:line, label index)}."""
    list_path = root / f"{split}_list_videos.txt"
    if not list_path.exists():
        report.problems.append(Problem(str(list_path), "missing (training reads the clips and labels from it)"))
        return
    report.files_checked += 1
    listed = set()
    for number, line in enumerate(list_path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{list_path}:{number}"
        parts = line.split(" ")  # mmaction2 splits on single spaces: a path holding one breaks the line
        if len(parts) != 2 or not parts[1].isdigit():
            report.problems.append(Problem(where, f"expected '<path> <label index>', got {line!r}"))
            continue
        path, index = parts[0], int(parts[1])
        listed.add(path)
        if path not in expected:
            report.problems.append(Problem(where, f"{path} is not a clip of annotations/{split}.csv"))
        elif expected[path][1] != index:
            report.problems.append(
                Problem(where, f"label index {index} but {expected[path][0]} gives the clip index {expected[path][1]}")
            )
    for path in sorted(set(expected) - listed):
        report.problems.append(Problem(str(list_path), f"does not list {path} ({expected[path][0]})"))


def validate_kinetics(root: Path, workers: int = 1) -> Report:
    from frozenbench.data.synth.kinetics import clip_filename

    report = Report([], 0)
    problems = report.problems
    classes_path = root / "classes.txt"
    classes = classes_path.read_text(encoding="utf-8").splitlines() if classes_path.exists() else None
    if classes is not None and len(set(classes)) != len(classes):
        repeated = sorted({c for c in classes if classes.count(c) > 1})
        problems.append(Problem(str(classes_path), f"labels listed twice: {', '.join(map(repr, repeated))}"))
    index = {name: i for i, name in reversed(list(enumerate(classes or [])))}
    seen: dict[tuple[str, int, int], str] = {}
    clips: list[Path] = []
    for split in ("train", "val"):
        csv_path = root / "annotations" / f"{split}.csv"
        if not csv_path.exists():
            problems.append(Problem(str(csv_path), "missing"))
            continue
        report.files_checked += 1
        rows = _read_csv(csv_path, report)
        if rows is None:
            continue
        expected: dict[str, tuple[str, int]] = {}
        for where, row in rows:
            try:
                start, end = int(row["time_start"]), int(row["time_end"])
            except (TypeError, ValueError):
                problems.append(Problem(where, "time_start/time_end must be integers"))
                continue
            if end <= start:
                problems.append(Problem(where, f"time_end {end} <= time_start {start}"))
            if classes is not None and row["label"] not in index:
                problems.append(Problem(where, f"label {row['label']!r} not in classes.txt"))
            key = (row["youtube_id"], start, end)
            if key in seen:
                problems.append(Problem(where, f"clip {key[0]!r} {start}-{end} is listed twice (also at {seen[key]})"))
                continue
            seen[key] = where
            name = clip_filename(*key)
            expected[f"videos/{split}/{name}"] = (where, index.get(row["label"], -1))
            clips.append(root / "videos" / split / name)
        if classes is not None:
            _check_list(root, split, expected, report)
    for path, header, frames, reason in check_clips(clips, workers):
        report.files_checked += 1
        if reason:
            problems.append(Problem(path, reason))
        elif header and header != frames:
            report.warnings.append(
                Problem(path, f"the container announces {header} frames but {frames} decode (readers get {frames})")
            )
    return report
