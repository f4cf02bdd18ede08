"""``frozenbench train``: train the head (frozen) or the whole model (finetune) of one study cell."""

from __future__ import annotations

import argparse
import json

from frozenbench.errors import UserError

CELL_FORM = "--config FILE --cell TASK/BACKBONE/MODE/HEAD"


def add_cell_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cell",
        metavar="TASK/BACKBONE/MODE/HEAD",
        help="one cell of --config by name: its spec, checkpoint, mode, run folder and seed as the DAG gives them",
    )
    parser.add_argument("--config", help="the study config --cell is read from (default config.yaml)")
    parser.add_argument("--spec", help="the task entry as JSON: type, data, img_size, head, train (or --cell)")
    parser.add_argument("--checkpoint", help="canonical backbone checkpoint (or --cell)")
    parser.add_argument("--mode", choices=["frozen", "finetune"], help="(or --cell)")
    parser.add_argument("--run-dir", help="(or --cell)")
    parser.add_argument("--seed", type=int, default=None, help="default: the config's with --cell, else 0")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPUs of the job, shared by its ranks on this node (0: all this process may use)",
    )
    add_device_arguments(parser)


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    from frozenbench.engine.device import DEVICE_CHOICES

    parser.add_argument(
        "--device",
        default="auto",
        choices=DEVICE_CHOICES,
        help="auto: this rank's GPU when torch sees one, else the CPU",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="DataLoader worker processes per rank (0: load batches in the training process)",
    )


def resolve_cell(args: argparse.Namespace, evaluation: bool = False) -> argparse.Namespace:
    """Fill a ``--cell`` invocation's spec, checkpoint, mode, run folder, seed (and for evaluation
    metrics file and labels) from its config; an explicit option wins. Without ``--cell`` the four
    cell options are required, as the DAG's rules give them."""
    if args.cell is None:
        missing = [
            f"--{name.replace('_', '-')}"
            for name in ("spec", "checkpoint", "mode", "run_dir")
            if not getattr(args, name)
        ]
        if missing:
            raise UserError(f"{' '.join(missing)} required (or name one cell: {CELL_FORM})")
        args.seed = 0 if args.seed is None else args.seed
        return args
    from frozenbench.config import load_config
    from frozenbench.study import cell_run

    resolved = cell_run(load_config(args.config or "config.yaml"), args.cell, evaluation=evaluation)
    args.spec = args.spec or json.dumps(resolved["spec"], sort_keys=True)
    args.checkpoint = args.checkpoint or resolved["checkpoint"]
    args.mode = args.mode or resolved["mode"]
    args.run_dir = args.run_dir or resolved["run_dir"]
    args.seed = resolved["seed"] if args.seed is None else args.seed
    if evaluation:
        args.out = args.out or resolved["out"]
        args.label = [f"{k}={v}" for k, v in resolved["labels"].items()] + list(args.label)
    return args


def cell_of(args: argparse.Namespace):
    """The :class:`~frozenbench.cells.run.CellRun` of a resolved invocation, the spec read as a
    :class:`~frozenbench.cells.spec.CellSpec` (a malformed one is an error naming ``--spec``)."""
    from frozenbench.cells.run import CellRun
    from frozenbench.cells.spec import CellSpec

    return CellRun(CellSpec.from_json(args.spec), args.checkpoint, args.mode, args.run_dir, args.seed)


def set_threads(args: argparse.Namespace) -> int:
    """Torch threads of this rank from the job's CPUs (see threads_per_rank); returns them."""
    import torch

    from frozenbench.engine.device import threads_per_rank

    threads = threads_per_rank(args.threads, args.workers)
    torch.set_num_threads(threads)
    return threads


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_cell_arguments(parser)
    parser.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="ranks per node (one per GPU): > 1 relaunches itself under torchrun, DeepSpeed ZeRO",
    )
    parser.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="> 1: inside a Slurm allocation, one torchrun per node through srun (c10d rendezvous)",
    )
    parser.add_argument(
        "--gpus-per-node",
        type=int,
        default=0,
        help="GPUs the job holds per node, asked of the srun step of a multi-node launch (0: none)",
    )


def _rank_arguments(args: argparse.Namespace) -> list[str]:
    """This training's own arguments, as each rank gets them."""
    return [
        "-m",
        "frozenbench.cli",
        "train",
        "--spec",
        args.spec,
        "--checkpoint",
        args.checkpoint,
        "--mode",
        args.mode,
        "--run-dir",
        args.run_dir,
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
        "--workers",
        str(args.workers),
    ]


def allocation_hosts(environ: dict[str, str]) -> list[str]:
    """The hosts of this job's Slurm allocation, first host first.

    Read from the job itself (``scontrol show job``) when the job id is known: Snakemake's Slurm
    job-step plugin runs a job's command with every ``SLURM_*`` variable but the job id removed, so
    ``SLURM_JOB_NODELIST`` is not there; it is used when present and scontrol is not."""
    import shutil
    import subprocess

    nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST")
    job = environ.get("SLURM_JOB_ID")
    if shutil.which("scontrol") is None:
        if nodelist and "[" not in nodelist:  # a plain list ("node1,node2") needs no scontrol to expand
            return nodelist.split(",")
        return []
    if not nodelist and job:
        shown = subprocess.run(
            ["scontrol", "show", "job", "--oneliner", job], capture_output=True, text=True, timeout=60
        ).stdout
        fields = dict(part.split("=", 1) for part in shown.split() if "=" in part)
        nodelist = fields.get("NodeList")
        if nodelist in (None, "(null)"):
            nodelist = None
    if not nodelist:
        return []
    return subprocess.run(
        ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()


def rendezvous_host(environ: dict[str, str]) -> str:
    """The first host of the Slurm allocation (where rank 0's torchrun hosts the c10d store)."""
    import socket

    hosts = allocation_hosts(environ)
    return hosts[0] if hosts else socket.gethostname()


def srun_step_options(args: argparse.Namespace, environ: dict[str, str]) -> list[str]:
    """The srun options of a multi-node launch, every one explicit: one task (a torchrun agent) on
    each of ``--nodes`` nodes, with the job's CPUs (``--threads``, the rule's threads, which the
    job was submitted with) and its GPUs per node. Nothing is left to ``SLURM_*`` / ``SRUN_*``
    variables: the job-step plugin strips them, and Slurm >= 22.05 does not pass the job's
    ``--cpus-per-task`` to a step anyway, so what a step without it gets depends on the site's step
    defaults (on the test cluster's 22.05.8 it got the job's CPUs; docs/cluster.md)."""
    from frozenbench.errors import UserError

    cpus = args.threads or int(environ.get("SLURM_CPUS_PER_TASK", "0"))
    if cpus <= 0:
        raise UserError(
            f"--nodes {args.nodes}: give the job's CPUs per node with --threads (the srun step must ask for them)"
        )
    options = [
        f"--nodes={args.nodes}",
        f"--ntasks={args.nodes}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={cpus}",
        "--kill-on-bad-exit=1",
    ]
    if args.gpus_per_node > 0:
        options.append(f"--gpus-per-node={args.gpus_per_node}")
    return options


def launch_command(args: argparse.Namespace, environ: dict[str, str]) -> list[str] | None:
    """How this training starts its ranks, or None to train in this process (one rank, or a rank
    a launcher started).

    - ``--nodes N > 1``: ``srun`` starts one torchrun agent per node (:func:`srun_step_options`),
      each agent ``--nproc`` ranks; the agents meet through c10d rendezvous on the allocation's
      first host, on a port and id taken from the job id, so a requeued job (same id) meets again.
      DeepSpeed ZeRO then spans all ``N x nproc`` ranks.
    - ``--nproc > 1`` on one node: ``torchrun --standalone``.
    """
    import sys

    from frozenbench.errors import UserError

    if "WORLD_SIZE" in environ:
        return None
    if args.nodes > 1:
        job = environ.get("SLURM_JOB_ID")
        if job is None:
            raise UserError(f"--nodes {args.nodes} needs a Slurm allocation of {args.nodes} nodes (SLURM_JOB_ID unset)")
        return [
            "srun",
            *srun_step_options(args, environ),
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nnodes={args.nodes}",
            f"--nproc_per_node={args.nproc}",
            "--rdzv_backend=c10d",
            f"--rdzv_endpoint={rendezvous_host(environ)}:{29400 + int(job) % 1000}",
            f"--rdzv_id=frozenbench-{job}",
            *_rank_arguments(args),
        ]
    if args.nproc > 1:
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={args.nproc}",
            *_rank_arguments(args),
        ]
    return None


def run(args: argparse.Namespace) -> int:
    import os
    import subprocess

    from frozenbench.cells.run import train_cell

    resolve_cell(args)
    command = launch_command(args, dict(os.environ))
    if command is not None:
        return subprocess.call(command)

    set_threads(args)
    summary = train_cell(cell_of(args), device=args.device, workers=args.workers)
    print(json.dumps(summary))
    return 0
