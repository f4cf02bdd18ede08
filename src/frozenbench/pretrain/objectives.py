"""The pretraining objectives the study compares, each a module the training engine steps.

- ``supervised``: classification with label-smoothed cross-entropy;
- ``contrastive``: MoCo v3 / MoBY style: two strongly augmented views, a momentum
  (key) encoder, projector + predictor on the query side, symmetric InfoNCE;
- ``mim``: SimMIM: random mask-patch masking with a learned mask token at the token
  level, a light linear decoder to raw pixels, L1 on masked pixels only.

Every objective owns ``self.backbone`` (a timm model whose weights become the checkpoint). Its
``forward(batch)`` takes one batch of :func:`collate` and returns ``{"loss": ...}``, the training
engine's contract (:mod:`frozenbench.engine.loop`); the batch's ``draw_seed`` (drawn by
:func:`collate` from the step's seeded RNG) seeds every augmentation and mask draw, so the loss of
step k is a pure function of (seed, k) as for the task heads. Images and the seeded augmentation
stay on the CPU (the same random draws on any device); the views move to the objective's device
before the backbone (:func:`frozenbench.engine.device.to_device`: non-blocking on the GPU path),
so an objective has no ``set_non_blocking_copies`` for the engine to call: the batch stays where
the loader built it.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from frozenbench.engine.device import to_device
from frozenbench.pretrain.data import augment


def collate(samples: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
    """A batch of (normalized image, label) pairs, with the seed of its augmentation draws (taken
    from torch's RNG, which the engine reseeds from (seed, step) before building a step)."""
    images, labels = zip(*samples)
    draw_seed = int(torch.randint(0, 2**62, ()).item())
    return {"images": torch.stack(images), "labels": torch.stack(labels), "draw_seed": draw_seed}


class Objective(nn.Module):
    """Base of the objectives: ``loss(images, labels, generator)`` is the objective itself."""

    def loss(self, images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(int(batch["draw_seed"]))
        return {"loss": self.loss(batch["images"], batch["labels"], gen)}


def device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def pooled(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Global-average-pooled last-stage features (B, C)."""
    return backbone.forward_head(backbone.forward_features(x), pre_logits=True)


class Supervised(Objective):
    def __init__(self, backbone: nn.Module, num_classes: int, label_smoothing: float = 0.1) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, num_classes)
        self.label_smoothing = label_smoothing

    def loss(self, images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        device = device_of(self)
        logits = self.head(pooled(self.backbone, to_device(augment(images, gen), device)))
        return F.cross_entropy(logits, to_device(labels, device), label_smoothing=self.label_smoothing)


def _mlp(dim_in: int, hidden: int, dim_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim_in, hidden), nn.BatchNorm1d(hidden), nn.GELU(), nn.Linear(hidden, dim_out))


class Contrastive(Objective):
    def __init__(
        self,
        backbone: nn.Module,
        proj_dim: int = 128,
        hidden: int = 512,
        temperature: float = 0.2,
        momentum: float = 0.99,
        queue_size: int = 0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = _mlp(backbone.num_features, hidden, proj_dim)
        self.predictor = _mlp(proj_dim, hidden, proj_dim)
        self.key_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.key_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.temperature = temperature
        self.momentum = momentum
        # MoCo v2 / MoBY: a queue of past keys as extra negatives, for small batches.
        self.queue_size = queue_size
        if queue_size:
            self.register_buffer("queue", F.normalize(torch.randn(queue_size, proj_dim), dim=1))
            self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        keys = F.normalize(keys, dim=1)
        n, ptr = keys.shape[0], int(self.queue_ptr)
        idx = (torch.arange(n, device=keys.device) + ptr) % self.queue_size
        self.queue[idx] = keys
        self.queue_ptr.fill_((ptr + n) % self.queue_size)

    @torch.no_grad()
    def update_key_encoder(self) -> None:
        for online, key in ((self.backbone, self.key_backbone), (self.projector, self.key_projector)):
            for p_o, p_k in zip(online.parameters(), key.parameters()):
                p_k.mul_(self.momentum).add_(p_o.detach(), alpha=1 - self.momentum)
            for b_o, b_k in zip(online.buffers(), key.buffers()):
                b_k.copy_(b_o)

    def _info_nce(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        logits = q @ k.t() / self.temperature
        if self.queue_size:
            # a copy: the queue is updated in place before backward runs
            logits = torch.cat([logits, q @ self.queue.clone().t() / self.temperature], dim=1)
        return F.cross_entropy(logits, torch.arange(q.shape[0], device=q.device)) * 2 * self.temperature

    def _nt_xent(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """SimCLR's loss: each view's positive is its twin, the other 2N-2 views are negatives."""
        z = F.normalize(torch.cat([z1, z2]), dim=1)
        n = z1.shape[0]
        logits = z @ z.t() / self.temperature
        logits.fill_diagonal_(float("-inf"))
        targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
        return F.cross_entropy(logits, targets)

    def loss(self, images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        del labels  # self-supervised
        device = device_of(self)
        v1 = to_device(augment(images, gen, strong=True), device)
        v2 = to_device(augment(images, gen, strong=True), device)
        if self.momentum == 0:  # no key encoder: SimCLR
            z = self.projector(pooled(self.backbone, torch.cat([v1, v2])))
            return self._nt_xent(*z.chunk(2))
        q1 = self.predictor(self.projector(pooled(self.backbone, v1)))
        q2 = self.predictor(self.projector(pooled(self.backbone, v2)))
        with torch.no_grad():
            self.key_backbone.train(self.training)
            k1 = self.key_projector(pooled(self.key_backbone, v1))
            k2 = self.key_projector(pooled(self.key_backbone, v2))
        loss = self._info_nce(q1, k2) + self._info_nce(q2, k1)
        if self.queue_size:
            self._enqueue(torch.cat([k1, k2]))
        return loss

    def after_optimizer_step(self) -> None:
        if self.momentum > 0:
            self.update_key_encoder()


class MaskedImageModeling(Objective):
    """SimMIM on a timm Swin/ConvNeXt: masking is applied at the stride-4 token level."""

    def __init__(
        self,
        backbone: nn.Module,
        image_size: int,
        mask_patch: int = 16,
        mask_ratio: float = 0.5,
        norm_target: bool = True,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.embed_dim = backbone.feature_info[0]["num_chs"]
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, self.embed_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.stride = backbone.feature_info[-1]["reduction"]
        self.decoder = nn.Sequential(
            nn.Conv2d(backbone.num_features, self.stride**2 * 3, 1), nn.PixelShuffle(self.stride)
        )
        self.mask_patch = mask_patch
        self.mask_ratio = mask_ratio
        self.grid = image_size // mask_patch
        self.norm_target = norm_target

    def no_weight_decay(self) -> set[str]:
        return {"mask_token"}

    def random_mask(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """(N, grid, grid) bool, exactly ``mask_ratio`` of the mask patches set."""
        count = int(math.ceil(self.grid * self.grid * self.mask_ratio))
        order = torch.rand(n, self.grid * self.grid, generator=gen).argsort(dim=1)
        mask = torch.zeros(n, self.grid * self.grid, dtype=torch.bool)
        mask.scatter_(1, order[:, :count], True)
        return mask.view(n, self.grid, self.grid)

    def _tokens_masked(self, x: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
        tokens = self.backbone.patch_embed(x)  # NHWC for Swin
        token_mask = F.interpolate(pixel_mask[:, None].float(), size=tokens.shape[1:3], mode="nearest")[:, 0]
        w = token_mask[..., None]
        return tokens * (1 - w) + self.mask_token * w

    def _normalized_patches(self, x: torch.Tensor) -> torch.Tensor:
        """Each mask patch standardized per channel (MAE's norm_pix_loss): the target is the
        structure inside a patch, not its colour, which is random in the shapes data."""
        p = self.mask_patch
        n, c, h, w = x.shape
        patches = x.reshape(n, c, h // p, p, w // p, p)
        mean = patches.mean(dim=(3, 5), keepdim=True)
        var = patches.var(dim=(3, 5), keepdim=True)
        return ((patches - mean) / (var + 1e-2).sqrt()).reshape(n, c, h, w)

    def loss(self, images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        del labels
        device = device_of(self)
        x = to_device(augment(images, gen), device)
        mask = to_device(self.random_mask(x.shape[0], gen), device)
        pixel_mask = mask.repeat_interleave(self.mask_patch, 1).repeat_interleave(self.mask_patch, 2)
        # Masked pixels are also blanked at the input so the conv stem cannot see them.
        x_in = x * (~pixel_mask)[:, None]
        tokens = self._tokens_masked(x_in, pixel_mask)
        feats = self.backbone.norm(self.backbone.layers(tokens)).permute(0, 3, 1, 2)
        recon = self.decoder(feats)
        target = self._normalized_patches(x) if self.norm_target else x
        per_pixel = (recon - target).abs().mean(dim=1)
        return (per_pixel * pixel_mask).sum() / pixel_mask.sum().clamp(min=1)


def build_objective(objective: str, backbone: nn.Module, num_classes: int, image_size: int, options: dict) -> Objective:
    if objective == "supervised":
        return Supervised(backbone, num_classes, options.get("label_smoothing", 0.1))
    if objective == "contrastive":
        return Contrastive(
            backbone,
            temperature=options.get("temperature", 0.2),
            momentum=options.get("momentum", 0.99),
            queue_size=options.get("queue_size", 0),
        )
    if objective == "mim":
        return MaskedImageModeling(
            backbone,
            image_size,
            options.get("mask_patch", 16),
            options.get("mask_ratio", 0.5),
            options.get("norm_target", True),
        )
    raise KeyError(f"unknown pretraining objective {objective!r}")
