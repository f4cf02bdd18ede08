"""Checkpoints named by a Hugging Face hub id, resolved from the local hub cache only.

Cluster nodes rarely reach the internet, and a study must not change because a hub repository
did: a ``hub`` checkpoint is looked up in the local cache (``HF_HUB_CACHE`` / ``HF_HOME``, as
``huggingface_hub`` resolves it) and never downloaded here. Fill the cache once where there is
internet (``hf download <repo> <file>``) and share or copy it to the cluster.
"""

from __future__ import annotations

from pathlib import Path

from frozenbench.errors import UserError


def cached_file(repo_id: str, filename: str, revision: str | None = None) -> Path:
    """The cached ``filename`` of ``repo_id`` (at ``revision``, default the cached ``main``)."""
    from huggingface_hub import constants, try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, revision=revision)
    if not isinstance(found, str):
        at = f" at revision {revision}" if revision else ""
        raise UserError(
            f"hub checkpoint {repo_id}/{filename}{at} is not in the local Hugging Face cache "
            f"({constants.HF_HUB_CACHE}); frozenbench never downloads from the hub: run "
            f"`hf download {repo_id} {filename}` where there is internet and copy the cache, "
            f"or point HF_HUB_CACHE at a copy of it"
        )
    return Path(found)
