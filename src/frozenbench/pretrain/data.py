"""ImageFolder data for pretraining, held in memory as uint8 tensors, with batched torch augmentations."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from frozenbench.errors import UserError

MEAN = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)
STD = torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1)


@dataclass
class ImageSet:
    images: torch.Tensor  # (N, 3, H, W) uint8
    labels: torch.Tensor  # (N,) int64
    classes: list[str]


def load_imagefolder(root: str | Path, split: str, image_size: int) -> ImageSet:
    """All images of ``root/split/<class>/*``, resized to ``image_size``; errors name the file."""
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise UserError(f"{split_dir}: missing split folder")
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if not classes:
        raise UserError(f"{split_dir}: no class folders")
    arrays, labels = [], []
    for index, name in enumerate(classes):
        for path in sorted((split_dir / name).iterdir()):
            try:
                with Image.open(path) as img:
                    img = img.convert("RGB")
                    if img.size != (image_size, image_size):
                        img = img.resize((image_size, image_size), Image.BILINEAR)
                    arrays.append(np.asarray(img))
            except Exception as err:
                raise UserError(f"{path}: unreadable image ({type(err).__name__}: {err})") from None
            labels.append(index)
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return ImageSet(images, torch.tensor(labels, dtype=torch.long), classes)


def normalize(images_uint8: torch.Tensor) -> torch.Tensor:
    return (images_uint8.float() / 255.0 - MEAN) / STD


def augment(images: torch.Tensor, generator: torch.Generator, strong: bool = False) -> torch.Tensor:
    """Random shift-crop (pad 1/8, crop back) and horizontal flip; ``strong`` (the contrastive views)
    instead zooms out and jitters colour.

    Takes normalized float images and returns the same shape. Every random draw uses
    ``generator`` so a seeded run is repeatable.
    """
    n, _, h, w = images.shape
    if strong:
        return colour_jitter(flip(zoom_out(images, generator), generator), generator)
    pad = max(h // 8, 1)
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])  # (n, h)
    cols = (dx[:, None] + torch.arange(w)[None, :])  # (n, w)
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(3)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]
    return flip(out, generator)


def flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flipped = torch.rand(images.shape[0], generator=generator) < 0.5
    return torch.where(flipped[:, None, None, None], images.flip(-1), images)


def zoom_out(images: torch.Tensor, generator: torch.Generator, side: tuple[float, float] = (0.8, 1.8),
             max_log_aspect: float = 0.25) -> torch.Tensor:
    """Resample each image from a window of ``side`` x its size (log-uniform; > 1 zooms out, the
    border replicated), with a random aspect and position.

    Measured on shapes-pretrain (README, "Mini-study pretraining"): in-crops (RandomResizedCrop)
    cut the one shape in two and leave its size as the easy instance cue; zooming out keeps the
    whole shape and scrambles its apparent size and position, so two views of one image share
    little more than the shape.
    """
    n = images.shape[0]
    log_side = torch.empty(n).uniform_(math.log(side[0]), math.log(side[1]), generator=generator)
    log_aspect = torch.empty(n).uniform_(-max_log_aspect, max_log_aspect, generator=generator)
    sw, sh = (log_side + log_aspect / 2).exp(), (log_side - log_aspect / 2).exp()
    cx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - sw).abs()
    cy = (torch.rand(n, generator=generator) * 2 - 1) * (1 - sh).abs()
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = sw, cx
    theta[:, 1, 1], theta[:, 1, 2] = sh, cy
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def colour_jitter(images: torch.Tensor, generator: torch.Generator, gray_p: float = 0.5) -> torch.Tensor:
    """Colour must not identify an instance (colours are random per image in the shapes data):
    permute channels, jitter brightness and contrast, drop colour with probability ``gray_p``."""
    n = images.shape[0]
    perm = torch.stack([torch.randperm(3, generator=generator) for _ in range(n)])
    out = images[torch.arange(n)[:, None], perm]
    brightness = (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.8
    contrast = 1 + (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.8
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * contrast + mean + brightness
    gray = torch.rand(n, generator=generator) < gray_p
    return torch.where(gray[:, None, None, None], out.mean(dim=1, keepdim=True).expand_as(out), out)
