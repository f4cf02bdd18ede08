"""Run every benchmark (``make bench``) and write ``bench/results/summary.md`` from their records.

    PYTHONPATH=src python bench/run_all.py [--only NAME ...] [--summary-only]

Each benchmark writes ``bench/results/<name>_<device>.json``; the summary reads whatever
records are there, so a GPU run (``--device cuda`` on a lent machine) lands beside the CPU one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SCRIPTS = [
    "backbone_throughput",
    "frozen_vs_finetune",
    "shared_backbone",
    "feature_cache_sweep",
    "pipeline_overhead",
    "paper_cells",
    "kinetics_prepare",
]


def _m(s: dict) -> str:
    return f"{s['median']:.2f} (min {s['min']:.2f}, max {s['max']:.2f})"


def summary() -> str:
    lines = ["# Benchmarks", "", "Ratios measured within one run, cases interleaved; min/median/max over repeats.", ""]
    for path in sorted(RESULTS.glob("backbone_throughput_*.json")):
        r = json.loads(path.read_text())
        lines += [
            f"## Frozen backbone forward ({r['device']}, {r['model']}, input {r['input']})",
            "",
            f"Dense 1024x1024 matmul: {r['matmul_1024_gflops']['median']:.1f} GFLOP/s; "
            f"one forward: {r['gflop_per_forward']:.1f} GFLOP.",
            "",
            "| case | seconds (median) | GFLOP/s | throughput vs raw timm | fraction of matmul rate |",
            "| --- | ---: | ---: | --- | ---: |",
        ]
        for name, sec in r["seconds"].items():
            vs = _m(r["vs_timm_raw"][name]) if name in r["vs_timm_raw"] else "1 (reference)"
            lines.append(
                f"| {name} | {sec['median']:.3f} | {r['gflops'][name]['median']:.1f} | {vs} | "
                f"{r['vs_matmul'][name]:.2f} |"
            )
        lines += ["", f"Goals: {r['goals']}", ""]
    for path in sorted(RESULTS.glob("frozen_vs_finetune_*.json")):
        r = json.loads(path.read_text())
        lines += [
            f"## Frozen vs fine-tune training step ({path.stem.rsplit('_', 1)[-1]})",
            "",
            "| backbone | task | frozen s/step | fine-tune s/step | frozen speedup "
            "| step memory frozen / fine-tune (MB) |",
            "| --- | --- | ---: | ---: | --- | --- |",
        ]
        for arch, b in r["backbones"].items():
            for task, t in b["tasks"].items():
                mem = t["step_memory_mb"]
                lines.append(
                    f"| {arch} | {task} | {t['seconds']['frozen']['median']:.3f} | "
                    f"{t['seconds']['finetune']['median']:.3f} | {_m(t['speedup_frozen'])} | "
                    f"{mem['frozen']:.0f} / {mem['finetune']:.0f} ({t['memory_ratio_frozen_over_finetune']:.2f}) |"
                )
        lines.append("")
        lines += [f"Goals ({arch}): {b['goals']}" for arch, b in r["backbones"].items()]
        lines.append("")
    for path in sorted(RESULTS.glob("shared_backbone_*.json")):
        r = json.loads(path.read_text())
        lines += [
            f"## One shared backbone, two heads ({r['device']})",
            "",
            f"Mask R-CNN + Mask2Former on one batch of {r['batch']} x {r['input']} px: shared backbone "
            f"{_m(r['speedup_shared'])}x faster than one backbone forward per task; the backbone is "
            f"{_m(r['backbone_fraction_of_per_task'])} of the per-task time; identical predictions: "
            f"{r['identical_predictions']}.",
            "",
        ]
    path = RESULTS / "feature_cache_sweep.json"
    if path.exists():
        r = json.loads(path.read_text())
        lines += [
            "## Feature cache on the head-capacity sweep (extra blocks 0, 1, 2)",
            "",
            "| task | steps per head | sweep uncached (s) | sweep cached (s) | speedup | hit rate per head |",
            "| --- | ---: | --- | --- | --- | --- |",
        ]
        for task, t in r["tasks"].items():
            lines.append(
                f"| {task} | {t['steps_per_head']} | {', '.join(f'{v:.1f}' for v in t['seconds_uncached'])}"
                f" | {', '.join(f'{v:.1f}' for v in t['seconds_cached'])}"
                f" | {', '.join(f'{v:.2f}' for v in t['speedup'])} | {t['hit_rates']} |"
            )
        lines.append("")
    path = RESULTS / "pipeline_overhead.json"
    if path.exists():
        r = json.loads(path.read_text())
        lines += [
            "## Pipeline overhead",
            "",
            f"`{r['config']}`: wall {r['wall_seconds']} s for {r['benchmarked_jobs']} jobs whose own run "
            f"times sum to {r['benchmarked_job_seconds']} s: scheduling overhead "
            f"{100 * r['overhead_fraction']:.1f} % of the wall time; one job's Python start-up "
            f"{r['job_startup_seconds']} s, {100 * r['startup_fraction_of_benchmarked']:.1f} % of the job time.",
            "",
        ]
    for path in sorted(RESULTS.glob("paper_cells_*.json")):
        r = json.loads(path.read_text())
        lines += [
            f"## Paper cell types at paper resolution ({r['device']}, {r['arch']}, random weights)",
            "",
            "| cell type | input | mode | batch | s/step | peak memory (MB) | eval s/sample (views) |",
            "| --- | ---: | --- | ---: | ---: | ---: | --- |",
        ]
        for c in r["cells"]:
            lines.append(
                f"| {c['cell']} | {c['img_size']} | {c['mode']} | {c['batch']} | {c['seconds_per_step']:.1f} "
                f"| {c['train_peak_mb']:.0f} | {c['eval_seconds_per_sample']:.1f} ({c['eval_views']}) |"
            )
        lines.append("")
    path = RESULTS / "kinetics_prepare_cpu.json"
    if path.exists():
        r = json.loads(path.read_text())
        lines += [
            f"## Kinetics preparation (short side {r['short_side']}; sources {r['source_shapes']})",
            "",
            "| workers | clips | s | clips/s | clips/s per worker | work folder peak / tarballs | "
            "projected K400 core-hours |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for run in r["runs"]:
            lines.append(
                f"| {run['workers']} | {run['clips']} | {run['seconds']} | {run['clips_per_second']} | "
                f"{run['clips_per_second_per_worker']} | {run['work_peak_bytes'] / r['tarball_bytes']:.2f} | "
                f"{run['projected_k400_core_hours']} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", default=SCRIPTS)
    parser.add_argument("--summary-only", action="store_true")
    args, passthrough = parser.parse_known_args()
    if not args.summary_only:
        for name in args.only:
            print(f"== {name}", flush=True)
            subprocess.run([sys.executable, str(HERE / f"{name}.py"), *passthrough], check=True)
    RESULTS.mkdir(exist_ok=True)
    text = summary()
    (RESULTS / "summary.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
