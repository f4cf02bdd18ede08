"""KEY=VALUE command-line arguments."""

from __future__ import annotations

from frozenbench.errors import UserError


def parse_pairs(items: list[str], what: str) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``; a malformed item is a clear error naming ``what``."""
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"{what} expects KEY=VALUE, got {item!r}")
        pairs[key] = value
    return pairs
