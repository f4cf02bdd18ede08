"""The head-capacity sweep (extra blocks 0, 1, 2 on a frozen backbone) with and without the
frozen-feature cache, on the mini K400 task (8 frames per clip: frames recur across sampled
clips) and the mini ADE task (flips: two views per image).

    PYTHONPATH=src python bench/feature_cache_sweep.py [--steps 60]

Each sweep trains the three heads for ``--steps`` steps through the training driver
(``frozenbench.engine.loop.train``), so the cache's hit rate is the real one of that schedule.
Reported: wall time of the sweep with / without the cache (the ratio), the hit rate, and the
final losses of both (the cache must not change training beyond float rounding).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from frozenbench.tasks.registry import BackboneRequest, get_task_type

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_record  # noqa: E402
from frozen_vs_finetune import synthesize  # noqa: E402

SWEEPS = {  # task -> (module, head base, img_size, batch, dataset options)
    "k400": ("video", {"num_frames": 8, "num_blocks": 1, "width": 64}, 64, 8, {"num_frames": 8}),
    "ade": ("segmentation", {"width": 64, "num_queries": 20, "num_points": 2048}, 128, 4, {}),
}


def sweep(task: str, data_root: Path, cache: bool, steps: int, run_root: Path) -> dict:
    import importlib

    from mmengine.dataset import pseudo_collate

    from frozenbench.engine.loop import TrainOptions, train
    from frozenbench.openmmlab.training import wrap_for_training

    kind, head, img_size, batch, options = SWEEPS[task]
    module = importlib.import_module(f"frozenbench.tasks.{kind}")
    dataset = module.build_dataset(data_root / task, "train", img_size, train=True, **options)
    num_classes = len(module.class_names(data_root / task))
    started = time.perf_counter()
    losses, hits = [], []
    for blocks in (0, 1, 2):
        torch.manual_seed(0)
        model = module.build_model(
            get_task_type(kind).make_head({**head, "extra_blocks": blocks}),
            BackboneRequest(None, img_size, frozen=True, arch="convstem_swin_tiny", feature_cache=cache),
            num_classes,
        )
        run_dir = run_root / f"{task}_{blocks}_{cache}"
        train(
            wrap_for_training(model),
            dataset,
            pseudo_collate,
            run_dir,
            TrainOptions(
                steps=steps, batch_size=batch, lr=1e-3, warmup_steps=5, checkpoint_every=steps, log_every=steps
            ),
            seed=0,
            log=lambda m: None,
        )
        losses.append(json.loads((run_dir / "log.jsonl").read_text().splitlines()[-1])["loss"])
        if cache:
            hits.append(model.backbone.body.feature_cache.stats()["hit_rate"])
    return {"seconds": time.perf_counter() - started, "final_losses": losses, "hit_rates": hits}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--device", default="cpu", help="accepted for run_all; this benchmark runs on CPU")
    parser.add_argument("--repeats", type=int, default=2, help="accepted for run_all")
    parser.add_argument("--tasks", nargs="*", default=list(SWEEPS))
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data_root, run_root = Path(tmp) / "data", Path(tmp) / "runs"
        synthesize(data_root)
        for task in args.tasks:
            # interleave: uncached, cached, uncached, cached (drift shared by both)
            runs = {False: [], True: []}
            for repeat in range(2):
                for cache in (False, True):
                    runs[cache].append(sweep(task, data_root, cache, args.steps, run_root / str(repeat)))
            plain = [r["seconds"] for r in runs[False]]
            cached = [r["seconds"] for r in runs[True]]
            results[task] = {
                "steps_per_head": args.steps,
                "heads": ["extra_blocks=0", "extra_blocks=1", "extra_blocks=2"],
                "seconds_uncached": plain,
                "seconds_cached": cached,
                "speedup": sorted(p / c for p, c in zip(plain, cached)),
                "hit_rates": runs[True][0]["hit_rates"],
                "final_losses_uncached": runs[False][0]["final_losses"],
                "final_losses_cached": runs[True][0]["final_losses"],
            }
            print(
                f"{task}: sweep {min(plain):.1f}s uncached vs {min(cached):.1f}s cached "
                f"({results[task]['speedup']}), hit rates {results[task]['hit_rates']}"
            )
    write_record("feature_cache_sweep", {"tasks": results})


if __name__ == "__main__":
    main()
