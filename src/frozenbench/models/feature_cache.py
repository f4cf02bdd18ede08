"""A cache of frozen-backbone features keyed by the exact input image.

A frozen backbone maps the same input tensor to the same features, so wherever the
augmentation is finite (evaluation, fixed-scale training, flips, frames that recur across
sampled clips) the features are computed once and reused across epochs. The key is a
digest of the image's bytes: a random crop or resize simply misses and is computed, so
the cache can never serve features of a different input.

A batch's misses go through the backbone together, in one call (a K400 batch is clips x frames
of them). Float kernels may round a sample differently in batches of other sizes, so cached
features equal uncached ones up to that rounding, and a run resumed with an empty cache (whose
misses come in other groups) ends with weights equal up to it too; the default path (no cache)
resumes bit for bit. Features are stored until ``max_bytes`` is reached (then computed without
being stored).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch


class FeatureCache:
    def __init__(self, max_bytes: int = 2 << 30) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._store: dict[bytes, list[torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self._store)

    @staticmethod
    def key(image: torch.Tensor) -> bytes:
        data = image.detach().to("cpu").contiguous()
        digest = hashlib.blake2b(
            data.numpy().tobytes() if data.dtype != torch.bfloat16 else data.view(torch.int16).numpy().tobytes(),
            digest_size=16,
        )
        digest.update(f"{tuple(data.shape)}{data.dtype}".encode())
        return digest.digest()

    def __call__(
        self, images: torch.Tensor, compute: Callable[[torch.Tensor], list[torch.Tensor]]
    ) -> list[torch.Tensor]:
        """Features (one tensor per level, batch first) of ``images``, computing only the misses."""
        keys = [self.key(image) for image in images]
        missing = [i for i, k in enumerate(keys) if k not in self._store]
        # duplicates inside one batch are computed once
        first_of = {}
        for i in missing:
            first_of.setdefault(keys[i], i)
        todo = sorted(first_of.values())
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        fresh: dict[bytes, list[torch.Tensor]] = {}
        if todo:
            levels = compute(images[todo])
            for row, i in enumerate(todo):
                feats = [level[row].clone() for level in levels]
                fresh[keys[i]] = feats
                size = sum(f.numel() * f.element_size() for f in feats)
                if self.bytes + size <= self.max_bytes:
                    self._store[keys[i]] = feats
                    self.bytes += size
        rows = [fresh[k] if k in fresh else self._store[k] for k in keys]
        return [torch.stack([r[level] for r in rows]) for level in range(len(rows[0]))]

    def stats(self) -> dict[str, float]:
        total = self.hits + self.misses
        return {
            "entries": len(self),
            "megabytes": round(self.bytes / 2**20, 1),
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": round(self.hits / total, 4) if total else 0.0,
        }
