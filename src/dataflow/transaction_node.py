"""``DataFlowTransactionNode``: a workflow declares a transaction itself, around a sub-workflow.

    wf.add_node("DataFlowTransactionNode", "tx", {"workflow": inner.build()})

The node runs the sub-workflow with ``LocalRuntime`` inside ``db.transaction()`` of the DataFlow
instance its DataFlow nodes belong to. If any node of the sub-workflow failed (the runtime may
record a failure and go on), nothing of it is saved and the node raises ``TransactionError``.
Its output: ``{"committed": True, "results": {node_id: outputs}}``.
"""

from __future__ import annotations

from typing import Any

from kailash.nodes.base import Node, NodeParameter, NodeRegistry

from .errors import TransactionError, ValidationError


def _database_of(workflow: Any):
    dbs = {id(db): db for node in getattr(workflow, "_node_instances", {}).values()
           if (db := getattr(type(node), "_db", None)) is not None}
    if len(dbs) != 1:
        raise ValidationError("DataFlowTransactionNode: the sub-workflow must use the nodes of exactly one DataFlow "
                              f"instance (found {len(dbs)}); one transaction spans one database")
    return next(iter(dbs.values()))


class DataFlowTransactionNode(Node):
    """Run a sub-workflow as one database transaction: all its DataFlow nodes commit together, or none."""

    def get_parameters(self) -> dict[str, NodeParameter]:
        return {
            "workflow": NodeParameter(name="workflow", type=object, required=True,
                                      description="the built sub-workflow (WorkflowBuilder().build())"),
            "parameters": NodeParameter(name="parameters", type=dict, required=False, default={},
                                        description="runtime parameters for the sub-workflow's nodes"),
        }

    def run(self, **kwargs: Any) -> dict[str, Any]:
        from kailash.runtime.local import LocalRuntime

        workflow = kwargs.get("workflow")
        if workflow is None or not hasattr(workflow, "_node_instances"):
            raise ValidationError("DataFlowTransactionNode needs 'workflow': a built workflow")
        db = _database_of(workflow)
        with db.transaction():
            with LocalRuntime() as runtime:
                results, _ = runtime.execute(workflow, parameters=kwargs.get("parameters") or {})
            failed = sorted(k for k, v in results.items() if isinstance(v, dict) and v.get("failed"))
            if failed:
                raise TransactionError(f"DataFlowTransactionNode: node(s) {', '.join(failed)} of the sub-workflow "
                                       f"failed; the transaction was rolled back, nothing was saved")
        return {"committed": True, "results": results}


NodeRegistry.register(DataFlowTransactionNode, allow_override=True)
