"""Video action recognition on a frozen image backbone (mmaction2 modules).

``FramewiseBackbone`` runs the image backbone on every frame (N*T frames: one batched call in
training, bounded chunks at test time, or ``frame_chunk`` frames a call in both) and returns
space-time tokens; ``TemporalTransformerHead``
trains N transformer blocks over them (N = 0: mean pooling + linear classifier).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from mmaction.models.heads.base import BaseHead

from frozenbench.openmmlab.backbone import FrozenbenchBackbone


class FramewiseBackbone(FrozenbenchBackbone):
    """(N, C, T, H, W) clips -> (N, T, S, C') tokens of the last stage (S = h*w, or 1 when pooled).

    At test time (eval mode) the N*T frames go through the image backbone ``max_frames_per_call``
    at a time, so memory does not grow with the number of views (clips x crops) of a video; in
    training they go in one call. ``frame_chunk`` (the task's ``frame_chunk``, set on the built
    model by :func:`frozenbench.models.backbone.apply_memory_options`; 0: as just said) takes that
    many frames per call in training and at test time. What it saves (docs/memory.md): a frozen
    backbone runs each chunk under ``no_grad``, so the peak is one chunk's forward; a fine-tuned one
    keeps every chunk's activations for backward, so chunking alone saves nothing there, and with
    activation checkpointing it bounds the recomputation in backward to one chunk's block.
    """

    def __init__(
        self, *args, spatial_tokens: bool = True, max_frames_per_call: int = 64, frame_chunk: int = 0, **kwargs
    ) -> None:
        # the last level's tokens as the backbone computes them: a plain ViT's last block, no pyramid
        kwargs.setdefault("out_indices", (-1,))
        kwargs["pyramid"] = False
        super().__init__(*args, **kwargs)
        self.spatial_tokens = spatial_tokens
        self.max_frames_per_call = max_frames_per_call
        self.frame_chunk = frame_chunk

    def frames_per_call(self, frames: int) -> int:
        """How many of a batch's ``frames`` go through the image backbone in one call."""
        if self.frame_chunk:
            return self.frame_chunk
        return frames if self.training else self.max_frames_per_call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(n * t, c, h, w)
        chunk = self.frames_per_call(frames.shape[0])
        # (N*T, C', h', w') after any extra blocks
        feat = torch.cat([super(FramewiseBackbone, self).forward(part)[-1] for part in frames.split(chunk)])
        tokens = feat.flatten(2).transpose(1, 2) if self.spatial_tokens else feat.mean(dim=(2, 3))[:, None]
        return tokens.reshape(n, t, tokens.shape[1], tokens.shape[2])


class TemporalTransformerHead(BaseHead):
    """Learned space and time position embeddings, ``num_blocks`` pre-norm transformer blocks, mean pool, linear."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        num_frames: int,
        num_spatial: int,
        num_blocks: int = 2,
        width: int = 128,
        num_heads: int = 4,
        dropout: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(num_classes, in_channels, **kwargs)
        self.proj = nn.Linear(in_channels, width)
        self.time_embed = nn.Parameter(torch.zeros(1, num_frames, 1, width))
        self.space_embed = nn.Parameter(torch.zeros(1, 1, num_spatial, width))
        nn.init.trunc_normal_(self.time_embed, std=0.02)
        nn.init.trunc_normal_(self.space_embed, std=0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                width,
                num_heads,
                dim_feedforward=width * 4,
                dropout=dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(num_blocks)
        )
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, num_classes)

    def init_weights(self) -> None:  # parameters are initialised in __init__
        pass

    def _space_embed(self, s: int) -> torch.Tensor:
        """The space embedding for ``s`` tokens: as learned, or resampled bicubically (as ViTs resample
        position embeddings) when the frame's token grid differs from the one it was sized for."""
        if s == self.space_embed.shape[2]:
            return self.space_embed
        side, new_side = math.isqrt(self.space_embed.shape[2]), math.isqrt(s)
        if side * side != self.space_embed.shape[2] or new_side * new_side != s:
            raise ValueError(f"temporal head: cannot resample {self.space_embed.shape[2]} space positions to {s}")
        grid = self.space_embed[0, 0].t().reshape(1, -1, side, side)
        grid = nn.functional.interpolate(grid, size=(new_side, new_side), mode="bicubic", align_corners=False)
        return grid.reshape(1, -1, s).transpose(1, 2)[None]

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        n, t, s, _ = x.shape
        if t > self.time_embed.shape[1]:
            raise ValueError(
                f"temporal head sized for {self.time_embed.shape[1]} frames got clips of {t}: "
                "set the head's num_frames to the data's num_frames"
            )
        tokens = self.proj(x) + self.time_embed[:, :t] + self._space_embed(s)
        tokens = tokens.reshape(n, t * s, -1)
        for block in self.blocks:
            tokens = block(tokens)
        # class scores in fp32 under bf16 autocast: mmaction's loss computes its accuracy in numpy,
        # which has no bf16 (and the softmax of the loss is better taken in fp32 anyway)
        return self.fc(self.norm(tokens).mean(dim=1)).float()


def register_video_modules() -> None:
    from mmaction.registry import MODELS

    MODELS.register_module(name="FramewiseBackbone", module=FramewiseBackbone, force=True)
    MODELS.register_module(name="TemporalTransformerHead", module=TemporalTransformerHead, force=True)
