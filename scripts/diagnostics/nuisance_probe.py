"""What a mini backbone's frozen features encode besides the shape: ridge-regression R^2 of
per-image nuisances of ``shapes-pretrain`` (background and shape luminance, their contrast, shape
area) from the probe's features, fitted on one half of ``val`` and scored on the other.

    PYTHONPATH=src python scripts/diagnostics/nuisance_probe.py data/shapes-pretrain checkpoints/*.pth

Used to find why contrastive pretraining stayed at the random floor (docs/research-log.md, "Mini-study
pretraining"): with SimCLR's colour jitter its features predicted luminance with R^2 0.97.
"""

from __future__ import annotations

import argparse

import torch

from frozenbench.checkpoint import load_backbone
from frozenbench.models.registry import build_arch
from frozenbench.pretrain.data import ImageSet, load_imagefolder
from frozenbench.pretrain.probe import extract_features


def nuisances(images_uint8: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image nuisances, measured from pixels: the background from a 4-pixel border, the shape
    as the pixels that differ from it."""
    x = images_uint8.float() / 255
    border = torch.cat(
        [x[:, :, :4].flatten(2), x[:, :, -4:].flatten(2), x[:, :, :, :4].flatten(2), x[:, :, :, -4:].flatten(2)], dim=2
    )
    background = border.mean(dim=2)
    shape = (x - background[:, :, None, None]).abs().sum(dim=1) > 0.2
    foreground = (x * shape[:, None]).sum(dim=(2, 3)) / shape.sum(dim=(1, 2))[:, None].clamp(min=1)
    lum_bg, lum_fg = background.mean(dim=1), foreground.mean(dim=1)
    return {
        "background_luminance": lum_bg,
        "shape_luminance": lum_fg,
        "contrast": lum_fg - lum_bg,
        "abs_contrast": (lum_fg - lum_bg).abs(),
        "shape_area": shape.float().mean(dim=(1, 2)),
    }


def r_squared(features: torch.Tensor, target: torch.Tensor, ridge: float = 10.0) -> float:
    features = (features - features.mean(0)) / (features.std(0) + 1e-6)
    target = (target - target.mean()) / target.std()
    a = torch.cat([features, torch.ones(len(features), 1)], dim=1)
    half = len(a) // 2
    w = torch.linalg.solve(a[:half].T @ a[:half] + ridge * torch.eye(a.shape[1]), a[:half].T @ target[:half])
    residual = a[half:] @ w - target[half:]
    return float(1 - residual.pow(2).mean() / target[half:].var())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="shapes-pretrain folder")
    parser.add_argument("checkpoints", nargs="+", help="canonical backbone checkpoints")
    args = parser.parse_args()
    shuffled: dict[int, tuple[ImageSet, dict[str, torch.Tensor]]] = {}  # per image size, read once
    for path in args.checkpoints:
        checkpoint = load_backbone(path)
        size = checkpoint["meta"].get("image_size", 64)
        if size not in shuffled:
            val = load_imagefolder(args.data, "val", size)
            # interleave the classes so both halves hold every class
            order = torch.randperm(len(val.labels), generator=torch.Generator().manual_seed(0))
            images = ImageSet(val.images[order], val.labels[order], val.classes)
            shuffled[size] = images, nuisances(images.images)
        images, targets = shuffled[size]
        backbone = build_arch(checkpoint["arch"], size)
        backbone.load_state_dict(checkpoint["state_dict"])
        features = extract_features(backbone, images, checkpoint["arch"])
        scores = {name: round(r_squared(features, target), 3) for name, target in targets.items()}
        print(path, scores)


if __name__ == "__main__":
    main()
