"""``frozenbench preflight``: check a Slurm site before submitting the study, one line per check
(``ok`` / ``note`` / ``PROBLEM``, each problem naming the setting or command to change); exit 1 if
any problem. The checks live in :mod:`frozenbench.cluster.preflight` (docs/preflight.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from frozenbench.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="config.yaml", help="study config (default: config.yaml)")
    parser.add_argument(
        "--profile", default="profiles/slurm", help="Snakemake profile the study runs with (default: profiles/slurm)"
    )
    parser.add_argument("--target", default="all_tables", help="the dry run's target (default: all_tables)")
    parser.add_argument(
        "--on-node",
        action="store_true",
        help="also submit a short job (sbatch --wait) to each partition the study uses and run the node checks there",
    )
    parser.add_argument(
        "--node-timeout",
        type=float,
        default=900,
        help="seconds to wait for each node-check job, queueing included (default: 900)",
    )
    parser.add_argument(
        "--node-checks",
        action="store_true",
        help="run the node checks here (what the --on-node job runs): CUDA, GPU count, ops, NCCL, data paths",
    )
    parser.add_argument(
        "--kinds",
        default="train,evaluate,prepare",
        help="--node-checks: the job kinds (compute.<kind>) this node serves (default: all)",
    )


def run(args: argparse.Namespace) -> int:
    from frozenbench.cluster.preflight import PROBLEM, Site, login_checks, node_checks

    site = Site(load_config(args.config), Path(args.config), profile=Path(args.profile) if args.profile else None)
    if args.node_checks:
        findings = node_checks(site, args.kinds.split(","))
    else:
        findings = login_checks(site, target=args.target, on_node=args.on_node, wait_seconds=args.node_timeout)
    problems = 0
    for finding in findings:  # printed as found: the node checks wait for their jobs
        print(finding.line(), flush=True)
        problems += finding.level == PROBLEM
    return 1 if problems else 0
