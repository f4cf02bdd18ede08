"""``frozenbench synth``: generate one mini dataset in its real format."""

from __future__ import annotations

import argparse
import json

from frozenbench.config import load_config, validate_config
from frozenbench.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--spec", help="the dataset's config entry as JSON (what the Snakemake rule passes)")
    source.add_argument("--config", help="a study config file; use with --dataset")
    parser.add_argument("--dataset", help="dataset name in --config")
    parser.add_argument("--out", required=True, help="output folder (created atomically)")


def resolve_spec(args: argparse.Namespace) -> dict:
    if args.spec is not None:
        try:
            spec = json.loads(args.spec)
        except json.JSONDecodeError as err:
            raise UserError(f"--spec is not valid JSON: {err}") from None
        wrapper = validate_config({"seed": 0, "paths": {k: k for k in
                                   ("data", "checkpoints", "runs", "results", "tables", "logs")},
                                   "datasets": {"spec": spec}}, source="--spec")
        return wrapper["datasets"]["spec"]
    if not args.dataset:
        raise UserError("--config needs --dataset")
    config = load_config(args.config)
    if args.dataset not in config["datasets"]:
        raise UserError(f"{args.config}: no dataset {args.dataset!r} (have: {', '.join(config['datasets'])})")
    return config["datasets"][args.dataset]


def run(args: argparse.Namespace) -> int:
    from frozenbench.data.synth import synthesize

    spec = resolve_spec(args)
    if spec["source"] != "synth":
        raise UserError(f"dataset has source {spec['source']!r}; use `frozenbench download` / `prepare`")
    counts = synthesize(spec, args.out)
    print(json.dumps({"out": args.out, "format": spec["format"], "counts": counts}))
    return 0
