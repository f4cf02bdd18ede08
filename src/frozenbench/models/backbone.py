"""A multi-level backbone that can stay frozen while the heads on top of it train.

Frozen means all of:
- every parameter has ``requires_grad=False`` (so no optimizer ever sees one);
- the module stays in eval mode even when a detector calls ``.train()``
  (BatchNorm statistics and dropout do not move);
- the forward runs under ``torch.no_grad()``, so no activation is kept for backward;
- optionally under bf16 autocast (features are returned in fp32 for the heads);
- optionally compiled with the weights frozen into the graph (``compile``).

A fine-tuned backbone may recompute its blocks' activations in backward instead of keeping them
(``activation_checkpointing``; docs/memory.md measures what it saves).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from frozenbench.errors import UserError
from frozenbench.models.feature_cache import FeatureCache
from frozenbench.models.registry import FILTER_FAILURES, build_arch, get_arch, pixel_units


# What the backbones compute from given weights and input, as a version: a head trained on other
# features is not this run's (it enters every run's fingerprint, cells/run.py). Bump it whenever a
# forward changes its output for the same weights. 2: Swin / SwinV2 pad before shifting, DINOv2
# register and MAE models resample positions as their official code does (issue 25). 3: SwinV2
# B / L / G normalise the last stage's position coordinates by its pretraining window (6), as the
# official transfer code does (issue 29).
FEATURES_VERSION = 3


@dataclass(frozen=True)
class FeatureSpec:
    """Channels and stride of one output level (cf. detectron2's ShapeSpec)."""

    channels: int
    stride: int


class Backbone(nn.Module):
    """Features at strides 4-32 (NCHW) from a registered architecture.

    Args:
        arch: registry name, e.g. ``swin_tiny``, ``convstem_swin_tiny`` or ``vit_small_patch14_dinov2``.
        img_size: input size the model is built for: it fixes each Swin stage's window and shift; any
            other input size also works (padded to the window or patch multiple, masks and position
            embeddings built for it).
        out_indices: levels to return (stages, or blocks of a plain ViT; negative counts from the
            last); default: the family's ``feature_levels``.
        frozen: freeze as described in the module docstring.
        bf16: run the frozen forward under bf16 autocast.
        state_dict: backbone weights in timm key names (see :mod:`frozenbench.checkpoint`).
        feature_cache: frozen only: reuse the features of inputs seen before
            (:class:`frozenbench.models.feature_cache.FeatureCache`).
        compile: frozen only: run the forward through ``torch.compile`` with Inductor's
            ``freezing`` (weights become constants: prepacked for oneDNN on CPU, folded) and its
            C++ wrapper. Measured on 2 CPU cores (bench/backbone_throughput.py): Swin-T forward
            1.05-1.26x faster than eager across runs, after a one-off ~35 s compile per input
            shape (a smaller last batch is another shape).
        activation_checkpointing: fine-tuned only: see :meth:`set_activation_checkpointing`.
        arch_options: builder options the weights take (a weights tag's, e.g. MAE's
            ``pos_interpolation``); what :meth:`from_checkpoint` reads from the file.
        normalization: ``(mean, std)`` in [0, 1] units of the weights' inputs; default: the
            architecture's.
        weights_source: the checkpoint file ``state_dict`` was read from: the state dict is then
            adapted to this build by the family's checkpoint filter and loaded key by key, a missing
            or unexpected key an error naming the file (:meth:`from_checkpoint` sets it).

    Build one from a converted checkpoint with :meth:`from_checkpoint`.
    """

    COMPILE_OPTIONS = {"freezing": True, "cpp_wrapper": True}

    def __init__(
        self,
        arch: str,
        img_size: int | None = None,
        out_indices: Sequence[int] | None = None,
        frozen: bool = True,
        bf16: bool = False,
        state_dict: dict[str, torch.Tensor] | None = None,
        feature_cache: bool = False,
        compile: bool = False,
        activation_checkpointing: bool = False,
        arch_options: Mapping[str, Any] | None = None,
        normalization: tuple[Sequence[float], Sequence[float]] | None = None,
        weights_source: str | None = None,
    ) -> None:
        super().__init__()
        spec = get_arch(arch)
        self.arch = arch
        self.family = spec.family
        self.mean, self.std = (tuple(v) for v in normalization) if normalization else (spec.mean, spec.std)
        self.model = build_arch(arch, img_size, **dict(arch_options or {}))
        # timm leaves fused attention (SDPA) off for Swin's window attention ("experimental");
        # measured here it makes the whole Swin-T forward 1.4x faster on CPU (bench/, docs/performance.md).
        for module in self.model.modules():
            if hasattr(module, "fused_attn"):
                module.fused_attn = True
        if state_dict is not None and weights_source is not None:
            self._load_checkpoint(state_dict, weights_source)
        elif state_dict is not None:
            self.model.load_state_dict(state_dict, strict=True)
        info = self.model.feature_info
        levels = self.family.feature_levels(self.model) if out_indices is None else out_indices
        # absolute indices: "the last block" is the same block before and after pruning
        self.out_indices = [i % len(info) for i in levels]
        # The classifier head is not part of multi-level features, nor is the final norm unless the
        # family takes its levels through it; blocks after the last level are dropped.
        self.model.prune_intermediate_layers(
            indices=self.out_indices, prune_norm=not self.family.intermediate_norm, prune_head=True
        )
        # Inputs are padded (right and bottom) to a multiple of the stem's stride, the one size
        # constraint left once the attention masks follow the input.
        self.input_multiple = min(int(level["reduction"]) for level in info)
        self.feature_specs = [FeatureSpec(int(info[i]["num_chs"]), int(info[i]["reduction"])) for i in self.out_indices]
        self.frozen = frozen
        self.bf16 = bf16
        # only a frozen backbone's features are a function of the input alone
        self.feature_cache = FeatureCache() if feature_cache and frozen else None
        # freezing bakes the weights in: only sound while they cannot change
        self.compile = compile and frozen
        self._compiled = None
        if frozen:
            self.model.requires_grad_(False)
            self.model.eval()
        self.activation_checkpointing = False
        self.set_activation_checkpointing(activation_checkpointing)

    @classmethod
    def from_checkpoint(cls, path: str | Path, arch: str | None = None, **options: Any) -> Backbone:
        """The backbone of a canonical checkpoint (``checkpoints/{name}.pth``), built once.

        The file is read once; its weights are adapted to this build (``img_size``'s windows and
        grids) by the family's checkpoint filter against the model itself and loaded key by key:
        a missing or unexpected key is an error naming the file and the keys. The input
        normalisation and builder options the file records are the weights' (the architecture's
        defaults where it records none). ``arch``, when given (the config's), must be the file's;
        None takes the file's. ``options``: the other arguments of :class:`Backbone`.

        The model's random initialisation, overwritten by the weights at once, draws from a forked
        generator: building it leaves the global RNG, and so the heads initialised after it, as the
        seed set them."""
        from frozenbench.checkpoint.io import load_backbone

        payload = load_backbone(path)
        recorded = payload["arch"]
        try:
            spec = get_arch(recorded)
            wanted = get_arch(arch).name if arch is not None else spec.name
        except KeyError as err:
            raise UserError(f"{path}: {err.args[0]}") from None
        if wanted != spec.name:
            raise UserError(f"{path}: holds a {recorded} backbone, not {arch}")
        arch_options = payload.get("arch_options", {})
        unknown = sorted(set(arch_options) - spec.family.weight_options)
        if unknown:
            allowed = ", ".join(sorted(spec.family.weight_options)) or "none"
            raise UserError(
                f"{path}: arch_options {', '.join(unknown)}: not an option {spec.family.name} weights set "
                f"(the family's weights tags set: {allowed})"
            )
        recorded_norm = payload.get("normalization")
        normalization = (recorded_norm["mean"], recorded_norm["std"]) if recorded_norm else None
        with torch.random.fork_rng(devices=[]):
            return cls(
                spec.name,
                state_dict=payload["state_dict"],
                arch_options=arch_options,
                normalization=normalization,
                weights_source=str(path),
                **options,
            )

    def _load_checkpoint(self, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
        """A canonical checkpoint's weights into the freshly built model (before it is pruned, so
        the file's keys are checked against the whole architecture)."""
        try:
            adapted = self.family.checkpoint_filter(dict(state_dict), self.model)
        except FILTER_FAILURES as err:
            raise UserError(f"{source}: its weights do not fit {self.arch}: {type(err).__name__}: {err}") from None
        try:
            result = self.model.load_state_dict(adapted, strict=False)
        except RuntimeError as err:  # shapes: torch raises on a mismatch even when not strict
            detail = " ".join(str(err).split())
            raise UserError(f"{source}: its weights do not fit {self.arch}: {detail}") from None
        # strict but for what a canonical checkpoint never holds (rebuilt buffers, the classifier)
        missing = sorted(k for k in result.missing_keys if self.family.stored(k))
        unexpected = sorted(result.unexpected_keys)
        problems = [
            f"{what} {len(keys)} key(s): {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected))
            if keys
        ]
        if problems:
            raise UserError(f"{source}: does not load into {self.arch}: {'; '.join(problems)}")

    def set_activation_checkpointing(self, enable: bool = True) -> None:
        """Keep only each block's input for backward and recompute the block's activations there
        (timm's ``set_grad_checkpointing``), trading one more forward of the blocks for memory.

        The features path (``forward_intermediates``) honours it in every family: Swin, SwinV2 and
        ConvNeXt checkpoint inside their stages' forward, ViT and EVA per block in
        ``forward_intermediates`` itself; timm calls ``torch.utils.checkpoint`` non-reentrant
        (``use_reentrant=False``) unless the environment sets ``TIMM_REENTRANT_CKPT``.
        tests/test_memory_estimate.py checks the saved activations shrink in each family.
        A frozen backbone runs under ``no_grad`` and keeps no activation: it stays off there."""
        self.activation_checkpointing = bool(enable) and not self.frozen
        self.model.set_grad_checkpointing(self.activation_checkpointing)

    @property
    def needs_pyramid(self) -> bool:
        """The levels share one stride: dense heads need a simple feature pyramid on top."""
        return self.family.pyramid

    def layer_groups(self) -> tuple[dict[str, int], int]:
        """({parameter name: layer id}, L) for layer-wise lr decay: 0 for the stem, 1..L for the blocks
        in depth order (a final norm goes with the last block, as timm groups it)."""
        ids = {f"model.{name}": lid for name, lid in self.family.layer_groups(self.model).items()}
        return ids, len({lid for lid in ids.values() if lid > 0})

    def no_weight_decay(self) -> set[str]:
        return {f"model.{name}" for name in self.family.no_weight_decay(self.model)}

    def pixel_normalization(self) -> dict[str, list[float]]:
        """``mean`` / ``std`` of the weights' inputs in [0, 255] pixel units (RGB), the form
        OpenMMLab's data preprocessors take."""
        mean, std = pixel_units(self.mean, self.std)
        return {"mean": list(mean), "std": list(std)}

    @property
    def channels(self) -> list[int]:
        return [s.channels for s in self.feature_specs]

    @property
    def strides(self) -> list[int]:
        return [s.stride for s in self.feature_specs]

    def train(self, mode: bool = True) -> "Backbone":
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    def _autocast(self, x: torch.Tensor) -> contextlib.AbstractContextManager:
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=x.device.type, dtype=torch.bfloat16)

    def _frozen_forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        forward = self.model.forward_intermediates
        if self.compile:
            if self._compiled is None:
                self._compiled = torch.compile(forward, dynamic=False, options=self.COMPILE_OPTIONS)
            forward = self._compiled
        with torch.no_grad(), self._autocast(x):
            feats = forward(x, indices=self.out_indices, norm=self.family.intermediate_norm, intermediates_only=True)
        return [f.float() for f in feats]

    def pad_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` zero-padded on the right and bottom to a multiple of :attr:`input_multiple`."""
        m = self.input_multiple
        pad_h, pad_w = -x.shape[-2] % m, -x.shape[-1] % m
        return torch.nn.functional.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.pad_input(x)
        if self.frozen:
            if self.feature_cache is not None:
                return self.feature_cache(x, self._frozen_forward)
            return self._frozen_forward(x)
        with self._autocast(x):
            feats = self.model.forward_intermediates(
                x, indices=self.out_indices, norm=self.family.intermediate_norm, intermediates_only=True
            )
        return [f.float() for f in feats]


def apply_memory_options(model: nn.Module, spec: Mapping[str, Any]) -> nn.Module:
    """A cell spec's memory settings (``activation_checkpointing``, ``frame_chunk``; both absent from
    a spec that does not set them) applied to a built task model: every :class:`Backbone` in it
    checkpoints its activations when fine-tuned, every module that feeds its backbone frames in
    chunks (the video ``FramewiseBackbone``, which has a ``frame_chunk`` attribute) takes that many
    frames per call. Returns ``model``."""
    checkpointing = bool(spec.get("activation_checkpointing", False))
    frame_chunk = int(spec.get("frame_chunk", 0))
    for module in model.modules():
        if isinstance(module, Backbone):
            module.set_activation_checkpointing(checkpointing)
        if frame_chunk and hasattr(module, "frame_chunk"):
            module.frame_chunk = frame_chunk
    return model
