"""Frozen backbone forward: the pipeline's wrapper vs raw timm, vs a naive in-graph forward, and
against the machine's dense matmul rate measured in the same run.

    PYTHONPATH=src python bench/backbone_throughput.py [--device cuda] [--repeats 7]

Cases (Swin-T, 224 px, batch 8; fp32 on CPU):
- ``timm_raw``: ``timm`` ``forward_features`` under ``no_grad`` (the reference);
- ``frozen``: frozenbench's frozen ``Backbone`` (no_grad inside, multi-level NCHW outputs);
- ``frozen_inference_mode``: the same under ``torch.inference_mode``;
- ``frozen_channels_last``: input in channels-last memory format;
- ``frozen_bf16``: bf16 autocast (on CPU only where the hardware has bf16 matmul units);
- ``naive_in_graph``: parameters with ``requires_grad=False`` but the forward inside a training
  graph (the input requires grad, as behind a trainable stem): autograd records every activation.
- ``frozen_compiled``: the frozen ``Backbone(compile=True)`` (task option ``compile_backbone``):
  ``torch.compile`` with Inductor's ``freezing`` (weights as constants, prepacked) and C++ wrapper;
  compiled once before timing (the one-off compile time is recorded).
SDPA is what the frozen backbone's window attention uses on both devices.

GFLOP/s counts FLOPs with ``torch.utils.flop_counter`` on one forward. Goals (issue 7): the
frozen backbone keeps >= 95 % of raw timm's throughput and >= 65 % of the matmul rate.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, matmul_case, ratio, spread, write_record  # noqa: E402

from frozenbench.models.backbone import Backbone  # noqa: E402


def count_flops(fn) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    device, size = args.device, args.size
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    torch.manual_seed(0)
    raw = (
        timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=size, num_classes=0)
        .eval()
        .to(device)
    )
    ours = Backbone("swin_tiny", img_size=size, state_dict=raw.state_dict()).to(device)
    naive = Backbone("swin_tiny", img_size=size, frozen=False, state_dict=raw.state_dict()).to(device).eval()
    naive.requires_grad_(False)
    x = torch.randn(args.batch, 3, size, size, device=device)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    x_grad = x.clone().requires_grad_(True)

    def timm_raw():
        with torch.no_grad():
            return raw.forward_features(x)

    def frozen_inference_mode():
        with torch.inference_mode():
            return ours(x)

    def naive_in_graph():
        return naive(x_grad)  # the graph (and its activations) is freed when the result is dropped

    cases = {
        "timm_raw": timm_raw,
        "frozen": lambda: ours(x),
        "frozen_inference_mode": frozen_inference_mode,
        "frozen_channels_last": lambda: ours(x_cl),
        "naive_in_graph": naive_in_graph,
    }
    ours_bf16 = Backbone("swin_tiny", img_size=size, bf16=True, state_dict=raw.state_dict()).to(device)
    cases["frozen_bf16"] = lambda: ours_bf16(x)
    compiled = Backbone("swin_tiny", img_size=size, compile=True, state_dict=raw.state_dict()).to(device)
    started = time.perf_counter()
    compiled(x)
    sync()
    compile_seconds = time.perf_counter() - started
    cases["frozen_compiled"] = lambda: compiled(x)
    flops = count_flops(timm_raw)
    matmul, matmul_flops = matmul_case(device=device)
    times = interleaved({**cases, "matmul_1024": matmul}, args.repeats, warmup=2, sync=sync)
    gflops_ref = [matmul_flops / t / 1e9 for t in times.pop("matmul_1024")]
    rate = {name: [flops / t / 1e9 for t in ts] for name, ts in times.items()}
    record = {
        "model": "swin_tiny",
        "input": [args.batch, 3, size, size],
        "device": device,
        "repeats": args.repeats,
        "gflop_per_forward": flops / 1e9,
        "compile_seconds": round(compile_seconds, 1),
        "matmul_1024_gflops": spread(gflops_ref),
        "seconds": {name: spread(ts) for name, ts in times.items()},
        "gflops": {name: spread(r) for name, r in rate.items()},
        # throughput relative to raw timm (> 1: faster), paired repeat by repeat
        "vs_timm_raw": {name: ratio(times["timm_raw"], ts) for name, ts in times.items() if name != "timm_raw"},
        # achieved rate over the matmul rate timed in the same repeat, median over repeats
        "vs_matmul": {
            name: round(spread([a / m for a, m in zip(r, gflops_ref)])["median"], 4) for name, r in rate.items()
        },
    }
    record["goals"] = {
        "frozen_keeps_95pct_of_timm": record["vs_timm_raw"]["frozen"]["median"] >= 0.95,
        "frozen_reaches_65pct_of_matmul": record["vs_matmul"]["frozen"] >= 0.65,
        "frozen_compiled_keeps_95pct_of_timm": record["vs_timm_raw"]["frozen_compiled"]["median"] >= 0.95,
        "frozen_compiled_reaches_65pct_of_matmul": record["vs_matmul"]["frozen_compiled"] >= 0.65,
    }
    path = write_record(f"backbone_throughput_{device}", record)
    for name in ("frozen", "frozen_compiled"):
        print(
            f"{path}: {name} {record['vs_timm_raw'][name]['median']:.3f}x timm, "
            f"{record['vs_matmul'][name]:.2f} of matmul ({spread(rate[name])['median']:.1f} GFLOP/s)"
        )


if __name__ == "__main__":
    main()
