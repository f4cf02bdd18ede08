"""ImageFolder data for pretraining, held in memory as uint8 tensors, with batched torch augmentations."""

from __future__ import annotations

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
    """Random shift-crop (pad 1/8, crop back), horizontal flip; ``strong`` adds colour jitter and grayscale.

    Takes normalized float images and returns the same shape. Every random draw uses
    ``generator`` so a seeded run is repeatable.
    """
    n, _, h, w = images.shape
    pad = max(h // 8, 1)
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])  # (n, h)
    cols = (dx[:, None] + torch.arange(w)[None, :])  # (n, w)
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(3)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    if strong:
        out = random_resized_crop(out, generator)
        # Colour must not identify an instance, or contrastive learning matches views by colour
        # instead of shape: permute channels, jitter brightness and contrast, drop colour at random.
        perm = torch.stack([torch.randperm(3, generator=generator) for _ in range(n)])
        out = out[torch.arange(n)[:, None], perm]
        brightness = (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.8
        contrast = 1 + (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.6
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * contrast + mean + brightness
        # The smooth background gradient is unique per image and would identify an instance as
        # well: rotate by a multiple of 90 degrees (shape classes are invariant to it) and add a
        # random illumination ramp to every view.
        k = torch.randint(0, 4, (n,), generator=generator)
        out = torch.stack([torch.rot90(img, int(r), dims=(1, 2)) for img, r in zip(out, k)])
        yy = torch.linspace(-1, 1, h).view(1, 1, h, 1)
        xx = torch.linspace(-1, 1, w).view(1, 1, 1, w)
        slope = (torch.rand(n, 2, 1, 1, generator=generator) - 0.5) * 1.2
        out = out + slope[:, :1, None] .squeeze(2) * yy + slope[:, 1:, None].squeeze(2) * xx
        # Colour pairs (even channel-permuted) still single out an instance: drop colour most of
        # the time and flip intensity polarity, leaving the outline as the shared cue.
        gray = torch.rand(n, generator=generator) < 0.5
        out = torch.where(gray[:, None, None, None], out.mean(dim=1, keepdim=True).expand_as(out), out)
        invert = torch.rand(n, generator=generator) < 0.5
        out = torch.where(invert[:, None, None, None], -out, out)
    return out


def random_resized_crop(images: torch.Tensor, generator: torch.Generator, scale: tuple[float, float] = (0.5, 1.0),
                        ratio: tuple[float, float] = (0.75, 1.333)) -> torch.Tensor:
    """Batched RandomResizedCrop: each image gets its own crop box, resampled to the input size."""
    n = images.shape[0]
    area = torch.empty(n).uniform_(*scale, generator=generator)
    log_ratio = torch.empty(n).uniform_(torch.log(torch.tensor(ratio[0])).item(),
                                        torch.log(torch.tensor(ratio[1])).item(), generator=generator)
    aspect = log_ratio.exp()
    w = (area * aspect).sqrt().clamp(max=1.0)
    h = (area / aspect).sqrt().clamp(max=1.0)
    cx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - w)
    cy = (torch.rand(n, generator=generator) * 2 - 1) * (1 - h)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
