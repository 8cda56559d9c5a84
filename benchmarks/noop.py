"""A Kailash node that does nothing: what the SDK itself costs to run a node on a payload.

It declares the same parameter names as the generated node it stands in for, typed ``Any``
as DataFlow's are (so the SDK validates the same way), is fed the same payload, and returns
a small dict. The node path's target is stated on top of its time (CONVENTIONS.md).

The SDK also walks every output a node returns, so a node that returns 100 records pays the
SDK more than one returning ``{"success": True}``. ``output=`` makes a twin that returns a
given (JSON-safe) result instead: with the generated node's own output, it is the baseline the
node path's target is stated on (raw driver + this twin).

A plain SDK node pays the SDK's default input validation (pydantic) and output validation (a
JSON encoding of the whole output); DataFlow's nodes replace both with their own, cheaper
checks. ``shell_like`` shows that share: the generated node class itself with ``run`` returning
a given output, i.e. everything a DataFlow node costs except its database work.
"""

from __future__ import annotations

from typing import Any

from kailash.nodes.base import Node, NodeParameter, NodeRegistry


class NoOpNode(Node):
    """Accept the declared parameters; return ``{"success": True}``."""

    _params: tuple[str, ...] = ()
    _output: dict[str, Any] | None = None

    def get_parameters(self) -> dict[str, NodeParameter]:
        return {p: NodeParameter(name=p, type=Any, required=False) for p in self._params}

    def run(self, **kwargs: Any) -> dict[str, Any]:
        return {"success": True} if self._output is None else self._output


def noop_like(node_class: type[Node], output: dict[str, Any] | None = None) -> str:
    """Register a no-op node with ``node_class``'s parameter names; return its registered name."""
    params = tuple(node_class().get_parameters())
    name = f"Bench{'NoOp' if output is None else 'Echo'}{node_class.__name__}"
    cls = type(name, (NoOpNode,), {"__module__": __name__, "_params": params, "_output": output})
    NodeRegistry.register(cls, allow_override=True)
    return name


def shell_like(node_class: type[Node], output: dict[str, Any]) -> str:
    """Register ``node_class`` with ``run`` replaced by returning ``output``; return its registered name."""
    name = f"BenchShell{node_class.__name__}"
    cls = type(name, (node_class,), {"__module__": __name__, "run": lambda self, **kwargs: output})
    NodeRegistry.register(cls, allow_override=True)
    return name
