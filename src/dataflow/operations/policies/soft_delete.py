"""Soft delete (``__dataflow__ = {"soft_delete": True}``): deletes set ``deleted_at``; reads skip such rows."""

from __future__ import annotations

from ..call import Call, Condition
from ..policy import Policy

#: ``deleted_at IS NULL``: one shape, no parameters.
LIVE = Condition(("soft_delete",), lambda table: table.c.deleted_at.is_(None), bounds=False)


class SoftDelete(Policy):
    """Hide soft-deleted rows from every scoped call unless it asks ``include_deleted``; turn deletes into updates."""

    name = "soft_delete"

    def plan(self, call: Call) -> None:
        spec = call.binding.spec
        if spec is None or not spec.soft_delete or not call.scoped:
            return
        if not call.options.get("include_deleted"):
            call.add(LIVE)
        if call.action in ("delete", "bulk_delete"):
            call.state["soft_delete"] = True
