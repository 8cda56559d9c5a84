"""Progress of long work (bulk loads, bulk changes, migrations): ``progress=`` on the calls that take it.

``progress`` is one of:

- ``None`` or ``False``: nothing is reported (the default; no cost);
- ``True``: a progress bar (rich) on standard error when it is a terminal (or a notebook); otherwise
  a line on the ``dataflow.progress`` logger at INFO for every tenth of the work and at the end;
- a function ``f(done, total)``: called after each chunk of rows (bulk loads) or each statement
  (migrations) with the running count and the total, and last with ``done == total``. The calls
  come inside the operation's transaction, the last one before the commit; ``done`` never goes
  down (a deadlock retry starts over silently). When the total is not known in advance (a bulk
  update or delete by filter is one statement), the first call is ``(0, None)`` and the last is
  ``(n, n)`` with ``n`` the number of records matched. A function that raises stops the operation:
  its changes are rolled back and ``AbortedError`` reaches the caller, with the function's own
  exception as ``original`` (and as ``__cause__``).

Anything else raises ``ValidationError`` naming the ``progress`` parameter.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Callable, Optional, Union

from .errors import AbortedError, ValidationError

log = logging.getLogger("dataflow.progress")

#: What a ``progress=`` parameter accepts.
ProgressArg = Union[None, bool, Callable[[int, Optional[int]], Any]]


class Reporter:
    """What one long operation reports: ``begin(total)``, ``advance(n)`` after each chunk, ``finish()``.

    This base reports nothing (``progress=None``); ``active`` tells the hot loops whether to count.
    """

    active = False

    def __init__(self, label: str = "", unit: str = "records", model: str | None = None) -> None:
        self.label, self.unit, self.model = label, unit, model
        self.total: int | None = None
        self.done = 0
        self.shown = -1                                 # the highest ``done`` reported
        self.last: tuple[int, int | None] | None = None  # the last (done, total) reported

    # ---------------------------------------------------------------- what operations call
    def begin(self, total: int | None) -> None:
        """The work starts (again, after a retry): ``total`` units, or None when not known yet."""
        self.total, self.done = total, 0
        if self.active:
            self._open(total)

    def started(self) -> None:
        """Report ``(0, None)`` once: the work started and its size is not known in advance."""
        if self.active and self.last is None:
            self._emit(0, None)

    def advance(self, n: int) -> None:
        """``n`` more units are done; reported unless a retry has not caught up yet."""
        if not self.active:
            return
        self.done += n
        if self.done > self.shown:
            self._emit(self.done, self.total)

    def finish(self, total: int | None = None) -> None:
        """The work is done (``total`` units, when it was not known before): report ``(total, total)`` once."""
        if not self.active:
            return
        if total is not None:
            self.total = total
        if self.total is None:
            self.total = self.done
        self.done = self.total
        if self.last != (self.total, self.total):
            self._emit(self.total, self.total)

    def step(self, n: int) -> None:
        """``advance`` under the name the schema layer's chunked loaders call."""
        self.advance(n)

    # ---------------------------------------------------------------- what each kind does
    def _emit(self, done: int, total: int | None) -> None:
        self.shown = max(self.shown, done)
        self.last = (done, total)
        self._show(done, total)

    def _open(self, total: int | None) -> None:
        pass

    def _show(self, done: int, total: int | None) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "Reporter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: The reporter of ``progress=None``/``False``.
NOOP = Reporter()


class CallbackReporter(Reporter):
    """Calls ``fn(done, total)``; an exception from it aborts the operation as ``AbortedError``."""

    active = True

    def __init__(self, fn: Callable[[int, Optional[int]], Any], label: str, unit: str, model: str | None) -> None:
        super().__init__(label, unit, model)
        self.fn = fn

    def _show(self, done: int, total: int | None) -> None:
        try:
            self.fn(done, total)
        except Exception as exc:
            # The type only: the message is the caller's, and may quote anything.
            raise AbortedError(f"{self.label} stopped: its progress callback raised {type(exc).__name__}",
                               model=self.model, original=exc) from exc


class LogReporter(Reporter):
    """``progress=True`` off a terminal: an INFO line at every tenth of the work and at the end."""

    active = True

    def __init__(self, label: str, unit: str, model: str | None) -> None:
        super().__init__(label, unit, model)
        self._tenth = -1

    def _show(self, done: int, total: int | None) -> None:
        if total is None:
            if done == 0:
                log.info("%s: started", self.label)
            return
        if not total:
            return  # nothing to do, nothing to say
        tenth = done * 10 // total
        if tenth > self._tenth:
            self._tenth = tenth
            log.info("%s: %d of %d %s (%d%%)", self.label, done, total, self.unit, done * 100 // total)


class BarReporter(Reporter):
    """``progress=True`` on a terminal: a rich progress bar on standard error, drawn from the first report."""

    active = True

    def __init__(self, label: str, unit: str, model: str | None, console: Any) -> None:
        super().__init__(label, unit, model)
        self._console = console
        self._bar: Any = None
        self._task: Any = None

    def _open(self, total: int | None) -> None:
        if self._bar is not None or total == 0:  # nothing to do: no bar
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                                   TimeElapsedColumn)

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn(self.unit), TaskProgressColumn(), TimeElapsedColumn(), console=self._console)
        self._bar.start()
        self._task = self._bar.add_task(self.label, total=total)

    def _show(self, done: int, total: int | None) -> None:
        self._open(total)
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total)

    def close(self) -> None:
        bar, self._bar = self._bar, None
        if bar is not None:
            bar.stop()


def reporter(progress: Any, label: str, *, unit: str = "records", model: str | None = None) -> Reporter:
    """The reporter for a ``progress=`` argument; ``ValidationError`` for anything it cannot be."""
    if progress is None or progress is False:
        return NOOP
    if progress is True:
        console = _console()
        if console is None:
            return LogReporter(label, unit, model)
        return BarReporter(label, unit, model, console)
    if callable(progress):
        return CallbackReporter(progress, label, unit, model)
    raise ValidationError(f"{label}: progress must be True, False, None or a function f(done, total), "
                          f"got {type(progress).__name__}", model=model)


def _console() -> Any:
    """A rich console on standard error when it is a terminal or a notebook; None otherwise."""
    stream = sys.stderr
    try:
        tty = stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        tty = False
    try:
        from rich.console import Console
    except ImportError:  # rich is a dependency; a broken install still loads data
        return None
    console = Console(stderr=True)
    return console if tty or console.is_jupyter else None


__all__ = ["ProgressArg", "Reporter", "NOOP", "reporter"]
