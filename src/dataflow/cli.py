"""``dataflow``: migrate, list models and read the migration history of an app's DataFlow.

    dataflow migrate MODULE:db [--dry-run] [--allow-destructive]
    dataflow models  MODULE:db [--json]
    dataflow history MODULE:db [--json] [--sql]

``MODULE:db`` names the ``DataFlow`` instance: a module importable from the current directory
(``myapp.models``) or a file (``app.py``), then the attribute (``db`` when left out).
``migrate`` shows its progress on standard error: a bar on a terminal, one line per SQL statement
applied otherwise. Exit codes: 0 done, 1 error (the message says what and what to do), 2 usage.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

OK, ERROR, USAGE = 0, 1, 2


class UsageError(Exception):
    """The command line does not name something usable."""


def load_target(target: str) -> Any:
    """Import ``MODULE:attr`` (``attr`` defaults to ``db``) and return the attribute."""
    from .core.dataflow import DataFlow

    module_name, _, attr = target.partition(":")
    attr = attr or "db"
    if not module_name or not all(part.isidentifier() for part in attr.split(".")):
        raise UsageError(f"{target!r} is not MODULE:ATTRIBUTE (e.g. myapp.models:db or app.py:db)")
    if module_name.endswith(".py") or os.sep in module_name:
        path = Path(module_name).resolve()
        if not path.is_file():
            raise UsageError(f"no file {module_name!r}")
        sys.path.insert(0, str(path.parent))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise UsageError(f"cannot load {module_name!r} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
    else:
        sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name or module_name.startswith(f"{exc.name}."):  # not one of its imports
                raise UsageError(f"no module named {module_name!r} (looked in {os.getcwd()} and sys.path)") from None
            raise
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, DataFlow):
        raise UsageError(f"{module_name}:{attr} is a {type(obj).__name__}, not a DataFlow instance")
    return obj


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def migrate_progress(stream: Any = None) -> Any:
    """``migrate``'s progress: a bar (``True``) when standard error is a terminal, else one line per statement."""
    stream = stream or sys.stderr
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):
        pass

    def line(done: int, total: int | None) -> None:
        if total:
            print(f"migrate: statement {done} of {total} applied", file=stream, flush=True)
    return line


def cmd_migrate(db: Any, args: argparse.Namespace) -> int:
    progress = None if args.dry_run else migrate_progress()
    plan = db.migrate(allow_destructive=args.allow_destructive, dry_run=args.dry_run, progress=progress)
    if args.dry_run:
        print("Dry run: nothing was changed.")
    print(plan if plan is not None else "Migration done.")
    return OK


def cmd_models(db: Any, args: argparse.Namespace) -> int:
    infos = {name: db.get_model_info(name) for name in db.list_models()}
    if args.json:
        _print_json(infos)
        return OK
    if not infos:
        print("No models declared.")
    for name, info in infos.items():
        print(f"{name} (table {info.get('table', '?')})")
        for field, f in (info.get("fields") or {}).items():
            traits = [t for t, on in (("primary key", f.get("primary_key")), ("unique", f.get("unique")),
                                      ("required", f.get("required")), ("nullable", f.get("nullable"))) if on]
            if f.get("references"):
                traits.append(f"-> {f['references']}")
            if f.get("default") is not None:
                traits.append(f"default {f['default']!r}")
            print(f"  {field}: {f.get('type', '?')}" + (f"  ({', '.join(traits)})" if traits else ""))
    return OK


def cmd_history(db: Any, args: argparse.Namespace) -> int:
    rows = db.history()
    if args.json:
        _print_json(rows)
        return OK
    if not rows:
        print("No migration recorded.")
    for row in rows:
        flag = "  [destructive]" if row.get("destructive") else ""
        print(f"#{row['id']}  {row['applied_at']}  checksum {row['checksum'][:12]}{flag}")
        for line in str(row["description"]).splitlines():
            print(f"    {line}")
        if args.sql:
            print("    SQL:\n" + "\n".join(f"      {line}" for line in str(row["sql"]).splitlines()))
    return OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dataflow", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Exit codes: 0 done, 1 error, 2 usage.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is done (INFO)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    target: dict[str, Any] = dict(metavar="MODULE:db", help="the DataFlow instance, e.g. myapp.models:db or app.py:db")

    migrate = commands.add_parser("migrate", help="bring the database up to date with the models")
    migrate.add_argument("target", **target)
    migrate.add_argument("--dry-run", action="store_true", help="show the plan and its SQL; change nothing")
    migrate.add_argument("--allow-destructive", action="store_true",
                         help="also drop removed columns and tables, narrow types (data may be lost)")
    migrate.set_defaults(run=cmd_migrate)

    models = commands.add_parser("models", help="list the declared models and their fields")
    models.add_argument("target", **target)
    models.add_argument("--json", action="store_true", help="print JSON")
    models.set_defaults(run=cmd_models)

    history = commands.add_parser("history", help="show the applied migrations")
    history.add_argument("target", **target)
    history.add_argument("--json", action="store_true", help="print JSON")
    history.add_argument("--sql", action="store_true", help="include each migration's SQL")
    history.set_defaults(run=cmd_history)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``dataflow`` command; return its exit code."""
    from .errors import DataFlowError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage
        return USAGE if exc.code else OK
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        db = load_target(args.target)
    except UsageError as exc:
        print(f"dataflow: {exc}", file=sys.stderr)
        return USAGE
    except Exception as exc:  # the app's module failed while importing
        print(f"error: importing {args.target}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return ERROR
    try:
        return args.run(db, args)
    except DataFlowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ERROR
    except Exception as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return ERROR
    finally:
        db.close()


if __name__ == "__main__":
    sys.exit(main())
