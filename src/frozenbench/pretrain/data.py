"""ImageFolder data for pretraining, held in memory as uint8 tensors, with batched torch augmentations."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from frozenbench.data.formats import imagefolder
from frozenbench.data.formats import ORIENTATION_BY_FORMAT
from frozenbench.data.images import read_image


@dataclass
class ImageSet:
    images: torch.Tensor  # (N, 3, H, W) uint8
    labels: torch.Tensor  # (N,) int64
    classes: list[str]


def load_imagefolder(root: str | Path, split: str, image_size: int) -> ImageSet:
    """All images of ``root/split/<class>/*``, resized to ``image_size``; errors name the file.

    Read by frozenbench's one image reader with the EXIF orientation applied: a class label holds
    for the image in any orientation, so phone photos are seen upright (16-bit PNGs scaled, not
    clipped; palette, grayscale and CMYK files converted; see :mod:`frozenbench.data.images`)."""
    split_dir = Path(root) / split
    classes = imagefolder.class_names(root, split)
    arrays, labels = [], []
    for index, name in enumerate(classes):
        for path in sorted((split_dir / name).iterdir()):
            img = Image.fromarray(read_image(path, apply_orientation=ORIENTATION_BY_FORMAT["imagefolder"]))
            if img.size != (image_size, image_size):
                img = img.resize((image_size, image_size), Image.BILINEAR)
            arrays.append(np.asarray(img))
            labels.append(index)
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return ImageSet(images, torch.tensor(labels, dtype=torch.long), classes)


def normalize(images_uint8: torch.Tensor, arch: str) -> torch.Tensor:
    """uint8 NCHW images as the inputs ``arch``'s weights expect (its registered mean / std)."""
    from frozenbench.models.registry import normalization

    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in normalization(arch))
    return (images_uint8.float() - mean) / std


def augment(images: torch.Tensor, generator: torch.Generator, strong: bool = False) -> torch.Tensor:
    """Random shift-crop (pad 1/8, crop back) and horizontal flip; ``strong`` (the contrastive views)
    instead zooms out, flips, scrambles colour and luminance and masks the illumination.

    Takes normalized float images and returns the same shape. Every random draw uses
    ``generator`` so a seeded run is repeatable.
    """
    n, _, h, w = images.shape
    if strong:
        return mask_illumination(scramble_intensity(flip(zoom_out(images, generator), generator), generator), generator)
    pad = max(h // 8, 1)
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = dy[:, None] + torch.arange(h)[None, :]  # (n, h)
    cols = dx[:, None] + torch.arange(w)[None, :]  # (n, w)
    out = padded[
        torch.arange(n)[:, None, None, None],
        torch.arange(3)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]
    return flip(out, generator)


def flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flipped = torch.rand(images.shape[0], generator=generator) < 0.5
    return torch.where(flipped[:, None, None, None], images.flip(-1), images)


def zoom_out(
    images: torch.Tensor,
    generator: torch.Generator,
    side: tuple[float, float] = (0.8, 1.8),
    max_log_aspect: float = 0.25,
) -> torch.Tensor:
    """Resample each image from a window of ``side`` x its size (log-uniform; > 1 zooms out, the
    border replicated), with a random aspect and position.

    Measured on shapes-pretrain (docs/research-log.md, "Mini-study pretraining"): in-crops (RandomResizedCrop)
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


def scramble_intensity(
    images: torch.Tensor,
    generator: torch.Generator,
    gain: tuple[float, float] = (0.5, 2.0),
    offset: float = 1.0,
    std_floor: float = 0.1,
) -> torch.Tensor:
    """Per image and channel: subtract the mean, divide by the spread, then a random sign, gain and
    offset, so that neither colour nor luminance can tell two images apart.

    Measured on shapes-pretrain (docs/research-log.md, "Mini-study pretraining"): with brightness / contrast
    jitter and channel permutation (SimCLR's colour distortion) the contrastive features encode the
    background and shape luminance (linear R^2 0.97) instead of the shape, and the probe stays at
    the random floor. Channel permutation keeps the sorted colour profile, and a positive contrast
    factor keeps the sign and size of the shape-to-background contrast; standardizing each channel
    and flipping its sign removes both. The floor on the spread keeps a near-flat channel from
    being blown up into noise.
    """
    n, c = images.shape[:2]
    mean = images.mean(dim=(2, 3), keepdim=True)
    std = images.std(dim=(2, 3), keepdim=True)
    sign = torch.where(torch.rand(n, c, 1, 1, generator=generator) < 0.5, -1.0, 1.0)
    log_gain = torch.empty(n, 1, 1, 1).uniform_(math.log(gain[0]), math.log(gain[1]), generator=generator)
    shift = (torch.rand(n, c, 1, 1, generator=generator) - 0.5) * offset
    return (images - mean) / (std + std_floor) * sign * log_gain.exp() + shift


def mask_illumination(
    images: torch.Tensor, generator: torch.Generator, ramp: float = 1.0, noise: float = 0.3
) -> torch.Tensor:
    """Add a random linear illumination ramp per channel (slope up to ``ramp`` across the image)
    and Gaussian pixel noise of random strength (up to ``noise``).

    After :func:`scramble_intensity` the background's own gradient and the pixel noise, measured
    against the shape's contrast, can still tell two images apart; on shapes-pretrain 2 of 3 seeds
    found a shortcut and stayed near the random floor, and with these masked both of them learn
    the shape (docs/research-log.md, "Mini-study pretraining").
    """
    n, c, h, w = images.shape
    yy = torch.linspace(-1, 1, h).view(1, 1, h, 1)
    xx = torch.linspace(-1, 1, w).view(1, 1, 1, w)
    slope = (torch.rand(n, c, 2, generator=generator) - 0.5) * 2 * ramp
    out = images + slope[..., 0, None, None] * yy + slope[..., 1, None, None] * xx
    sigma = torch.rand(n, 1, 1, 1, generator=generator) * noise
    return out + sigma * torch.randn(out.shape, generator=generator)
