"""The README's error table names every class of the exception tree with its code and HTTP status."""

from __future__ import annotations

import inspect
from pathlib import Path

import dataflow.errors as errors

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_error_class_is_in_the_readme_table_with_its_code_and_status():
    rows = [line for line in README.read_text().splitlines() if line.startswith("| `")]
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass)
               if issubclass(c, errors.DataFlowError) and c.__module__ == errors.__name__]
    assert len(classes) >= 15
    missing = []
    for cls in classes:
        row = next((r for r in rows if f"`{cls.__name__}`" in r.split("|")[1]), None)
        if row is None or f"`{cls.code}`" not in row or str(cls.status) not in row.split("|")[3]:
            missing.append((cls.__name__, cls.code, cls.status))
    assert missing == []
