"""Backbone families (one module each), their registry, and the frozen multi-level wrapper."""

from frozenbench.models.backbone import Backbone, FeatureSpec
from frozenbench.models.registry import ArchSpec, build_arch, get_arch, list_archs

__all__ = ["ArchSpec", "Backbone", "FeatureSpec", "build_arch", "get_arch", "list_archs"]
