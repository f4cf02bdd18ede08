"""A fourth task type in one module: a linear classification probe on the frozen backbone's pooled
last level, torch only (no OpenMMLab), on an ImageNet-style image folder.

``tests/test_task_types.py`` registers its record beside the three built-in types and runs it through
the config checks, the cell runner, the tables, the cost report and DVC's outs: what adding a task
type takes is this module plus that record.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from frozenbench.data.formats import imagefolder
from frozenbench.data.images import read_image
from frozenbench.engine.data import eval_batches
from frozenbench.evaluation import TopKEvaluator
from frozenbench.models.backbone import Backbone
from frozenbench.tasks.registry import BackboneRequest

PIPELINE_VERSION = 1


@dataclass(frozen=True)
class ProbeHead:
    extra_blocks: int = 0  # a linear probe has none; kept so the capacity table reads it as plain
    dropout: float = 0.0


def class_names(root: Path) -> list[str]:
    return imagefolder.class_names(root)


class ImageFolderSet(torch.utils.data.Dataset):
    """(image resized to ``img_size``, float in [0, 1]; label) of every file under ``root/split``."""

    def __init__(self, root: Path, split: str, img_size: int) -> None:
        names = imagefolder.class_names(root, split)
        self.items = [
            (path, label)
            for label, name in enumerate(names)
            for path in sorted(imagefolder.class_dir(root, split, name).iterdir())
        ]
        self.img_size = img_size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, label = self.items[index]
        image = Image.fromarray(read_image(path, apply_orientation=imagefolder.APPLY_EXIF_ORIENTATION))
        image = image.resize((self.img_size, self.img_size), Image.BILINEAR)
        pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255
        return {"images": pixels, "labels": torch.tensor(label)}


def build_dataset(root: Path, split: str, img_size: int, train: bool, test=None, augment=None, **options):
    return ImageFolderSet(Path(root), split, img_size)


def collate(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return torch.utils.data.default_collate(samples)


class LinearProbe(nn.Module):
    def __init__(self, backbone: Backbone, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(backbone.channels[-1], num_classes)
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1), persistent=False)

    def frozen_parts(self) -> list[str]:
        return ["backbone"] if self.backbone.frozen else []

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone((images - self.mean) / self.std)[-1]
        return self.classifier(self.dropout(features.mean(dim=(2, 3))))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.logits(batch["images"])
        labels = batch["labels"]
        return {"loss_cls": F.cross_entropy(logits, labels), "acc": (logits.argmax(1) == labels).float().mean()}


def build_model(head: ProbeHead, backbone: BackboneRequest, num_classes: int) -> nn.Module:
    options = dict(img_size=backbone.img_size, frozen=backbone.frozen, bf16=backbone.bf16)
    if backbone.checkpoint is None:
        body = Backbone(backbone.arch, **options)
    else:
        body = Backbone.from_checkpoint(backbone.checkpoint, arch=backbone.arch, **options)
    return LinearProbe(body, num_classes, head.dropout)


@torch.no_grad()
def evaluate(model: LinearProbe, dataset, num_classes: int, test=None, workers: int = 0) -> dict[str, Any]:
    model.eval()
    topk = TopKEvaluator(topk=(1,))
    for batch in eval_batches(dataset, collate, 8, workers, pin_memory=False):
        scores = model.logits(batch["images"]).softmax(1)
        for score, label in zip(scores.numpy(), batch["labels"].tolist()):
            topk.process(score, int(label))
    return topk.evaluate()
