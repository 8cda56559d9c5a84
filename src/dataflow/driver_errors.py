"""Translate driver and SQLAlchemy errors into the DataFlow tree, in this one place.

The mapping is data: per backend, the error codes that mean "duplicate", "foreign key",
"null", "too long". The original exception stays attached (``raise ... from exc``, ``.original``).
"""

from __future__ import annotations

import re

import sqlalchemy.exc as sa_exc

from .errors import (ConflictError, DatabaseError, DatabaseUnavailableError, DataFlowError, DuplicateKeyError, ForeignKeyError,
                     IntegrityError, ValidationError)

# PostgreSQL SQLSTATE codes.
PG_CODES = {
    "23505": DuplicateKeyError, "23503": ForeignKeyError, "23502": ValidationError,
    "22001": ValidationError, "22003": ValidationError, "22P02": ValidationError, "23514": ValidationError,
}
# MariaDB's "Got error 193 '<constraint>' from InnoDB" (ER_GET_ERRMSG 1296 carrying HA_ERR_FK_DEPTH_EXCEEDED;
# MySQL says 1030): InnoDB follows ON DELETE CASCADE at most 15 levels deep, and refuses the whole delete beyond.
MYSQL_ENGINE_ERRORS = (1030, 1296)
MYSQL_FK_DEPTH = re.compile(r"\berror 193\b")
# MySQL / MariaDB error numbers.
MYSQL_CODES = {
    1062: DuplicateKeyError, 1451: ForeignKeyError, 1452: ForeignKeyError, 1216: ForeignKeyError,
    1217: ForeignKeyError, 1048: ValidationError, 1364: ValidationError, 1406: ValidationError,
    1264: ValidationError, 1366: ValidationError, 3140: ValidationError, 4025: ValidationError,
}
# The database gave up on a statement because of another transaction: PostgreSQL's serialization failure
# and deadlock, MySQL's deadlock and lock wait timeout. The executor tries such an operation again where
# that is safe (Backend.retry_*); what still fails is a conflict to retry (409), not a server fault.
PG_CONCURRENCY = frozenset({"40001", "40P01", "55P03"})  # 55P03: lock_timeout ran out
MYSQL_CONCURRENCY = frozenset({1213, 1205})
# SQLite has no codes through sqlite3 before 3.11's sqlite_errorname; its messages are stable.
SQLITE_MESSAGES = [
    (re.compile(r"UNIQUE constraint failed"), DuplicateKeyError),
    (re.compile(r"FOREIGN KEY constraint failed"), ForeignKeyError),
    (re.compile(r"NOT NULL constraint failed"), ValidationError),
    (re.compile(r"CHECK constraint failed"), ValidationError),
]

# What says "the server is gone or cannot be reached", per driver. Other OperationalErrors
# (SQLite's "no such table", MySQL's unknown column) are errors of the statement, not the link.
MYSQL_LINK_ERRNOS = {2002, 2003, 2005, 2006, 2013, 2055, 1040, 1045, 1049}
LINK_MESSAGES = re.compile(r"unable to open database|connection|connect|server closed|terminating|"
                           r"could not translate host|timeout expired|database .* does not exist|"
                           r"password authentication failed|Connection refused", re.I)


def _is_link_error(orig: BaseException, kinds: set[str]) -> bool:
    if not kinds & {"OperationalError", "InterfaceError"}:
        return False
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0] in MYSQL_LINK_ERRNOS
    if getattr(orig, "sqlstate", None):  # PostgreSQL reported a statement error with a SQLSTATE
        return str(orig.sqlstate).startswith(("08", "57P", "53"))
    return "psycopg" in type(orig).__module__ or bool(LINK_MESSAGES.search(str(orig)))


_HINT = {
    DuplicateKeyError: "a record with the same unique value already exists",
    ForeignKeyError: "a referenced record does not exist, or other records still refer to this one",
    ValidationError: "a value does not fit its column",
}


def _classify(orig: BaseException | None) -> type[DataFlowError] | None:
    if orig is None:
        return None
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):  # MySQL: (errno, message); its sqlstate is too coarse
        return MYSQL_CODES.get(args[0])
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate:
        return PG_CODES.get(sqlstate)
    text = str(orig)
    for pattern, cls in SQLITE_MESSAGES:
        if pattern.search(text):
            return cls
    return None


def _concurrency(orig: BaseException) -> bool:
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0] in MYSQL_CONCURRENCY
    return getattr(orig, "sqlstate", None) in PG_CONCURRENCY


#: Where drivers quote a stored or given value in their message: the value is cut out. PostgreSQL's
#: DETAIL line ("Key (code)=(jane@example.com) is duplicated") is never used at all.
VALUE_QUOTES = [
    (re.compile(r"entry '.*?' for key", re.S), "entry for key"),                 # MySQL 1062
    (re.compile(r"(value|values?):? '.*?'( for| at|$)", re.S), r"\1\2"),          # MySQL 1366, 1292, ...
    (re.compile(r"(invalid input (?:syntax|value) for [^:]*): .*$", re.S), r"\1"),  # PostgreSQL 22P02
    (re.compile(r'value ".*?" is out of range', re.S), "value is out of range"),  # PostgreSQL 22003
    (re.compile(r"(Key|key) \(.*?\)=\(.*?\)", re.S), r"\1"),                    # PostgreSQL detail style
]


def _redact(text: str) -> str:
    for pattern, replacement in VALUE_QUOTES:
        text = pattern.sub(replacement, text)
    return text


def _detail(orig: BaseException | None) -> str:
    """The driver's own one-line message, without the SQL, bound values or quoted row values."""
    if orig is None:
        return ""
    diag = getattr(orig, "diag", None)  # psycopg: primary message and detail, no parameters
    if diag is not None and getattr(diag, "message_primary", None):
        return _redact(diag.message_primary)
    args = getattr(orig, "args", ())
    if len(args) >= 2 and isinstance(args[0], int):
        # MySQL quotes the offending value ("Duplicate entry 'a@b.c' for key ..."): keep it out.
        return _redact(str(args[1]).splitlines()[0] if str(args[1]) else "")
    text = str(orig).splitlines()[0] if str(orig) else type(orig).__name__
    return _redact(text)


# Statements the database (or driver) refused for their size, which drivers report like a lost link.
PG_PARAMETER_LIMIT = re.compile(r"number of parameters must be between", re.I)
MYSQL_PACKET_TOO_LARGE = 1153       # ER_NET_PACKET_TOO_LARGE
MYSQL_GONE_WHILE_SENDING = re.compile(r"ConnectionResetError|BrokenPipeError|Broken pipe", re.I)


def _too_large(orig: BaseException, who: str, model: str | None) -> DataFlowError | None:
    """The error for a statement too large for the database, or None when that is not the cause."""
    args = getattr(orig, "args", ())
    text = str(orig)
    if "psycopg" in type(orig).__module__ and PG_PARAMETER_LIMIT.search(text):
        # psycopg refuses before sending: the protocol counts parameters in 16 bits.
        return ValidationError(
            f"{who} refused: the statement needs more than 65,535 parameters, PostgreSQL's limit for one "
            "statement (a very long $in list or too many values in one call); nothing was sent. Use fewer "
            "values per call (split the list) or filter another way", model=model, original=orig)
    if args and isinstance(args[0], int):
        if args[0] in MYSQL_ENGINE_ERRORS and MYSQL_FK_DEPTH.search(text):
            return ValidationError(
                f"{who} refused: MySQL/MariaDB follows ON DELETE CASCADE at most 15 levels deep, and these records "
                "have deeper chains of records referring to them; nothing was deleted. Delete the deepest records "
                "first", model=model, original=orig)
        if args[0] == MYSQL_PACKET_TOO_LARGE:
            return ValidationError(
                f"{who} refused: the statement with its values is larger than the server's max_allowed_packet; "
                "send smaller values or fewer rows per call, or raise max_allowed_packet on the server",
                model=model, original=orig)
        if args[0] in (2006, 2013) and MYSQL_GONE_WHILE_SENDING.search(text):
            return DatabaseError(
                f"{who} failed: the MySQL server closed the connection while the statement was being sent. "
                "The usual cause is a statement larger than the server's max_allowed_packet (a very large "
                "value, or too many rows in one call): send smaller values or fewer rows per call, or raise "
                "max_allowed_packet on the server. If the statement was small, the server went away",
                model=model, original=orig)
    return None


def translate(exc: BaseException, *, model: str | None = None, action: str = "operation",
              where: str | None = None, constraints: dict[str, str] | None = None) -> DataFlowError:
    """The DataFlow error for ``exc``; pass it to ``raise ... from exc``."""
    if isinstance(exc, DataFlowError):
        return exc
    orig = getattr(exc, "orig", None) or exc
    who = f"{model} {action}" if model else action
    if isinstance(exc, sa_exc.PendingRollbackError) and "reconnect" in str(exc):
        # An earlier operation in the open transaction lost the connection (the server restarted);
        # the server rolled the transaction back with it: nothing more can run in it.
        return DatabaseUnavailableError(f"{who} failed: the connection of the open transaction was lost by an earlier "
                                        "operation in it, and the database rolled the transaction back; leave the "
                                        "db.transaction() block and run it again", model=model, original=exc)
    # PEP 249 names the same classes in every driver, and SQLAlchemy mirrors them.
    kinds = {c.__name__ for c in type(exc).__mro__} | {c.__name__ for c in type(orig).__mro__}
    if kinds & {"IntegrityError", "DataError"} or _classify(orig):
        cls = _classify(orig) or (IntegrityError if "IntegrityError" in kinds else ValidationError)
        detail = _detail(orig)
        field = next((f for name, f in (constraints or {}).items() if name in detail), None) or _field_in(detail)
        what = f" ({field})" if field else ""
        msg = f"{who} refused by the database{what}: {_HINT.get(cls, 'a constraint failed')} ({detail})"
        return cls(msg, model=model, field=field, original=orig)
    if _concurrency(orig):
        return ConflictError(f"{who} failed: another transaction changed or locked the same records at the same time "
                             f"({_detail(orig)}); it was not applied, run it again", model=model, original=orig)
    too_large = _too_large(orig, who, model)
    if too_large is not None:
        return too_large
    if getattr(exc, "connection_invalidated", False) or _is_link_error(orig, kinds):
        place = f" at {where}" if where else ""
        return DatabaseUnavailableError(f"{who} failed: the database{place} is unreachable or the connection was lost "
                             f"({_detail(orig)}); check that the server is running and the URL is right",
                             model=model, original=orig)
    return DatabaseError(f"{who} failed in the database driver: {type(orig).__name__}: {_detail(orig)}",
                         model=model, original=orig)


def driver_message(exc: BaseException, action: str = "operation") -> str:
    """The translated message for ``exc``: what failed, without the row values the driver quoted."""
    return translate(exc, action=action).message


_FIELD_PATTERNS = [
    re.compile(r"failed: [A-Za-z0-9_]+\.(?P<f>[A-Za-z0-9_]+)"),
    re.compile(r"[Cc]olumn '(?P<f>[A-Za-z0-9_]+)'"),
    re.compile(r'column "(?P<f>[A-Za-z0-9_]+)"'),
]


def _field_in(detail: str) -> str | None:
    """Best effort: the field a constraint message is about (SQLite names it; ours are named uq_<table>_<field>)."""
    for pattern in _FIELD_PATTERNS:
        m = pattern.search(detail)
        if m:
            return m.group("f")
    return None
