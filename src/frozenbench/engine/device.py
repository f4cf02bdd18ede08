"""Where a job runs: its device, its CPU threads, its numeric precision, and what it measured.

Every job (train on one or many ranks, evaluate, submit, pretrain, probe) picks its device
through :func:`select_device`: ``auto`` is ``cuda:LOCAL_RANK`` when torch sees a GPU and the CPU
otherwise, ``cuda`` insists on a GPU (a job that was meant for one fails at once instead of
running for days on the CPU), ``cpu`` never touches CUDA. Torch is imported inside the functions:
the command line reads :data:`DEVICE_CHOICES` without paying for it.
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


def configure_precision(device: torch.device, tf32: bool) -> None:
    """TF32 for fp32 matmuls and convolutions on a GPU (a CPU has no TF32: nothing to set)."""
    import torch

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``bf16``, else nothing."""
    import torch

    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


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
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def device_record(device: torch.device) -> dict[str, Any]:
    """What a metrics file records of the job's hardware: device, its name, peak GPU memory
    (``max_memory_allocated``, None on a CPU) and the process's peak RSS."""
    import torch

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        gpu_peak = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    else:
        name, gpu_peak = platform.processor() or platform.machine(), None
    return {
        "device": str(device),
        "device_name": name,
        "gpu_peak_mb": gpu_peak,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
