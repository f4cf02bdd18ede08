"""The dataset spec a data subcommand works on: from --spec JSON (rules) or --config + --dataset (by hand)."""

from __future__ import annotations

import argparse
import json

from frozenbench.config import load_config, validate_config
from frozenbench.errors import UserError

_PLACEHOLDER_PATHS = {k: k for k in ("data", "checkpoints", "runs", "results", "tables", "logs")}


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--spec", help="the dataset's config entry as JSON (what the Snakemake rule passes)")
    source.add_argument("--config", help="a study config file; use with --dataset")
    parser.add_argument("--dataset", help="dataset name in --config")


def resolve_spec(args: argparse.Namespace) -> dict:
    """The validated spec, defaults filled, whichever way it was given."""
    if args.spec is not None:
        try:
            spec = json.loads(args.spec)
        except json.JSONDecodeError as err:
            raise UserError(f"--spec is not valid JSON: {err}") from None
        wrapper = {"seed": 0, "paths": _PLACEHOLDER_PATHS, "datasets": {"spec": spec}}
        return validate_config(wrapper, source="--spec")["datasets"]["spec"]
    if not args.dataset:
        raise UserError("--config needs --dataset")
    config = load_config(args.config)
    if args.dataset not in config["datasets"]:
        raise UserError(f"{args.config}: no dataset {args.dataset!r} (have: {', '.join(config['datasets'])})")
    return config["datasets"][args.dataset]
