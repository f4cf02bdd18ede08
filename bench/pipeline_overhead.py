"""Pipeline overhead: DAG scheduling and per-job start-up as a fraction of a study's wall time.

    PYTHONPATH=src python bench/pipeline_overhead.py [--configfile configs/ci.yaml]

Runs the whole DAG of the config (default: configs/ci.yaml, minutes) in a scratch copy of the
workflow with ``snakemake --cores 2``, then compares its wall time with the sum of the jobs'
own run times (snakemake ``benchmark:`` files, which start when the job's shell starts) and
with the start-up of one job (a Python process importing what ``frozenbench train`` imports,
measured separately, median of 3). Overhead = wall - sum of job times (jobs ran one at a
time: each heavy rule takes both cores).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def startup_seconds(repeats: int = 3) -> float:
    code = "import frozenbench.cells.run, frozenbench.openmmlab, frozenbench.tasks.segmentation"
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configfile", default="configs/ci.yaml")
    parser.add_argument("--device", default="cpu", help="accepted for run_all; this benchmark runs on CPU")
    parser.add_argument("--repeats", type=int, default=2, help="accepted for run_all")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wf = Path(tmp) / "wf"
        wf.mkdir()
        for name in ["Snakefile", "config.yaml", "rules", "schemas", "configs", "profiles", "envs", "report"]:
            src = REPO / name
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, wf / name)
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        started = time.perf_counter()
        subprocess.run(
            [str(BIN / "snakemake"), "--cores", "2", "all_tables", "--configfile", args.configfile, "--quiet", "all"],
            cwd=wf,
            env=env,
            check=True,
        )
        wall = time.perf_counter() - started
        jobs = {}
        for path in (wf / "benchmarks").rglob("*.tsv"):
            with open(path) as f:
                row = next(csv.DictReader(f, delimiter="\t"))
            jobs[str(path.relative_to(wf / "benchmarks"))] = float(row["s"])
        counted = sum(jobs.values())  # every rule that runs a command has a benchmark file
    startup = startup_seconds()
    record = {
        "config": args.configfile,
        "wall_seconds": round(wall, 1),
        "benchmarked_jobs": len(jobs),
        "benchmarked_job_seconds": round(counted, 1),
        "job_startup_seconds": round(startup, 2),
        "overhead_fraction": round(max(wall - counted, 0.0) / wall, 4),
        "startup_fraction_of_benchmarked": round(startup * len(jobs) / counted, 4) if counted else None,
    }
    write_record("pipeline_overhead", record)
    print(record)


if __name__ == "__main__":
    main()
