"""Time DataFlow's operations layer, its nodes and its cache against the raw drivers; print each ratio.

    python benchmarks/run.py [--backend sqlite|postgresql|mysql|all] [--rows 100000]
                             [--creates 1000] [--reads 1000] [--repeat 3] [--lists 200]
                             [--aggregates 20] [--workflows 20] [--hits 500] [--hitrate-ops 1000]
                             [--cases create,read,bulk,list,workflow10,cache,query,aggregate,hitrate]

Each backend runs in a fresh process of its own. The script measures, it does not assert:
it exits 0 whether targets are met or not (and when a server is not reachable, that
backend is reported as skipped). See benchmarks/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict

import hitrate
import queries
import report
import suite
from suite import Options
from workload import BACKENDS, DEFAULT_BACKENDS

CASES = (*suite.CASES, *queries.CASES, *hitrate.CASES)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default="default",
                   help="sqlite, postgresql, mysql, all, or a comma-separated list (default: sqlite,postgresql)")
    p.add_argument("--rows", type=int, default=Options.rows, help="rows for bulk create and the List table")
    p.add_argument("--creates", type=int, default=Options.creates, help="single creates per path")
    p.add_argument("--reads", type=int, default=Options.reads, help="reads by id per repeat and path")
    p.add_argument("--repeat", type=int, default=Options.repeat,
                   help="repeats of bulk create, read and List per path; the median is reported")
    p.add_argument("--lists", type=int, default=Options.lists, help="List calls per repeat (the list and query cases)")
    p.add_argument("--aggregates", type=int, default=queries.QueryOptions.aggregates,
                   help="aggregations per repeat (the aggregate case)")
    p.add_argument("--workflows", type=int, default=Options.workflows,
                   help="runs of the 10-node workflow per repeat and path (the workflow10 case)")
    p.add_argument("--hits", type=int, default=Options.hits, help="List calls per repeat and path (the cache case)")
    p.add_argument("--hitrate-ops", type=int, default=hitrate.HitOptions.ops,
                   help="operations per process (the hitrate case)")
    p.add_argument("--hitrate-procs", type=int, default=hitrate.HitOptions.procs,
                   help="processes sharing Redis (the hitrate case)")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}")
    args = p.parse_args(argv)
    args.cases = tuple(c.strip() for c in args.cases.split(",") if c.strip())
    if not args.cases or set(args.cases) - set(CASES):
        p.error(f"--cases takes a comma-separated subset of {', '.join(CASES)}")
    if args.backend == "default":
        args.backends = list(DEFAULT_BACKENDS)
    elif args.backend == "all":
        args.backends = list(BACKENDS)
    else:
        args.backends = [b.strip() for b in args.backend.split(",") if b.strip()]
        unknown = [b for b in args.backends if b not in BACKENDS]
        if unknown:
            p.error(f"unknown backend(s) {unknown}; choose from {', '.join(BACKENDS)} or all")
    for name in ("rows", "creates", "reads", "repeat", "lists", "aggregates", "workflows", "hits", "hitrate_ops",
                 "hitrate_procs"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    opts = Options(rows=args.rows, creates=args.creates, repeat=args.repeat, lists=args.lists, reads=args.reads,
                   workflows=args.workflows, hits=args.hits, cases=tuple(c for c in args.cases if c in suite.CASES))
    hit_opts = hitrate.HitOptions(ops=args.hitrate_ops, procs=args.hitrate_procs,
                                  cases=tuple(c for c in args.cases if c in hitrate.CASES))
    query_opts = queries.QueryOptions(rows=args.rows, repeat=args.repeat, lists=args.lists,
                                      aggregates=args.aggregates,
                                      cases=tuple(c for c in args.cases if c in queries.CASES))
    print(f"DataFlow benchmarks: {', '.join(args.backends)}; cases={','.join(args.cases)} rows={opts.rows:,} "
          f"creates={opts.creates:,} reads={opts.reads:,} repeat={opts.repeat} lists={opts.lists} aggregates={args.aggregates} "
          f"workflows={opts.workflows} hits={opts.hits:,} hitrate-ops={hit_opts.ops:,}x{hit_opts.procs} "
          f"(Python {platform.python_version()})", flush=True)
    timings: list[dict] = []
    notes: list[str] = []
    failed = False
    spawn = multiprocessing.get_context("spawn")
    # Each case of the suite in a process of its own too: what one case leaves on the heap (the bulk
    # case's 100,000-row payloads, runtimes, twins) would otherwise tax the next one's timings
    # through the garbage collector.
    runs = [*((suite.run_backend, {**asdict(opts), "cases": (case,)}) for case in opts.cases),
            (queries.run_backend, asdict(query_opts)) if query_opts.cases else None,
            (hitrate.run_backend, asdict(hit_opts)) if hit_opts.cases else None]
    for backend in args.backends:
        print(f"  {backend} ...", flush=True)
        for run_backend, options in filter(None, runs):
            # A fresh process per backend and case: no engine, registry, runtime or heap state carries over.
            with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                try:
                    out = pool.submit(run_backend, backend, options).result()
                except Exception as exc:  # a bug or a crash: report it, keep the other backends
                    failed = True
                    notes.append(f"{backend}: FAILED: {type(exc).__name__}: {exc}")
                    continue
            if "skipped" in out:
                notes.append(f"{backend}: skipped ({out['skipped']})")
                break
            timings.extend(out["timings"])
            if out.get("list_sql"):
                notes.append(f"{backend}: List SQL: {' '.join(out['list_sql'].split())}")
            notes.extend(out.get("notes", []))
    print()
    if timings:
        print(report.table(report.rows_of(timings)))
        print()
    for note in notes:
        print(note)
    # Targets are reported, never enforced: only a benchmark that could not run is an error.
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
