"""Kinetics preparation throughput: clips per second per core, and the disk it needs.

    PYTHONPATH=src python bench/kinetics_prepare.py [--workers 1 2] [--short-side 320]

Real-shaped synthetic clips (10 s at 25 / 30 fps, 340x256 to 640x360, one 2 s clip; what the
mini generator's ``size_profile: real`` draws) are packed into tarballs as the CVDF mirror ships
them and re-encoded by ``frozenbench.data.prepare.prepare_kinetics_clips`` (short side 320, a
keyframe a second) with 1 and 2 worker processes. The record gives clips/s, clips/s per worker,
and the disk high-water mark of the work folder relative to the tarballs, from which docs/datasets.md
projects the real Kinetics-400 preparation (about 260k clips). Decoding cost grows with the source
resolution: real uploads are often larger than these, so the projection is a lower bound on time.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import write_record  # noqa: E402

SPEC = {
    "source": "synth",
    "format": "kinetics",
    "synth": {
        "seed": 7,
        "frame_size": 64,
        "num_frames": 12,
        "num_train_per_class": 2,
        "num_val_per_class": 1,
        "texture": 0.2,
        "size_profile": "real",
    },
}
K400_CLIPS = 260_000  # train + val clips of Kinetics-400 (CVDF mirror)


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--short-side", type=int, default=320)
    parser.add_argument("--device", default="cpu", help="ignored (run_all passes it)")
    parser.add_argument("--repeats", type=int, default=None, help="ignored (run_all passes it)")
    args = parser.parse_args()

    from frozenbench.data.download import RemoteFile
    from frozenbench.data.prepare import prepare_kinetics_clips
    from frozenbench.data.synth import synthesize

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthesize(SPEC, tmp / "clips")
        downloads = tmp / "downloads"
        downloads.mkdir()
        files = []
        for split in ("train", "val"):
            shutil.copy(tmp / "clips" / "annotations" / f"{split}.csv", downloads / f"{split}.csv")
            files.append(
                RemoteFile(
                    url=f"http://127.0.0.1/{split}.csv",
                    filename=f"{split}.csv",
                    checksum={"unpublished": "bench"},
                    extract=False,
                )
            )
            listed = downloads / f"k400_{split}_path"
            listed.mkdir()
            clips = sorted((tmp / "clips" / "videos" / split).glob("*.mp4"))
            for part in range(2):
                with tarfile.open(listed / f"part_{part}.tar.gz", "w:gz") as tf:
                    for clip in clips[part::2]:
                        tf.add(clip, arcname=clip.name)
            files.append(
                RemoteFile(
                    url=f"http://127.0.0.1/k400_{split}_path.txt",
                    filename=f"k400_{split}_path.txt",
                    checksum={"unpublished": "bench"},
                    url_list=True,
                )
            )
        tarballs = _tree_bytes(downloads)
        num_clips = sum(1 for _ in (tmp / "clips" / "videos").rglob("*.mp4"))
        for workers in args.workers:
            work = tmp / f"work{workers}"
            peak = [0]
            stop = threading.Event()

            def watch(work=work, peak=peak, stop=stop) -> None:
                while not stop.is_set():
                    if work.exists():
                        peak[0] = max(peak[0], _tree_bytes(work))
                    time.sleep(0.05)

            watcher = threading.Thread(target=watch)
            watcher.start()
            start = time.perf_counter()
            prepare_kinetics_clips(files, downloads, work, args.short_side, workers, log=lambda m: None)
            seconds = time.perf_counter() - start
            stop.set()
            watcher.join()
            out_bytes = _tree_bytes(work / "videos")
            rate = num_clips / seconds
            rows.append(
                {
                    "workers": workers,
                    "clips": num_clips,
                    "seconds": round(seconds, 2),
                    "clips_per_second": round(rate, 3),
                    "clips_per_second_per_worker": round(rate / workers, 3),
                    "output_bytes": out_bytes,
                    "work_peak_bytes": peak[0],
                    "projected_k400_core_hours": round(K400_CLIPS / (rate / workers) / 3600, 1),
                }
            )
            print(rows[-1], flush=True)
    write_record(
        "kinetics_prepare_cpu",
        {
            "short_side": args.short_side,
            "tarball_bytes": tarballs,
            "source_shapes": "10 s at 25/30 fps, 340x256 .. 640x360, one 2 s clip",
            "runs": rows,
        },
    )


if __name__ == "__main__":
    main()
