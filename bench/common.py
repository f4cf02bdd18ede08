"""Shared helpers of the benchmarks: interleaved repeats, min/median/max, ratios, JSON records.

Every figure a benchmark reports is a ratio of two cases measured in the same run, with the
cases interleaved repeat by repeat (these machines are noisy: a slow second is shared by all
cases instead of landing on one).
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def interleaved(
    cases: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1, sync: Callable[[], None] = lambda: None
) -> dict[str, list[float]]:
    """Seconds per call of each case, ``repeats`` times, round-robin after ``warmup`` calls each."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def ratio(numerator: list[float], denominator: list[float]) -> dict[str, float]:
    """Repeat-by-repeat ratios (paired, as the cases were interleaved), min/median/max."""
    return spread([a / b for a, b in zip(numerator, denominator)])


def machine() -> dict[str, Any]:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_record(name: str, record: dict[str, Any], out_dir: Path = RESULTS) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"benchmark": name, "machine": machine(), **record}, indent=2) + "\n")
    tmp.replace(path)
    return path


def matmul_case(
    n: int = 1024, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[Callable[[], Any], float]:
    """A dense n x n matmul to time beside the other cases (so the machine's reference rate shares
    their noise, repeat by repeat) and its FLOP count."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return (lambda: a @ b), 2.0 * n**3
