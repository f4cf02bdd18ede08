"""Checkpoints: safe loading, source-layout conversion, the canonical backbone format."""

from frozenbench.checkpoint.convert import ConversionError, convert_file, convert_state_dict, load_backbone_state
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
    "load_backbone_state",
    "safe_load",
    "save_backbone",
    "save_random_backbone",
    "sha256_of",
]
