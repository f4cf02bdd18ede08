"""One rank of the DeepSpeed test (launched by torchrun from tests/test_deepspeed.py)."""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist
import torch.nn as nn

from frozenbench.engine.deepspeed_engine import deepspeed_config, initialize
from frozenbench.engine.options import BatchSplit
from frozenbench.models.backbone import Backbone


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = Backbone("convstem_swin_tiny", img_size=32, frozen=True)
        self.head = nn.Linear(self.backbone.channels[-1], 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)[-1].mean(dim=(2, 3)))


def main(out_dir: str, zero_stage: int) -> None:
    torch.manual_seed(0)  # same initial weights on every rank
    model = Classifier()
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    ranks = int(os.environ["WORLD_SIZE"])  # the launcher's; torch.distributed starts inside initialize
    split = BatchSplit(8 * ranks, ranks, 8, 1)  # 8 samples a rank, one micro-batch
    engine, optimizer = initialize(model, deepspeed_config(zero_stage, split, lr=1e-2))
    rank, world = dist.get_rank(), dist.get_world_size()
    gen = torch.Generator().manual_seed(100 + rank)  # each rank its own shard of data
    x = torch.randn(8, 3, 32, 32, generator=gen)
    y = torch.randint(0, 4, (8,), generator=gen)
    losses = []
    for _ in range(15):
        loss = nn.functional.cross_entropy(engine(x), y)
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    optimized = sum(p.numel() for group in optimizer.param_groups for p in group["params"])
    engine.save_checkpoint(os.path.join(out_dir, "ckpt"), tag="last")
    head_after = engine.module.head.weight.detach().clone()

    fresh = Classifier()
    engine2, _ = initialize(fresh, deepspeed_config(zero_stage, split, lr=1e-2))
    engine2.load_checkpoint(os.path.join(out_dir, "ckpt"), tag="last")
    result = {
        "rank": rank,
        "world": world,
        "losses": losses,
        "optimized_numel": optimized,
        "head_numel": sum(p.numel() for p in model.head.parameters()),
        "backbone_unchanged": all(
            torch.equal(backbone_before[k], v) for k, v in engine.module.backbone.state_dict().items()
        ),
        "resumed_head_matches": torch.equal(engine2.module.head.weight.detach(), head_after),
    }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    dist.barrier()
    dist.destroy_process_group()  # before exit: ranks can abort on teardown otherwise


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
