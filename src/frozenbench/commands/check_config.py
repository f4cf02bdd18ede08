"""``frozenbench check-config``: validate a study config and print it with defaults filled in."""

from __future__ import annotations

import argparse

import yaml

from frozenbench.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", default="config.yaml", help="study config (default: config.yaml)")
    parser.add_argument("--print", action="store_true", help="print the config with schema defaults filled in")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.print:
        print(yaml.safe_dump(config, sort_keys=False), end="")
    else:
        print(f"{args.config}: ok ({len(config['datasets'])} datasets)")
    return 0
