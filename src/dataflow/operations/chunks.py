"""Splitting values into the pieces one statement takes (an IN list, a multi-row INSERT)."""

from __future__ import annotations

from typing import Iterator, TypeVar

T = TypeVar("T")


def chunks(items: list[T], size: int) -> Iterator[list[T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for i in range(0, len(items), size):
        yield items[i:i + size]
