"""Frozen-feature probes of a backbone: k-NN and a linear classifier, trained on the train split
and scored on the held-out ``val`` split of ``shapes-pretrain``.

They catch a pretraining that did not learn before any downstream task is run.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from frozenbench.pretrain.data import ImageSet, normalize


@torch.no_grad()
def extract_features(backbone: nn.Module, images: ImageSet, arch: str, batch_size: int = 256) -> torch.Tensor:
    """Pooled last-stage features concatenated with pooled stage-3 features, (N, C), of the timm
    model ``backbone`` of architecture ``arch`` (whose input normalisation is applied), computed on
    the backbone's device and returned on the CPU (where the probes fit)."""
    backbone.eval()
    device = next(backbone.parameters()).device
    feats = []
    for start in range(0, len(images.labels), batch_size):
        x = normalize(images.images[start : start + batch_size], arch).to(device)
        levels = backbone.forward_intermediates(x, intermediates_only=True)
        feats.append(torch.cat([levels[-1].mean(dim=(2, 3)), levels[-2].mean(dim=(2, 3))], dim=1).cpu())
    return torch.cat(feats)


def knn_accuracy(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Weighted cosine k-NN (as in DINO / InstDisc)."""
    train_x, val_x = F.normalize(train_x, dim=1), F.normalize(val_x, dim=1)
    num_classes = int(train_y.max()) + 1
    sims = val_x @ train_x.t()
    top, idx = sims.topk(min(k, train_x.shape[0]), dim=1)
    votes = torch.zeros(val_x.shape[0], num_classes)
    votes.scatter_add_(1, train_y[idx], (top / temperature).exp())
    return float((votes.argmax(dim=1) == val_y).float().mean())


def linear_probe_accuracy(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    epochs: int = 100,
    seed: int = 0,
) -> float:
    """Full-batch logistic regression on standardized features (L-BFGS, small L2)."""
    mean, std = train_x.mean(0, keepdim=True), train_x.std(0, keepdim=True) + 1e-6
    train_x, val_x = (train_x - mean) / std, (val_x - mean) / std
    torch.manual_seed(seed)
    num_classes = int(train_y.max()) + 1
    clf = nn.Linear(train_x.shape[1], num_classes)
    opt = torch.optim.LBFGS(clf.parameters(), lr=0.5, max_iter=epochs, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(clf(train_x), train_y) + 1e-3 * clf.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((clf(val_x).argmax(dim=1) == val_y).float().mean())


def probe(backbone: nn.Module, train: ImageSet, val: ImageSet, arch: str, seed: int = 0) -> dict[str, float]:
    train_x, val_x = extract_features(backbone, train, arch), extract_features(backbone, val, arch)
    return {
        "knn_top1": knn_accuracy(train_x, train.labels, val_x, val.labels),
        "linear_top1": linear_probe_accuracy(train_x, train.labels, val_x, val.labels, seed=seed),
        "chance": 1.0 / len(train.classes),
        "num_train": int(len(train.labels)),
        "num_val": int(len(val.labels)),
    }
