"""Backbone families (one module each), their registry, and the frozen multi-level wrapper.

Import what you need from its module: :mod:`frozenbench.models.registry` (the torch-light
records: ``get_arch``, ``list_archs``, ``build_arch``) or :mod:`frozenbench.models.backbone`
(``Backbone``, built from a converted checkpoint). This package imports neither itself, so the
checkpoint code can read the registry without loading the backbone that reads checkpoints."""
