"""Aggregation pipeline -> one SELECT (work in progress)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Pipeline:
    statement: Any
    params: dict = field(default_factory=dict)
    shaper: Callable | None = None

    def shape(self, rows):
        return self.shaper(rows)


def compile_pipeline(table, pipeline, *, base=None, path="pipeline") -> Pipeline:
    raise NotImplementedError("compile_pipeline is being written")
