"""Kinetics-400 (action recognition) as frozenbench prepares it: layout, clip names, class names,
validator and the writers of the csvs, ``classes.txt`` and mmaction2's lists, which the mini dataset
and ``prepare`` share.

Layout (``frozenbench prepare`` writes it for the real K400, the mini dataset the same)::

    annotations/train.csv, annotations/val.csv   label,youtube_id,time_start,time_end,split
    videos/train/<youtube_id>_<start:06d>_<end:06d>.mp4
    videos/val/...
    classes.txt                                  one label a line, alphabetical (index = line)
    train_list_videos.txt, val_list_videos.txt   mmaction2 lists: "<path> <label index>"

Clips have no EXIF tag: the module has no orientation rule. Stdlib only at import: the Snakefile
and the config checks may import it.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from frozenbench.data.formats.checks import Problem, Report
from frozenbench.errors import UserError
from frozenbench.utils.atomic import write_text

SPLITS = ("train", "val")
CSV_COLUMNS = ["label", "youtube_id", "time_start", "time_end", "split"]
ANNOTATIONS_FOLDER = "annotations"
VIDEOS_FOLDER = "videos"
CLASSES_FILE = "classes.txt"
YOUTUBE_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def csv_name(split: str) -> str:
    """``split``'s annotation csv, relative to the dataset root."""
    return f"{ANNOTATIONS_FOLDER}/{split}.csv"


def csv_path(root: str | Path, split: str) -> Path:
    return Path(root) / csv_name(split)


def list_path(root: str | Path, split: str) -> Path:
    """``split``'s mmaction2 list, the file training reads clips and labels from."""
    return Path(root) / f"{split}_list_videos.txt"


def video_dir(root: str | Path, split: str) -> Path:
    return Path(root) / VIDEOS_FOLDER / split


def listed_path(split: str, name: str) -> str:
    """How the mmaction2 list names clip file ``name`` of ``split``: relative to the dataset root."""
    return f"{VIDEOS_FOLDER}/{split}/{name}"


# Bytes kept as they are in a clip's file name: YouTube's own id alphabet, so a real Kinetics id
# keeps the name the mirror gives its clip. Everything else is percent-encoded (``%XX`` per UTF-8
# byte, ``%`` included): a space would split mmaction2's "<path> <label>" list lines, a slash or a
# leading dot would leave the folder or hide the clip, and the encoding is reversible
# (``urllib.parse.unquote``), so two ids never share a name.
_NAME_SAFE = frozenset(YOUTUBE_ID_ALPHABET.encode())
# a file name is at most 255 bytes; the start/end/suffix take 18
_MAX_ID_BYTES = 200


def safe_id(ytid: str) -> str:
    """``ytid`` as it stands in a file name; see ``_NAME_SAFE``. An id too long for a file name
    keeps its first bytes and a digest of the whole id (its csv row keeps the id itself)."""
    raw = ytid.encode()
    encoded = "".join(chr(b) if b in _NAME_SAFE else f"%{b:02X}" for b in raw)
    if len(encoded) > _MAX_ID_BYTES:
        import hashlib

        encoded = f"{encoded[: _MAX_ID_BYTES - 41]}%~{hashlib.sha256(raw).hexdigest()[:39]}"
    return encoded


def clip_filename(ytid: str, start: int, end: int) -> str:
    """The clip's file name in a dataset folder (the mmaction2 lists and the validator use it)."""
    return f"{safe_id(ytid)}_{start:06d}_{end:06d}.mp4"


def source_clip_name(ytid: str, start: int, end: int) -> str:
    """The name the Kinetics mirror's tarballs give the clip: the id as it is."""
    return f"{ytid}_{start:06d}_{end:06d}.mp4"


def class_names(root: str | Path) -> list[str]:
    """Label ``k`` is line ``k`` of ``classes.txt``; a UserError when it is missing."""
    path = Path(root) / CLASSES_FILE
    if not path.exists():
        raise UserError(f"{path}: missing (one class name a line)")
    return [line for line in path.read_text().splitlines() if line]


def write_lists(root: Path, rows_by_split: dict[str, list[dict[str, Any]]], classes: list[str]) -> None:
    """classes.txt and mmaction2 ``<split>_list_videos.txt`` for the clips that exist."""
    index = {name: i for i, name in enumerate(classes)}
    write_text(Path(root) / CLASSES_FILE, "\n".join(classes) + "\n")
    for split, rows in rows_by_split.items():
        lines = [
            f"{listed_path(split, clip_filename(r['youtube_id'], r['time_start'], r['time_end']))} {index[r['label']]}"
            for r in rows
        ]
        write_text(list_path(root, split), "\n".join(lines) + "\n")


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """An annotation csv of ``rows`` (dicts with the :data:`CSV_COLUMNS`), in the given order."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def _read_csv(split_csv: Path, report: Report) -> list[tuple[str, dict[str, Any]]] | None:
    """``(file:line, row)`` of a split csv, or None (reported) when it cannot be read as one."""
    try:
        # utf-8-sig: a byte-order mark (a spreadsheet's export) is not part of the first column's name
        with open(split_csv, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != CSV_COLUMNS:
                got = ",".join(reader.fieldnames or [])
                report.problems.append(Problem(str(split_csv), f"header must be {','.join(CSV_COLUMNS)}, got {got}"))
                return None
            return [(f"{split_csv}:{reader.line_num}", row) for row in reader]
    except UnicodeDecodeError as err:
        report.problems.append(Problem(str(split_csv), f"not UTF-8 text ({err.reason} at byte {err.start})"))
    except csv.Error as err:
        report.problems.append(Problem(str(split_csv), f"unreadable csv: {err}"))
    return None


def _check_list(root: Path, split: str, expected: dict[str, tuple[str, int]], report: Report) -> None:
    """``<split>_list_videos.txt`` must list exactly the csv's clips, each with its label's index.
    ``expected``: {path relative to root: (csv file:line, label index)}."""
    list_file = list_path(root, split)
    if not list_file.exists():
        report.problems.append(Problem(str(list_file), "missing (training reads the clips and labels from it)"))
        return
    report.files_checked += 1
    listed = set()
    for number, line in enumerate(list_file.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{list_file}:{number}"
        parts = line.split(" ")  # mmaction2 splits on single spaces: a path holding one breaks the line
        if len(parts) != 2 or not parts[1].isdigit():
            report.problems.append(Problem(where, f"expected '<path> <label index>', got {line!r}"))
            continue
        path, index = parts[0], int(parts[1])
        listed.add(path)
        if path not in expected:
            report.problems.append(Problem(where, f"{path} is not a clip of {csv_name(split)}"))
        elif expected[path][1] != index:
            report.problems.append(
                Problem(where, f"label index {index} but {expected[path][0]} gives the clip index {expected[path][1]}")
            )
    for path in sorted(set(expected) - listed):
        report.problems.append(Problem(str(list_file), f"does not list {path} ({expected[path][0]})"))


def validate(root: Path, workers: int = 1) -> Report:
    """Every problem of a Kinetics dataset; beyond "every clip decodes":

    - a clip whose container announces another frame count than decodes is a warning naming both
      counts (the samplers of mmaction2 trust the decoded frames, a reader trusting the header seeks
      past the end);
    - a clip listed twice in the csvs (with another label, or in both splits), and an mmaction2 list
      whose paths or label indices say something else than the csv and ``classes.txt``, are problems:
      training reads the lists, so a clip would silently be learnt under a label the annotations do
      not give it.
    """
    # clip decoding (PyAV, a process pool) loads with the first validation, not with this module
    from frozenbench.data.validate_video import check_clips

    report = Report([], 0)
    classes_path = root / CLASSES_FILE
    classes = classes_path.read_text(encoding="utf-8").splitlines() if classes_path.exists() else None
    if classes is not None and len(set(classes)) != len(classes):
        repeated = sorted({c for c in classes if classes.count(c) > 1})
        report.problems.append(Problem(str(classes_path), f"labels listed twice: {', '.join(map(repr, repeated))}"))
    seen: dict[tuple[str, int, int], str] = {}  # across splits: a clip in both splits is a problem
    clips: list[Path] = []
    for split in SPLITS:
        _check_split_csv(root, split, classes, seen, clips, report)
    for path, header, frames, reason in check_clips(clips, workers):
        report.files_checked += 1
        if reason:
            report.problems.append(Problem(path, reason))
        elif header and header != frames:
            report.warnings.append(
                Problem(path, f"the container announces {header} frames but {frames} decode (readers get {frames})")
            )
    return report


def _check_split_csv(
    root: Path,
    split: str,
    classes: list[str] | None,
    seen: dict[tuple[str, int, int], str],
    clips: list[Path],
    report: Report,
) -> None:
    """Check one split's csv rows (and its mmaction2 list), adding its clips to ``seen`` and ``clips``."""
    problems = report.problems
    index = {name: i for i, name in reversed(list(enumerate(classes or [])))}
    split_csv = csv_path(root, split)
    if not split_csv.exists():
        problems.append(Problem(str(split_csv), "missing"))
        return
    report.files_checked += 1
    rows = _read_csv(split_csv, report)
    if rows is None:
        return
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
            problems.append(Problem(where, f"label {row['label']!r} not in {CLASSES_FILE}"))
        key = (row["youtube_id"], start, end)
        if key in seen:
            problems.append(Problem(where, f"clip {key[0]!r} {start}-{end} is listed twice (also at {seen[key]})"))
            continue
        seen[key] = where
        name = clip_filename(*key)
        expected[listed_path(split, name)] = (where, index.get(row["label"], -1))
        clips.append(video_dir(root, split) / name)
    if classes is not None:
        _check_list(root, split, expected, report)
