"""Subcommand modules: each defines ``add_arguments(parser)`` and ``run(args) -> int``."""
