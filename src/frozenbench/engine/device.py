"""Where a job runs: its device, its CPU threads, its numeric precision, and what it measured.

Every job (train on one or many ranks, evaluate, submit, pretrain, probe) picks its device
through :func:`select_device`: ``auto`` is ``cuda:LOCAL_RANK`` when torch sees a GPU and the CPU
otherwise, ``cuda`` insists on a GPU (a job that was meant for one fails at once instead of
running for days on the CPU), ``cpu`` never touches CUDA. Torch is imported inside the functions:
the command line reads :data:`DEVICE_CHOICES` without paying for it.

Everything that behaves differently on a GPU lives here and nowhere else (a static test,
``tests/test_device.py``, fails on a ``device.type == "cuda"``, ``torch.cuda.*`` or ``.is_cuda``
anywhere else in ``src/``): pinned batches, non-blocking copies, TF32, autocast, the memory
statistics and the GPU queries of the preflight checks. The engine asks :func:`on_cuda_path`,
never the device type, so the branch a GPU takes can run in CI: with
``FROZENBENCH_CUDA_REHEARSAL=1`` a CPU job takes the CUDA path's logic on CPU tensors (loaders
asked to pin, preprocessors and objectives copying without blocking, TF32 flags set, autocast in
the job's dtype, the memory record's GPU branch), and only the calls that need a real GPU
(``torch.cuda.max_memory_allocated`` and friends) are answered by a stand-in that says it is one.

Every model the engine trains (OpenMMLab detectors, segmentors and recognizers in their training
wrapper, the pretraining objectives, a test's fake model) reaches its device through
:func:`place_model`, which asks the model (not its type) how its batches follow it there.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
from typing import TYPE_CHECKING, Any

from frozenbench.errors import UserError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def local_rank() -> int:
    """This process's rank on its node (torchrun's LOCAL_RANK; 0 outside a launcher)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def local_world_size() -> int:
    """Ranks on this node (torchrun's LOCAL_WORLD_SIZE; 1 outside a launcher). Jobs start one
    torchrun per node, so the node's CPUs (Slurm's cpus-per-task) are shared by these ranks."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def select_device(requested: str = "auto") -> torch.device:
    """The device of this process (``auto`` | ``cpu`` | ``cuda``); on a GPU also made the current one."""
    import torch

    if requested not in DEVICE_CHOICES:
        raise UserError(f"device must be one of {', '.join(DEVICE_CHOICES)}, got {requested!r}")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise UserError(
            "device 'cuda' requested but torch sees no GPU (torch.cuda.is_available() is False"
            + (f", CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else "")
            + "); on a GPU node check the job's GPU request, or run with device 'cpu'"
        )
    rank, count = local_rank(), torch.cuda.device_count()
    if rank >= count:
        raise UserError(f"local rank {rank} has no GPU: this node shows {count}; start one rank per GPU")
    torch.cuda.set_device(rank)
    return torch.device("cuda", rank)


REHEARSAL_ENV = "FROZENBENCH_CUDA_REHEARSAL"


def rehearsing_cuda() -> bool:
    """Whether CPU jobs of this process take the CUDA path's logic (``FROZENBENCH_CUDA_REHEARSAL=1``)."""
    return os.environ.get(REHEARSAL_ENV, "") == "1"


def on_cuda_path(device: torch.device) -> bool:
    """Whether a job on ``device`` takes the GPU's branch: on a GPU, and on the CPU when rehearsing it."""
    return device.type == "cuda" or (device.type == "cpu" and rehearsing_cuda())


def is_gpu(device: torch.device) -> bool:
    """Whether ``device`` is a real GPU (what only a GPU can answer: memory statistics, synchronisation)."""
    return device.type == "cuda"


def is_gpu_tensor(tensor: Any) -> bool:
    """Whether ``tensor`` is a torch tensor in GPU memory (kernel dispatch by where the data is)."""
    import torch

    return isinstance(tensor, torch.Tensor) and tensor.is_cuda


def gpu_available() -> bool:
    import torch

    return torch.cuda.is_available()


def gpu_names() -> list[str]:
    """The names of the GPUs torch sees here (none without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def gpu_device(index: int) -> torch.device:
    """GPU ``index``, made the current one (a process per GPU, e.g. an NCCL check)."""
    import torch

    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def deepspeed_accelerator(device: torch.device | None) -> str:
    """DeepSpeed's accelerator for ranks on ``device`` (``cpu`` for CPU ranks, rehearsal included:
    DeepSpeed's CUDA accelerator needs a GPU); without a device, what ``DS_ACCELERATOR`` says."""
    if device is None:
        return "cpu" if os.environ.get("DS_ACCELERATOR") == "cpu" else "cuda"
    return "cuda" if is_gpu(device) else "cpu"


def configure_precision(device: torch.device, tf32: bool) -> None:
    """TF32 for fp32 matmuls and convolutions on the GPU path (the CPU has no TF32: the flags are
    then only read by CUDA kernels, which a CPU job never runs)."""
    import torch

    if on_cuda_path(device):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32


def tf32_enabled() -> bool:
    import torch

    return bool(torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32)


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``bf16``, else nothing."""
    import torch

    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def autocast_disabled() -> contextlib.AbstractContextManager:
    """Autocast off on every device (code that must compute in fp32 inside a bf16 region)."""
    import torch

    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast("cuda", enabled=False))
    stack.enter_context(torch.autocast("cpu", enabled=False))
    return stack


def pin_memory(device: torch.device) -> bool:
    """Whether loaders feeding ``device`` should pin their batches (page-locked host memory is what
    makes a host-to-GPU copy asynchronous). Rehearsed on the CPU the loader is asked to, and torch
    skips it with a warning, as it would on any machine without a GPU."""
    return on_cuda_path(device)


def non_blocking(device: torch.device) -> bool:
    """Whether copies to ``device`` are issued without waiting (they overlap the previous step's
    kernels on a GPU; on the CPU a non-blocking copy is an ordinary one)."""
    return on_cuda_path(device)


def model_device(model: Any) -> torch.device:
    """The device of ``model``'s parameters (the CPU for a model without any)."""
    import torch

    parameter = next(iter(model.parameters()), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def pins_batches_for(model: Any) -> bool:
    """Whether batches for ``model`` (on the device its parameters are on) are worth pinning."""
    return pin_memory(model_device(model))


def to_device(data: Any, device: torch.device) -> Any:
    """``data`` (a tensor, or lists / tuples / dicts of them) on ``device``, non-blocking on the GPU path."""
    import torch

    if isinstance(data, torch.Tensor):
        return data.to(device, non_blocking=non_blocking(device))
    if isinstance(data, dict):
        return {k: to_device(v, device) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(to_device(v, device) for v in data)
    return data


def place_model(model: Any, device: torch.device) -> Any:
    """``model`` on ``device``; a model that copies its batches there itself through a component
    of its own (an OpenMMLab data preprocessor) says so with ``set_non_blocking_copies(bool)`` and
    is told whether to copy without blocking. A model without the method moves its inputs with
    :func:`to_device` (a pretraining objective) or gets them where they are (a test's model)."""
    model.to(device)
    set_copies = getattr(model, "set_non_blocking_copies", None)
    if callable(set_copies):
        set_copies(non_blocking(device))
    return model


class _CudaMemory:
    """The memory statistics of a real GPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def reset_peak(self) -> None:
        import torch

        torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mb(self) -> float | None:
        import torch

        return round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)

    def name(self) -> str:
        import torch

        return torch.cuda.get_device_name(self.device)

    def total_mb(self) -> float | None:
        import torch

        return round(torch.cuda.get_device_properties(self.device).total_memory / 2**20, 1)

    def synchronize(self) -> None:
        import torch

        torch.cuda.synchronize(self.device)


class _RehearsalMemory:
    """What a rehearsal on the CPU answers where only a GPU could: no numbers made up."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.resets = 0

    def reset_peak(self) -> None:
        self.resets += 1

    def peak_mb(self) -> float | None:
        return None

    def name(self) -> str:
        return f"{platform.processor() or platform.machine()} (CUDA path rehearsed on the CPU)"

    def total_mb(self) -> float | None:
        return None

    def synchronize(self) -> None:
        pass


def gpu_memory(device: torch.device) -> _CudaMemory | _RehearsalMemory | None:
    """The memory statistics of ``device`` on the GPU path (a stand-in when rehearsing), else None."""
    if is_gpu(device):
        return _CudaMemory(device)
    if on_cuda_path(device):
        return _RehearsalMemory(device)
    return None


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued kernels (before reading a clock); nothing to wait for on the CPU."""
    memory = gpu_memory(device)
    if memory is not None:
        memory.synchronize()


def cpu_budget() -> int:
    """CPUs this job may use on this node: Slurm's cpus-per-task inside a job, else this process's affinity."""
    if os.environ.get("SLURM_CPUS_PER_TASK"):
        return int(os.environ["SLURM_CPUS_PER_TASK"])
    return len(os.sched_getaffinity(0))


def threads_per_rank(job_threads: int, workers: int = 0) -> int:
    """Torch intra-op threads of one rank: the job's CPUs (``job_threads``, 0 = all this process
    may use) split over the node's ranks, less the rank's data-loading workers, at least 1."""
    total = job_threads or cpu_budget()
    return max(1, total // max(1, local_world_size()) - workers)


def reset_peak_memory(device: torch.device) -> None:
    memory = gpu_memory(device)
    if memory is not None:
        memory.reset_peak()


def device_record(device: torch.device) -> dict[str, Any]:
    """What a metrics file records of the job's hardware: device, its name, peak GPU memory
    (``max_memory_allocated``, None on a CPU and in a rehearsal), the card's memory, and the
    process's peak RSS."""
    memory = gpu_memory(device)
    if memory is not None:
        name, gpu_peak, gpu_total = memory.name(), memory.peak_mb(), memory.total_mb()
    else:
        name, gpu_peak, gpu_total = platform.processor() or platform.machine(), None, None
    return {
        "device": str(device),
        "device_name": name,
        "gpu_peak_mb": gpu_peak,
        "gpu_memory_mb": gpu_total,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
