"""Video action recognition on a frozen image backbone (mmaction2 modules).

``FramewiseBackbone`` runs the image backbone on every frame in one batched call
(N*T frames) and returns space-time tokens; ``TemporalTransformerHead`` trains N
transformer blocks over them (N = 0: mean pooling + linear classifier).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from mmaction.models.heads.base import BaseHead

from frozenbench.openmmlab.backbone import FrozenbenchBackbone


class FramewiseBackbone(FrozenbenchBackbone):
    """(N, C, T, H, W) clips -> (N, T, S, C') tokens of the last stage (S = h*w, or 1 when pooled)."""

    def __init__(self, *args, spatial_tokens: bool = True, **kwargs) -> None:
        kwargs.setdefault("out_indices", (3,))
        super().__init__(*args, **kwargs)
        self.spatial_tokens = spatial_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(n * t, c, h, w)
        feat = super().forward(frames)[-1]  # (N*T, C', h', w'), after any extra blocks
        tokens = feat.flatten(2).transpose(1, 2) if self.spatial_tokens else feat.mean(dim=(2, 3))[:, None]
        return tokens.reshape(n, t, tokens.shape[1], tokens.shape[2])


class TemporalTransformerHead(BaseHead):
    """Learned space and time position embeddings, ``num_blocks`` pre-norm transformer blocks, mean pool, linear."""

    def __init__(self, num_classes: int, in_channels: int, num_frames: int, num_spatial: int, num_blocks: int = 2,
                 width: int = 128, num_heads: int = 4, dropout: float = 0.0, **kwargs) -> None:
        super().__init__(num_classes, in_channels, **kwargs)
        self.proj = nn.Linear(in_channels, width)
        self.time_embed = nn.Parameter(torch.zeros(1, num_frames, 1, width))
        self.space_embed = nn.Parameter(torch.zeros(1, 1, num_spatial, width))
        nn.init.trunc_normal_(self.time_embed, std=0.02)
        nn.init.trunc_normal_(self.space_embed, std=0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(width, num_heads, dim_feedforward=width * 4, dropout=dropout,
                                       activation="gelu", batch_first=True, norm_first=True)
            for _ in range(num_blocks))
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, num_classes)

    def init_weights(self) -> None:  # parameters are initialised in __init__
        pass

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        n, t, s, _ = x.shape
        tokens = self.proj(x) + self.time_embed[:, :t] + self.space_embed[:, :, :s]
        tokens = tokens.reshape(n, t * s, -1)
        for block in self.blocks:
            tokens = block(tokens)
        return self.fc(self.norm(tokens).mean(dim=1))


def register_video_modules() -> None:
    from mmaction.registry import MODELS

    MODELS.register_module(name="FramewiseBackbone", module=FramewiseBackbone, force=True)
    MODELS.register_module(name="TemporalTransformerHead", module=TemporalTransformerHead, force=True)
