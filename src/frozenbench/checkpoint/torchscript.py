"""The weights of a TorchScript archive, read as data: no TorchScript program is compiled or run.

OpenAI's released CLIP files (``ViT-B-16.pt``...) are TorchScript archives: a zip holding the
module tree pickled in ``<name>/data.pkl`` (modules as ``__torch__.*`` objects, tensors through
``torch._utils._rebuild_tensor_v2`` over storages stored as ``<name>/data/<key>``) beside the
compiled code. ``torch.jit.load`` would compile and keep that code; here the pickle is read by an
unpickler that can build only three things: a plain record for each ``__torch__`` object, an
ordered dict, and a tensor over bytes of the archive. Anything else the pickle asks for is
refused, so a crafted archive cannot run code through it.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from frozenbench.errors import UserError

# storage classes a TorchScript pickle names -> the element type of their bytes
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


def is_torchscript_archive(path: str | Path) -> bool:
    """A zip with a TorchScript program (``<name>/code/`` or ``<name>/constants.pkl``) beside its data."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("/constants.pkl") for n in names) and any(n.endswith("/data.pkl") for n in names)


class ScriptObject:
    """What a ``__torch__`` module or object holds: its attributes (tensors, children, flags)."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name
        self.attributes: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.attributes.update(state)


def _record_class(type_name: str) -> type:
    """A class for the NEWOBJ opcode to instantiate (pickle calls ``__new__``, never ``__init__``);
    all it can do is store the attributes BUILD hands it."""

    class Record(ScriptObject):
        def __new__(cls, *args: Any) -> "Record":
            record = object.__new__(cls)
            ScriptObject.__init__(record, type_name)
            return record

        def __init__(self, *args: Any) -> None:  # state comes through __setstate__
            pass

    return Record


class _Rebuild:
    """``torch._utils._rebuild_tensor_v2`` over a storage read from the archive, bounds checked."""

    def __call__(self, storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *rest: Any) -> torch.Tensor:
        try:
            return storage.as_strided(tuple(size), tuple(stride), int(offset)).clone()
        except RuntimeError as err:
            raise pickle.UnpicklingError(f"a tensor outside its storage: {err}") from None


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        import io

        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix
        self.storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            return _record_class(f"{module}.{name}")
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _Rebuild()
        if (module, name) == ("collections", "OrderedDict"):
            import collections

            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise pickle.UnpicklingError(f"refused global {module}.{name}")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        _, dtype, key, _location, numel = pid
        if key not in self.storages:
            try:
                raw = self.archive.read(f"{self.prefix}/data/{key}")
            except KeyError:
                raise pickle.UnpicklingError(f"storage {key!r} missing from the archive") from None
            storage = torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            if storage.numel() != int(numel):
                raise pickle.UnpicklingError(f"storage {key!r} holds {storage.numel()} elements, not {numel}")
            self.storages[key] = storage
        return self.storages[key]


def _flatten(obj: ScriptObject, prefix: str, out: dict[str, torch.Tensor]) -> None:
    for name, value in obj.attributes.items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, ScriptObject):
            _flatten(value, f"{prefix}{name}.", out)


def read_torchscript_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor attribute of the archive's module tree, by its dotted name (a state dict)."""
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        (data_name,) = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1] or [None]
        if data_name is None:
            raise UserError(f"{path}: a TorchScript archive without <name>/data.pkl")
        prefix = data_name.split("/")[0]
        try:
            root = _Unpickler(archive.read(data_name), archive, prefix).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
            raise UserError(f"{path}: refused: {err}") from None
    if not isinstance(root, ScriptObject):
        raise UserError(f"{path}: the archive's data is not a module")
    weights: dict[str, torch.Tensor] = {}
    _flatten(root, "", weights)
    return weights


# OpenAI's CLIP files are the TorchScript checkpoints published for frozenbench's backbones, and
# every one of them was trained with QuickGELU: the same tensors in a GELU architecture load
# cleanly and give features a few hundredths off, so the activation is checked, not assumed.
SCRIPT_ACTIVATION = "quick_gelu"


def activation_problem(path: str | Path, arch: str) -> str | None:
    """Why ``arch`` cannot take the TorchScript archive ``path`` (its activation), or None."""
    from frozenbench.checkpoint.diagnose import activation_twin
    from frozenbench.models.registry import get_arch, list_archs

    spec = get_arch(arch)
    activation = spec.kwargs.get("act_layer", "gelu")
    if activation == SCRIPT_ACTIVATION:
        return None
    fits = activation_twin(spec, SCRIPT_ACTIVATION) or [
        name for name in list_archs() if get_arch(name).kwargs.get("act_layer") == SCRIPT_ACTIVATION
    ]
    use = f": use --arch {fits[0]}" if fits else ""
    return (
        f"{path}: a TorchScript archive is an OpenAI CLIP file, whose towers compute QuickGELU; "
        f"{arch} computes {activation} and would give other features{use}"
    )
