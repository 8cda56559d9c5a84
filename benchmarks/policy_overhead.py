"""What a no-op policy costs on every call (issue 7: under 2 µs per operation per policy).

Times N ``db.read`` by id and N ``db.count`` on in-memory SQLite with 0 and with 10 no-op policies
(each overriding all five hooks, so the executor calls every one that the path reaches), alternating
the two setups in chunks of 500 calls so that the shared machine's drift hits both alike. Also times ``Executor.run``
with an empty body, which isolates the chain's own cost from the database round trip. Prints µs
per operation and the cost per policy.

    PYTHONPATH=src python benchmarks/policy_overhead.py [N]
"""

from __future__ import annotations

import sys
import time

from dataflow import DataFlow
from dataflow.operations.policy import Policy


class NoOp(Policy):
    """Overrides every hook and does nothing in each."""

    name = "noop"

    def plan(self, call):
        pass

    def before_statement(self, call, conn):
        pass

    def after_statement(self, call, conn, info):
        pass

    def after_commit(self, call, result, elapsed):
        pass

    def failed(self, call, error, elapsed):
        pass


def _nothing(call):
    return None


def timed(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    db = DataFlow("sqlite:///:memory:")

    @db.model
    class User:
        name: str
        age: int = 0

    db.bulk_create("User", [{"name": f"u{i}", "age": i} for i in range(100)])
    b = db.binding("User")
    ex = db.operations.executor
    ops = {"read by id": lambda: db.read("User", 42), "count": lambda: db.count("User"),
           # the executor alone (plan, run, after-commit; no SQL): isolates what the chain costs
           "executor.run": lambda: ex.run(ex.call("read", b, id=42), _nothing)}
    for op in ops.values():  # warm the statement cache and the connection
        timed(op, 1000)
    builtin = list(ex.policies)
    chains = {0: builtin, 10: builtin + [NoOp() for _ in range(10)]}
    total: dict[tuple[str, int], float] = {}
    chunk = 500
    # Interleaved in chunks of 500 calls, so drift in the machine's speed hits both setups alike.
    for name, op in ops.items():
        for _ in range(n // chunk):
            for k, chain in chains.items():
                ex.policies = list(chain)
                ex._index()
                total[(name, k)] = total.get((name, k), 0.0) + timed(op, chunk) * chunk
    ex.policies = builtin
    ex._index()
    print(f"N={n} calls per operation and setup (interleaved in chunks of {chunk}), in-memory SQLite, "
          f"built-in policies: {[p.name for p in builtin]}")
    for name in ops:
        base, ten = total[(name, 0)] / n, total[(name, 10)] / n
        print(f"{name:12s}: 0 no-op policies {base:8.3f} µs/op, 10 no-op policies {ten:8.3f} µs/op, "
              f"per policy {(ten - base) / 10:6.3f} µs/op")
    db.close()


if __name__ == "__main__":
    main()
