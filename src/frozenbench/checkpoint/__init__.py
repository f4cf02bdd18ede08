"""Checkpoints: safe loading, source-layout conversion, the canonical backbone format.

A converted checkpoint is built into a model by :meth:`frozenbench.models.backbone.Backbone.from_checkpoint`."""

from frozenbench.checkpoint.convert import ConversionError, convert_file, convert_state_dict, weights_settings
from frozenbench.checkpoint.io import (
    UnsafeCheckpoint,
    load_backbone,
    safe_load,
    save_backbone,
    save_random_backbone,
    sha256_of,
)

__all__ = [
    "ConversionError",
    "UnsafeCheckpoint",
    "convert_file",
    "convert_state_dict",
    "load_backbone",
    "safe_load",
    "save_backbone",
    "save_random_backbone",
    "sha256_of",
    "weights_settings",
]
