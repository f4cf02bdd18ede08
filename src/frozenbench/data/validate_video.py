"""Decoding clips for the Kinetics checks of ``frozenbench validate`` (and of ``prepare``'s own
output): the frames a clip's header announces and the frames that decode, on a process pool.

The checks of the Kinetics layout itself (csvs, ``classes.txt``, mmaction2 lists) are
:func:`frozenbench.data.formats.kinetics.validate`, also offered here as :func:`validate_kinetics`.
"""

from __future__ import annotations

from pathlib import Path


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
    with spawn_pool(workers) as pool:
        return list(pool.map(_check_clip, [str(p) for p in paths], chunksize=16))


def spawn_pool(workers: int):
    """A process pool whose workers start fresh (``spawn``): a forked copy of a parent that has
    loaded torch, OpenMP and libav threads can die or hang in the child."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=max(1, workers), mp_context=multiprocessing.get_context("spawn"))
