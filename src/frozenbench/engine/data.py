"""Batches for training and evaluation through torch DataLoaders (decoding off the critical path).

Training keeps the engine's contract, *the batch of step k is a pure function of (seed, k)*: the
loader's unit is a whole step (:class:`StepBatches` item k = the collated batch of step k, built
inside one worker after reseeding the transform RNGs with (seed, k)), so neither the number of
workers nor which worker builds a step can change a batch, and a resumed run asks for steps
``start, start + 1, ...`` exactly as an uninterrupted one did.

The batch of a step is the *global* batch (``batch_indices(step, global_batch, ...)``), whatever
the number of ranks: rank r takes every ``world``-th index of it from the r-th, and splits its share
into ``accumulation`` consecutive micro-batches (:func:`frozenbench.engine.options.split_batch`),
so the samples of an optimizer step are the same on any rank count, with or without accumulation.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from frozenbench.engine.options import BatchSplit


def seed_step(seed: int, step: int) -> None:
    """Reseed the RNGs that OpenMMLab transforms and samplers draw from (random, numpy, torch)."""
    value = (seed * 1_000_003 + step) % (2**31)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def batch_indices(step: int, batch_size: int, num_samples: int, seed: int) -> list[int]:
    """Sample indices of step ``step``: consecutive slices of a per-epoch seeded permutation."""
    per_epoch = max(num_samples // batch_size, 1)
    epoch, offset = divmod(step, per_epoch)
    order = torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return order[offset * batch_size : (offset + 1) * batch_size].tolist()


def rank_indices(step: int, global_batch: int, num_samples: int, seed: int, world: int, rank: int) -> list[int]:
    """Rank ``rank``'s share of step ``step``'s global batch: every ``world``-th index from the ``rank``-th."""
    return batch_indices(step, global_batch, num_samples, seed)[rank::world]


class StepBatches(Dataset):
    """Item ``step``: rank ``rank``'s share of the global batch of step ``step`` as ``split``
    (:func:`frozenbench.engine.options.split_batch`) cuts it: a list of ``split.accumulation``
    collated micro-batches (consecutive, equal slices of the share)."""

    def __init__(self, dataset, collate: Callable, split: BatchSplit, seed: int, rank: int = 0) -> None:
        if split.micro * split.accumulation * split.ranks != split.global_batch:
            raise ValueError(f"{split} does not multiply to its global batch")
        self.dataset, self.collate, self.split, self.seed, self.rank = dataset, collate, split, seed, rank

    def __len__(self) -> int:
        return 2**62  # indexed by step; the sampler says which steps

    def __getitem__(self, step: int) -> list[dict[str, Any]]:
        seed_step(self.seed, step)
        split = self.split
        indices = rank_indices(step, split.global_batch, len(self.dataset), self.seed, split.ranks, self.rank)
        # every sample of the share is built in index order (the transforms' draws are the same with
        # or without accumulation), then cut into micro-batches
        samples = [self.dataset[i] for i in indices]
        micro = split.micro
        return [self.collate(samples[a * micro : (a + 1) * micro]) for a in range(split.accumulation)]


def _as_is(batch: Any) -> Any:
    return batch


def _ignore_sigterm(worker_id: int) -> None:
    """Workers leave SIGTERM (sent to the whole job by Slurm) to the main process, which saves
    its state between two steps and then shuts them down; a worker dying first would fail the
    step the main process is waiting for."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _loader_options(workers: int, pin_memory: bool, prefetch: int) -> dict[str, Any]:
    if workers <= 0:
        return {"num_workers": 0, "pin_memory": pin_memory}
    return {
        "num_workers": workers,
        "pin_memory": pin_memory,
        "persistent_workers": True,
        "prefetch_factor": prefetch,
        "worker_init_fn": _ignore_sigterm,
    }


def train_batches(
    steps: StepBatches, start: int, stop: int, workers: int = 0, pin_memory: bool = False, prefetch: int = 2
) -> Iterator[list[dict]]:
    """The rank's micro-batches of steps ``start .. stop - 1`` in order (one list a step), built by
    ``workers`` processes (0: here)."""
    if start >= stop:
        return iter(())
    return iter(
        DataLoader(
            steps,
            batch_size=None,
            sampler=range(start, stop),
            collate_fn=_as_is,
            **_loader_options(workers, pin_memory, prefetch),
        )
    )


def eval_batches(
    dataset, collate: Callable, batch_size: int, workers: int = 0, pin_memory: bool = False, prefetch: int = 2
) -> Iterator[dict]:
    """The dataset in order, ``batch_size`` samples a batch put together by ``collate``."""
    options = _loader_options(workers, pin_memory, prefetch)
    options.pop("persistent_workers", None)  # one pass: nothing to keep the workers for
    return iter(DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, **options))
