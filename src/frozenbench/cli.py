"""The ``frozenbench`` command line: one subcommand per pipeline step.

Snakemake rules call exactly one subcommand each. Subcommand modules are imported
only when chosen, so ``frozenbench --help`` and light steps do not pay for torch
and the OpenMMLab stack.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# subcommand name -> (module under frozenbench.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "check-config": ("check_config", "validate a study config against the schema"),
    "synth": ("synth", "generate a mini dataset (COCO, ADE20K, Kinetics or ImageFolder format) from a seed"),
    "validate": ("validate", "check a dataset folder and report every problem (names the file)"),
    "download": ("download", "fetch a dataset's files: resume, retries, checksum verified before use"),
    "prepare": ("prepare", "build a dataset folder from verified downloads"),
    "pretrain": ("pretrain", "pretrain a mini backbone (supervised, contrastive, mim or random) + probe"),
    "train": ("train", "train one study cell: a task head on a frozen (or fine-tuned) backbone"),
    "evaluate": ("evaluate", "evaluate a trained cell on the validation split, write metrics.json"),
    "submit": ("submit", "predict COCO test-dev with a trained cell, write the evaluation server's upload zip"),
    "tables": ("tables", "build the study tables (Markdown, LaTeX, CSV) from results/**/metrics.json"),
    "cost": ("cost", "GPU-hours per cell and for the whole study, from a benchmark record"),
    "report": ("report", "one self-contained HTML page of the study tables, figures and probes"),
    "probe-report": ("probe_report", "tabulate pretraining probes with margins over the random backbone"),
    "fetch-checkpoint": ("fetch_checkpoint", "download a published checkpoint, verified by checksum"),
    "convert-checkpoint": ("convert_checkpoint", "convert a published checkpoint to the canonical format"),
    "synth-checkpoint": ("synth_checkpoint", "write seeded random weights in a published checkpoint layout"),
    "preflight": ("preflight", "check a Slurm site before submitting the study (exit 1 on a problem)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="frozenbench", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _version() -> str:
    from frozenbench import __version__

    return __version__


# Output arguments of the subcommands; each has one writer, the job that names it. (Training run
# folders are swept by the trainer itself, on rank 0 only: every rank runs this entry point.)
OUTPUT_ARGUMENTS = ("out", "out_json", "out_md")


def _collect_leftovers(args: argparse.Namespace) -> None:
    """Remove the temporary siblings that a killed earlier run of this job (SIGKILL, a lost node)
    left beside its outputs, and inside an output folder beside its files."""
    from pathlib import Path

    from frozenbench.utils.atomic import remove_temporaries

    for name in OUTPUT_ARGUMENTS:
        value = getattr(args, name, None)
        if isinstance(value, str) and value:
            remove_temporaries(value)
            if Path(value).is_dir():
                remove_temporaries(value, "*")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints help / version / an unknown-command error
        return 2
    name = argv[0]
    module = importlib.import_module(f"frozenbench.commands.{COMMANDS[name][0]}")
    sub = argparse.ArgumentParser(prog=f"frozenbench {name}", description=COMMANDS[name][1])
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    from frozenbench.errors import UserError
    from frozenbench.utils import signals

    signals.install()  # SIGTERM (Slurm's time limit, preemption) runs every cleanup, then exits 143
    _collect_leftovers(args)

    try:
        return int(module.run(args) or 0)
    except UserError as err:
        print(f"frozenbench {name}: error: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # the reader went away (`frozenbench check-config x | head`): as any Unix tool, stop
        # quietly; stdout points at /dev/null so the interpreter's final flush cannot raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
