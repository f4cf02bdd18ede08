"""GPU peak memory and throughput of the frozen backbone per model size (Swin-T ... SwinV2-G).

Runs unchanged on a CUDA machine (never needed by tests):
    PYTHONPATH=src python bench/gpu_backbone_memory.py OUT.json
For each architecture: a frozen forward in fp32, under bf16 autocast, and with bf16
weights; for the smaller ones also a fine-tuning step (forward + backward + AdamW) for
the frozen-vs-fine-tune ratio. Input sizes are multiples of the window size at every stage.
"""

from __future__ import annotations

import json
import sys
import time

import torch

from frozenbench.models.backbone import Backbone

CASES = [  # arch, input size, batch
    ("swin_tiny", 896, 2),
    ("swin_base", 896, 2),
    ("swin_large", 896, 2),
    ("swinv2_base", 768, 2),
    ("swinv2_large", 768, 2),
    ("swinv2_giant", 768, 2),
]
FINETUNE = {"swin_tiny", "swin_base", "swin_large", "swinv2_base"}


def measure(fn, repeats: int = 5) -> tuple[float, float]:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()  # warm-up (cuDNN/cuBLAS autotune, allocator)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return torch.cuda.max_memory_allocated() / 2**30, sorted(times)[len(times) // 2]


def main(out: str) -> None:
    rows = []
    for arch, size, batch in CASES:
        for variant in ("frozen_fp32", "frozen_bf16_autocast", "frozen_bf16_weights", "finetune_fp32"):
            if variant == "finetune_fp32" and arch not in FINETUNE:
                continue
            torch.cuda.empty_cache()
            with torch.device("cuda"):
                model = Backbone(
                    arch, img_size=size, frozen=variant != "finetune_fp32", bf16=variant == "frozen_bf16_autocast"
                )
            dtype = torch.float32
            if variant == "frozen_bf16_weights":
                model = model.to(torch.bfloat16)
                dtype = torch.bfloat16
            params = sum(p.numel() for p in model.parameters())
            x = torch.randn(batch, 3, size, size, device="cuda", dtype=dtype)
            opt = None
            if variant == "finetune_fp32":
                opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

                def step():
                    loss = sum(f.float().mean() for f in model(x))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            else:

                def step():
                    model(x)

            try:
                peak_gib, seconds = measure(step)
                row = {
                    "arch": arch,
                    "variant": variant,
                    "img_size": size,
                    "batch": batch,
                    "params_m": params / 1e6,
                    "peak_gib": round(peak_gib, 2),
                    "step_ms": round(seconds * 1000, 1),
                    "img_per_s": round(batch / seconds, 1),
                }
            except torch.cuda.OutOfMemoryError:
                row = {"arch": arch, "variant": variant, "img_size": size, "batch": batch, "oom": True}
            print(json.dumps(row), flush=True)
            rows.append(row)
            # drop this case's tensors before the next one allocates (the step closure holds them too)
            model = x = opt = step = None
    info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}
    with open(out, "w") as f:
        json.dump(info, f, indent=2)


if __name__ == "__main__":
    main(sys.argv[1])
