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
     "state_dict": {timm key: tensor}, "meta": {source, task, data, ...},
     "normalization": {"mean": [r, g, b], "std": [r, g, b]},   # optional, [0, 1] units
     "weights_tag": "mae", "arch_options": {"pos_interpolation": "mae"}}   # optional

``normalization`` is the input normalisation the weights were trained with and ``arch_options``
the build options under which the architecture computes their source's features (a family's
:class:`frozenbench.models.registry.WeightsTag`); a file without them takes the architecture's
defaults, which is what files written before they existed meant.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import math
import os
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


def file_identity(path: str | Path) -> tuple[str, int, int, int]:
    """(absolute path, size, modification time in ns, inode) of ``path``: a file rewritten in place
    changes its size or modification time, one replaced atomically (written beside and renamed, as
    every artifact here is) gets another inode even within one clock tick."""
    st = os.stat(path)
    return os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ino


def _hash_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# sha256 by file identity, for this process. A job names its checkpoint's digest in its run
# fingerprint and again in its metrics record; at paper scale each is a full read of a
# multi-gigabyte file, so the second is answered from here.
_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def sha256_of(path: str | Path) -> str:
    """The file's sha256, hashed once per process for each :func:`file_identity`: the same path
    asked again gives the digest without reading the file; a file changed since is hashed again."""
    before = file_identity(path)
    digest = _DIGESTS.get(before)
    if digest is None:
        digest = _hash_file(path)
        # a file that changed while it was read has no digest to remember
        if file_identity(path) == before:
            _DIGESTS[before] = digest
    return digest


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


def save_backbone(
    path: str | Path,
    arch: str,
    state_dict: dict[str, torch.Tensor],
    meta: dict[str, Any],
    normalization: dict[str, list[float]] | None = None,
    weights_tag: str | None = None,
    arch_options: dict[str, Any] | None = None,
) -> None:
    """Write the canonical backbone checkpoint atomically (contiguous CPU tensors), with what the
    weights take beyond their architecture where given (see the module docstring)."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch,
        "state_dict": {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()},
        "meta": meta,
    }
    if normalization is not None:
        payload["normalization"] = {key: [float(v) for v in normalization[key]] for key in ("mean", "std")}
    if weights_tag is not None:
        payload["weights_tag"] = weights_tag
    if arch_options:
        payload["arch_options"] = dict(arch_options)
    with atomic_file(path) as tmp:
        torch.save(payload, tmp)


def check_normalization(value: Any, where: str) -> dict[str, list[float]]:
    """``value`` as ``{"mean": [3 floats], "std": [3 floats]}`` in [0, 1] units (RGB); anything else
    is an error naming ``where`` and the key."""
    if not isinstance(value, dict) or set(value) != {"mean", "std"}:
        found = sorted(value) if isinstance(value, dict) else type(value).__name__
        raise UserError(f"{where}: expected {{mean: [r, g, b], std: [r, g, b]}} in [0, 1] units, got {found}")
    out = {}
    for key in ("mean", "std"):
        channels = value[key]
        if (
            not isinstance(channels, (list, tuple))
            or len(channels) != 3
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in channels)
        ):
            raise UserError(f"{where}.{key}: expected three finite numbers (r, g, b), got {channels!r}")
        if key == "std" and min(channels) <= 0:
            raise UserError(f"{where}.std: every channel's std must be positive, got {list(channels)}")
        if max(abs(v) for v in channels) > 1.5:
            # 255-unit values given where [0, 1] units are meant would normalise every input to ~0
            raise UserError(f"{where}.{key}: {list(channels)} looks like pixel units; give [0, 1] units")
        out[key] = [float(v) for v in channels]
    return out


def save_random_backbone(path: str | Path, arch: str, img_size: int, seed: int = 0) -> Path:
    """A backbone checkpoint with ``seed``'s random initialisation: what smoke tests and benchmarks
    train heads on when the numbers measured are speed, memory or correctness, not accuracy."""
    from frozenbench.models.registry import build_arch

    torch.manual_seed(seed)
    save_backbone(path, arch, build_arch(arch, img_size).state_dict(), {"pretrain_objective": "random"})
    return Path(path)


def load_backbone(path: str | Path) -> dict[str, Any]:
    """Read a canonical backbone checkpoint; raise a clear error for anything else, a recorded
    ``normalization``, ``weights_tag`` or ``arch_options`` of the wrong form included."""
    payload = safe_load(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(
            f"{path}: not a frozenbench backbone checkpoint (convert it with `frozenbench convert-checkpoint`)"
        )
    if payload.get("version") != VERSION:
        raise UserError(f"{path}: checkpoint format version {payload.get('version')}, expected {VERSION}")
    if "normalization" in payload:
        payload["normalization"] = check_normalization(payload["normalization"], f"{path}: normalization")
    if not isinstance(payload.get("weights_tag", ""), str):
        raise UserError(f"{path}: weights_tag: expected a tag name, got {payload['weights_tag']!r}")
    options = payload.get("arch_options", {})
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise UserError(f"{path}: arch_options: expected a mapping of builder option names, got {options!r}")
    return payload
