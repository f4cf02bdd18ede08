"""Reading and writing checkpoints safely.

Every load goes through :func:`safe_load`, which uses ``torch.load(weights_only=True)``:
a file that needs arbitrary unpickling (and so could run code) is refused with an
error naming the file and the offending global. Classes the project needs are
allow-listed one by one (:data:`TRAINING_CHECKPOINT_GLOBALS`); the weights-only default
is never switched off. ``.safetensors`` files are read by safetensors, which has no pickle;
TorchScript archives (OpenAI's CLIP files) by :mod:`frozenbench.checkpoint.torchscript`, which
runs none of their code.

The canonical backbone checkpoint (``checkpoints/{name}.pth``) is a plain dict::

    {"format": "frozenbench-backbone", "version": 1, "arch": "swin_tiny",
     "state_dict": {timm key: tensor}, "meta": {source, task, data, ...}}
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import pickle
from pathlib import Path
from typing import Any

import torch

from frozenbench.errors import UserError
from frozenbench.utils.atomic import atomic_file

FORMAT = "frozenbench-backbone"
VERSION = 1


class UnsafeCheckpoint(UserError):
    """The file needs arbitrary unpickling to load; it is refused."""


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# What the original projects' full training checkpoints hold besides tensors, read as plain data:
# MAE and DeiT store their argparse options (an ``argparse.Namespace``: attributes only, no code
# runs to rebuild one); the official Swin code stores its yacs config, a dict subclass read here as
# an OrderedDict (its keys, values and attributes kept; yacs need not be installed and none of
# its code runs).
TRAINING_CHECKPOINT_GLOBALS = [argparse.Namespace, (collections.OrderedDict, "yacs.config.CfgNode")]


def safe_load(path: str | Path) -> Any:
    """``torch.load`` with ``weights_only=True`` (or safetensors) and errors that name the file."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: checkpoint not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError) as err:
            raise UserError(f"{path}: not a readable safetensors file ({err})") from None
    from frozenbench.checkpoint.torchscript import is_torchscript_archive, read_torchscript_weights

    if is_torchscript_archive(path):
        # torch.load would hand it to torch.jit.load, which compiles the archive's program
        return read_torchscript_weights(path)
    try:
        with torch.serialization.safe_globals(TRAINING_CHECKPOINT_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first_line = str(err).strip().splitlines()
        detail = next(
            (line for line in first_line if "Unsupported global" in line or "GLOBAL" in line),
            first_line[0] if first_line else "",
        )
        raise UnsafeCheckpoint(
            f"{path}: refused: loading it would need arbitrary unpickling ({detail.strip()}); "
            "only tensors, containers and allow-listed classes are loaded"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise UserError(f"{path}: not a readable torch checkpoint ({type(err).__name__}: {err})") from None


def peek_arch(path: str | Path) -> str:
    """The architecture named in a canonical checkpoint, read through a memory map (no tensor is loaded)."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, OSError) as err:
        raise UserError(f"{path}: not a readable frozenbench backbone checkpoint ({err})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path}: not a frozenbench backbone checkpoint")
    return payload["arch"]


def save_backbone(path: str | Path, arch: str, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write the canonical backbone checkpoint atomically (contiguous CPU tensors)."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch,
        "state_dict": {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()},
        "meta": meta,
    }
    with atomic_file(path) as tmp:
        torch.save(payload, tmp)


def save_random_backbone(path: str | Path, arch: str, img_size: int, seed: int = 0) -> Path:
    """A backbone checkpoint with ``seed``'s random initialisation: what smoke tests and benchmarks
    train heads on when the numbers measured are speed, memory or correctness, not accuracy."""
    from frozenbench.models import build_arch

    torch.manual_seed(seed)
    save_backbone(path, arch, build_arch(arch, img_size).state_dict(), {"pretrain_objective": "random"})
    return Path(path)


def load_backbone(path: str | Path) -> dict[str, Any]:
    """Read a canonical backbone checkpoint; raise a clear error for anything else."""
    payload = safe_load(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(
            f"{path}: not a frozenbench backbone checkpoint (convert it with `frozenbench convert-checkpoint`)"
        )
    if payload.get("version") != VERSION:
        raise UserError(f"{path}: checkpoint format version {payload.get('version')}, expected {VERSION}")
    return payload
