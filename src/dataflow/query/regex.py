"""The ``$regex`` subset: one syntax, the same matches on SQLite, PostgreSQL and MySQL/MariaDB.

Each engine speaks a different regex dialect (PostgreSQL ARE, MariaDB PCRE2, RE2 behind SQLite's
``df_regexp``), so a pattern is parsed once into a small tree, checked against the subset, and
rendered for each engine so that it means the same thing there. (Python ``re`` renderings serve as
the reference in tests only: ``re`` backtracks, and a pattern like ``^(a+)+$`` can run for ever.)

The subset (a search, like MongoDB: the pattern may match anywhere unless anchored):

- literal characters; ``\\`` before any punctuation makes it literal (``\\.``, ``\\(``, ``\\\\``)
- ``.`` any character except a newline
- ``^`` start of the string; ``$`` end of the string or just before a final newline
- classes ``[abc]``, ``[a-z0-9_]``, ``[^...]``; inside them ``\\]``, ``\\-``, ``\\\\`` and ``\\d \\w \\s``
- ``\\d`` = ``[0-9]``, ``\\w`` = ``[A-Za-z0-9_]``, ``\\s`` = ASCII whitespace, and ``\\D \\W \\S``
  (ASCII meanings, as in MongoDB; outside classes only for the negated forms)
- ``\\n \\t \\r \\f \\v`` control characters
- quantifiers ``* + ? {m} {m,} {m,n}`` (m, n <= 255); a trailing ``?`` (lazy) is accepted and does
  not change whether a string matches
- alternation ``|``, groups ``( )`` and ``(?: )``
- option ``i`` (``$options: "i"``) for case-insensitive matching

Limits (``FilterError`` beyond them, on every database): a pattern has at most ``MAX_PATTERN``
(2,000) characters and ``MAX_DEPTH`` (50) nested groups; one count is at most ``MAX_REPEAT`` (255);
counts nested inside each other multiply to at most ``MAX_NESTED_REPEAT`` (1,000); and the pattern
with every counted repeat written out (``a{3}`` counts 3 items) has at most ``MAX_SIZE`` (1,000)
items. A lone surrogate (``"\\ud800"``) is refused.

Run time: on SQLite the pattern runs on RE2 (``google-re2``), a linear-time engine that never
backtracks and releases the GIL while it searches, so one search takes time proportional to
(value length x pattern size) at worst: with the limits above, under about 10 microseconds per
character of the value on a 2-core machine (a 1 MB value: seconds at the very worst; typical
patterns far less), and other threads keep running meanwhile. PostgreSQL's engine and MariaDB's
PCRE2 (with the server's own match limits) answer the same patterns within the same limits.

Not in the subset (rejected with ``FilterError``): backreferences, lookaround, word boundaries
(``\\b``, PostgreSQL's ``\\y``), ``\\A \\Z``, POSIX classes (``[[:alpha:]]``), Unicode properties,
inline flags, named groups, possessive quantifiers, and unescaped ``{`` that is not a quantifier.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from ..errors import FilterError

MAX_REPEAT = 255  # PostgreSQL's limit on {m,n}
MAX_PATTERN = 2000
MAX_DEPTH = 50  # nested groups
MAX_NESTED_REPEAT = 1000  # RE2's limit on counts multiplied through nesting
MAX_SIZE = 1000  # items once counted repeats are written out

DIGIT = ((ord("0"), ord("9")),)
WORD = ((ord("0"), ord("9")), (ord("A"), ord("Z")), (ord("_"), ord("_")), (ord("a"), ord("z")))
SPACE = ((9, 13), (32, 32))  # \t \n \v \f \r and space
CLASS_ESCAPES = {"d": DIGIT, "w": WORD, "s": SPACE}
CONTROL_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v"}
FLAVORS = ("python", "postgresql", "pcre", "sqlite")
_SURROGATE = re.compile("[\ud800-\udfff]")


# -- the tree ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Char:
    char: str


@dataclass(frozen=True)
class Class:
    ranges: tuple[tuple[int, int], ...]
    negated: bool = False


@dataclass(frozen=True)
class Anchor:
    end: bool  # False: ^, True: $


@dataclass(frozen=True)
class Repeat:
    item: object
    low: int
    high: int | None  # None: unbounded


@dataclass(frozen=True)
class Group:
    branches: tuple[tuple[object, ...], ...]


ANY = Class(((10, 10),), negated=True)  # "." never matches a newline


class _Parser:
    def __init__(self, pattern: str, path: str) -> None:
        self.s = pattern
        self.i = 0
        self.path = path
        self.depth = 0

    def fail(self, why: str) -> FilterError:
        # The pattern itself is not quoted: it is the caller's input.
        return FilterError(f"regex is outside the supported subset: {why} (at position {self.i})",
                           path=self.path)

    def peek(self) -> str | None:
        return self.s[self.i] if self.i < len(self.s) else None

    def parse(self) -> Group:
        tree = self.alternation()
        if self.i < len(self.s):
            raise self.fail("unbalanced ')'")
        return tree

    def alternation(self) -> Group:
        branches = [self.sequence()]
        while self.peek() == "|":
            self.i += 1
            branches.append(self.sequence())
        return Group(tuple(branches))

    def sequence(self) -> tuple[object, ...]:
        items: list[object] = []
        while (c := self.peek()) is not None and c not in "|)":
            atom = self.atom()
            items.append(self.quantified(atom))
        return tuple(items)

    def quantified(self, atom: object) -> object:
        c = self.peek()
        if c is None or c not in "*+?{":
            return atom
        if isinstance(atom, Anchor):
            raise self.fail("an anchor cannot be repeated")
        if c == "*":
            low, high = 0, None
            self.i += 1
        elif c == "+":
            low, high = 1, None
            self.i += 1
        elif c == "?":
            low, high = 0, 1
            self.i += 1
        else:
            low, high = self.bounds()
        if self.peek() == "?":  # lazy: same matches for a yes/no search
            self.i += 1
        if self.peek() is not None and self.peek() in "*+{":
            raise self.fail("a quantifier cannot follow a quantifier")
        if self.peek() == "?":
            raise self.fail("a quantifier cannot follow a quantifier")
        return Repeat(atom, low, high)

    def bounds(self) -> tuple[int, int | None]:
        end = self.s.find("}", self.i)
        body = self.s[self.i + 1:end] if end > 0 else ""
        low_s, comma, high_s = body.partition(",")
        if end < 0 or not _ascii_digits(low_s) or (high_s and not _ascii_digits(high_s)):
            raise self.fail("'{' must start a quantifier {m}, {m,} or {m,n} (ASCII digits); "
                            "write \\{ for a literal brace")
        if len(low_s) > 3 or len(high_s) > 3:
            raise self.fail(f"repeat counts are limited to {MAX_REPEAT}")
        low = int(low_s)
        high = (int(high_s) if high_s else None) if comma else low
        if low > MAX_REPEAT or (high is not None and high > MAX_REPEAT):
            raise self.fail(f"repeat counts are limited to {MAX_REPEAT}")
        if high is not None and high < low:
            raise self.fail("in a {m,n} quantifier the maximum is below the minimum")
        self.i = end + 1
        return low, high

    def atom(self) -> object:
        c = self.s[self.i]
        if c == "(":
            self.i += 1
            if self.s.startswith("?:", self.i):
                self.i += 2
            elif self.peek() == "?":
                raise self.fail("only plain groups ( ) and (?: ) are supported (no lookaround, "
                                "named groups or inline flags; use $options for 'i')")
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.fail(f"groups nest at most {MAX_DEPTH} deep")
            inner = self.alternation()
            self.depth -= 1
            if self.peek() != ")":
                raise self.fail("missing ')'")
            self.i += 1
            return inner
        if c in "*+?":
            raise self.fail(f"'{c}' has nothing to repeat")
        if c == "{":
            raise self.fail("'{' has nothing to repeat; write \\{ for a literal brace")
        self.i += 1
        if c == ".":
            return ANY
        if c == "^":
            return Anchor(end=False)
        if c == "$":
            return Anchor(end=True)
        if c == "[":
            return self.char_class()
        if c == "\\":
            return self.escape(in_class=False)
        return Char(c)

    def escape(self, *, in_class: bool) -> object:
        if self.i >= len(self.s):
            raise self.fail("pattern ends with a lone backslash")
        c = self.s[self.i]
        self.i += 1
        if c in CLASS_ESCAPES:
            return Class(CLASS_ESCAPES[c])
        if c.lower() in CLASS_ESCAPES and not in_class:
            return Class(CLASS_ESCAPES[c.lower()], negated=True)
        if c in CONTROL_ESCAPES:
            return Char(CONTROL_ESCAPES[c])
        if c.isascii() and not c.isalnum() and c.isprintable():
            return Char(c)
        where = " inside a class" if in_class and c.lower() in CLASS_ESCAPES else ""
        what = f"escape \\{c}" if c.isascii() and c.isprintable() else "an escaped non-ASCII or control character"
        raise self.fail(f"{what}{where} is not supported")

    def char_class(self) -> Class:
        negated = self.peek() == "^"
        if negated:
            self.i += 1
        ranges: list[tuple[int, int]] = []
        first = True
        while True:
            c = self.peek()
            if c is None:
                raise self.fail("missing ']'")
            if c == "]":
                if first:
                    raise self.fail("empty class; write \\] for a literal ']'")
                self.i += 1
                break
            first = False
            lo = self.class_char()
            if isinstance(lo, Class):
                ranges.extend(lo.ranges)
                continue
            if self.peek() == "-" and self.i + 1 < len(self.s) and self.s[self.i + 1] != "]":
                self.i += 1
                hi = self.class_char()
                if isinstance(hi, Class):
                    raise self.fail("a range cannot end in a class escape")
                if ord(hi) < ord(lo):
                    raise self.fail("a range in a class is reversed (its end is below its start)")
                ranges.append((ord(lo), ord(hi)))
            else:
                ranges.append((ord(lo), ord(lo)))
        return Class(tuple(ranges), negated)

    def class_char(self) -> str | Class:
        c = self.s[self.i]
        if c == "[":
            raise self.fail("'[' inside a class (POSIX classes are not supported); write \\[")
        self.i += 1
        if c == "\\":
            item = self.escape(in_class=True)
            return item.char if isinstance(item, Char) else item
        return c


@lru_cache(maxsize=1024)
def parse(pattern: str, path: str = "filter") -> Group:
    """Parse ``pattern`` into the subset's tree, or raise ``FilterError`` naming ``path``."""
    if not isinstance(pattern, str):
        raise FilterError(f"$regex needs a string pattern, got {type(pattern).__name__}", path=path)
    if len(pattern) > MAX_PATTERN:
        raise FilterError(f"regex is longer than {MAX_PATTERN} characters", path=path)
    if not pattern.isascii() and _SURROGATE.search(pattern):
        raise FilterError("regex contains a lone surrogate (not a Unicode character)", path=path)
    tree = _Parser(pattern, path).parse()
    size, nested = _measure(tree)
    if nested > MAX_NESTED_REPEAT:
        raise FilterError(f"regex is too complex: counts of nested repeats multiply to more than "
                          f"{MAX_NESTED_REPEAT}", path=path)
    if size > MAX_SIZE:
        raise FilterError(f"regex is too complex: written out, its counted repeats make more than "
                          f"{MAX_SIZE} items", path=path)
    return tree


def _ascii_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _measure(node: object) -> tuple[int, int]:
    """(items with counted repeats written out, largest product of counts through nesting)."""
    if isinstance(node, Repeat):
        size, nested = _measure(node.item)
        count = node.high if node.high is not None else node.low
        if (node.low, node.high) in ((0, None), (1, None), (0, 1)):
            count = 1  # * + ?: no copies
        count = max(count, 1)
        return size * count, nested * count
    if isinstance(node, Group):
        size, nested = 0, 1
        for branch in node.branches:
            for item in branch:
                s, n = _measure(item)
                size, nested = size + s, max(nested, n)
        return size, nested
    return 1, 1


def check_options(options: object, path: str) -> bool:
    """Validate ``$options``; return True for case-insensitive."""
    if not isinstance(options, str) or any(o != "i" for o in options):
        kind = "another string" if isinstance(options, str) else type(options).__name__
        raise FilterError(f"$options supports only 'i' (case-insensitive), got {kind}", path=path)
    return "i" in options


# -- rendering --------------------------------------------------------------------------------

def _esc(code: int, flavor: str) -> str:
    char = chr(code)
    if char.isascii() and char.isalnum():
        return char
    if flavor == "pcre":
        return f"\\x{{{code:x}}}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _render(node: object, flavor: str) -> str:
    if isinstance(node, Char):
        return _esc(ord(node.char), flavor)
    if isinstance(node, Class):
        body = "".join(_esc(lo, flavor) if lo == hi else f"{_esc(lo, flavor)}-{_esc(hi, flavor)}"
                       for lo, hi in node.ranges)
        return f"[{'^' if node.negated else ''}{body}]"
    if isinstance(node, Anchor):
        if not node.end:
            return "^"
        # PostgreSQL's $ is the very end; the subset's $ also allows one final newline (PCRE, re).
        return "(?=\\n?$)" if flavor == "postgresql" else "$"
    if isinstance(node, Repeat):
        inner = _render(node.item, flavor)
        if node.low == 0 and node.high is None:
            q = "*"
        elif node.low == 1 and node.high is None:
            q = "+"
        elif node.low == 0 and node.high == 1:
            q = "?"
        elif node.high is None:
            q = f"{{{node.low},}}"
        elif node.high == node.low:
            q = f"{{{node.low}}}"
        else:
            q = f"{{{node.low},{node.high}}}"
        return inner + q
    if isinstance(node, Group):
        return "(?:" + "|".join("".join(_render(i, flavor) for i in b) for b in node.branches) + ")"
    raise TypeError(node)  # pragma: no cover


#: The prefix that fixes case sensitivity. MariaDB's default follows the column collation.
_CASE_PREFIX = {
    ("python", False): "", ("python", True): "(?i)",
    ("postgresql", False): "", ("postgresql", True): "(?i)",
    ("pcre", False): "(?-i)", ("pcre", True): "(?i)",
}

#: SQLAlchemy dialect name -> regex flavor.
DIALECT_FLAVOR = {"sqlite": "sqlite", "postgresql": "postgresql", "mysql": "pcre", "mariadb": "pcre"}


@lru_cache(maxsize=2048)
def render(pattern: str, insensitive: bool, flavor: str) -> str:
    """Render a validated subset ``pattern`` for one engine.

    The ``sqlite`` flavor is the subset pattern itself after one flag character (``i`` or ``c``):
    ``df_regexp`` renders it for RE2 per value (see ``search``).
    """
    tree = parse(pattern)
    if flavor == "sqlite":
        return ("i" if insensitive else "c") + pattern
    top = tree.branches
    body = _render(tree, flavor) if len(top) > 1 else "".join(_render(i, flavor) for i in top[0])
    return _CASE_PREFIX[(flavor, insensitive)] + body


def python_regex(pattern: str, insensitive: bool = False):
    """The compiled Python regex with the subset's meaning (used by SQLite and reference tests)."""
    return _compiled(render(pattern, insensitive, "python"))


@lru_cache(maxsize=2048)
def _compiled(rendered: str):
    import re

    return re.compile(rendered)


# -- RE2 (SQLite) -----------------------------------------------------------------------------
#
# RE2 has no lookahead, and its ``$`` is either the very end (single-line) or before any newline
# (multi-line), while the subset's ``$`` is the end or just before a *final* newline. So before a
# search, every newline of the value except a final one is replaced by a sentinel character that
# does not occur in the value, the pattern is rendered so that the sentinel matches exactly where a
# newline would, and ``$`` becomes RE2's multi-line ``$``: the only newline left is a final one.

_NEVER = "[^\\x{0}-\\x{10ffff}]"
_ALWAYS = "[\\x{0}-\\x{10ffff}]"
#: Sentinel candidates: noncharacters, then private use: no case, never produced by normal text.
_SENTINELS = (range(0xFDD0, 0xFDF0), range(0xE000, 0xF900), range(0xF0000, 0xFFFFE), range(0x100000, 0x10FFFE))
RE2_MAX_MEM = 64 << 20  # RE2's DFA cache: enough that the DFA (not the slower NFA) runs in practice


def _esc2(code: int) -> str:
    char = chr(code)
    return char if char.isascii() and char.isalnum() else f"\\x{{{code:x}}}"


def _without(ranges: tuple, code: int) -> list:
    out = []
    for lo, hi in ranges:
        if lo <= code <= hi:
            if lo < code:
                out.append((lo, code - 1))
            if code < hi:
                out.append((code + 1, hi))
        else:
            out.append((lo, hi))
    return out


def _render_re2(node: object, sentinel: int) -> str:
    if isinstance(node, Char):
        code = ord(node.char)
        if code == 10:
            return f"[\\x{{a}}{_esc2(sentinel)}]"
        return _NEVER if code == sentinel else _esc2(code)
    if isinstance(node, Class):
        has_nl = any(lo <= 10 <= hi for lo, hi in node.ranges)
        matches_nl = has_nl != node.negated
        ranges = _without(node.ranges, sentinel)
        if matches_nl != node.negated:  # the sentinel goes where a newline is: in the listed set
            ranges.append((sentinel, sentinel))
        if not ranges:
            return _ALWAYS if node.negated else _NEVER
        body = "".join(_esc2(lo) if lo == hi else f"{_esc2(lo)}-{_esc2(hi)}" for lo, hi in ranges)
        return f"[{'^' if node.negated else ''}{body}]"
    if isinstance(node, Anchor):
        return "(?m:$)" if node.end else "^"
    if isinstance(node, Repeat):
        inner = _render_re2(node.item, sentinel)
        if node.high is None:
            q = "*" if node.low == 0 else "+" if node.low == 1 else f"{{{node.low},}}"
        elif node.low == 0 and node.high == 1:
            q = "?"
        else:
            q = f"{{{node.low}}}" if node.high == node.low else f"{{{node.low},{node.high}}}"
        return inner + q
    if isinstance(node, Group):
        return "(?:" + "|".join("".join(_render_re2(i, sentinel) for i in b) for b in node.branches) + ")"
    raise TypeError(node)  # pragma: no cover


def render_re2(pattern: str, insensitive: bool, sentinel: int = _SENTINELS[0][0]) -> str:
    """``pattern`` for RE2, for values whose non-final newlines were replaced by ``sentinel``."""
    return ("(?i)" if insensitive else "") + _render_re2(parse(pattern), sentinel)


@lru_cache(maxsize=2048)
def _re2(pattern: str, insensitive: bool, sentinel: int):
    import re2

    options = re2.Options()
    options.max_mem = RE2_MAX_MEM
    return re2.compile(render_re2(pattern, insensitive, sentinel), options)


def _sentinel_for(value: str) -> int:
    first = _SENTINELS[0][0]
    if chr(first) not in value:
        return first
    used = set(value)
    for block in _SENTINELS:
        for code in block:
            if chr(code) not in used:
                return code
    raise FilterError("a value holds every private-use character; $regex cannot search it")  # pragma: no cover


def search(pattern: str, insensitive: bool, value: str) -> bool:
    """Does subset ``pattern`` match somewhere in ``value``? Linear time (RE2); releases the GIL."""
    sentinel = _sentinel_for(value) if not value.isascii() else _SENTINELS[0][0]
    newline = value.find("\n")
    if newline != -1 and newline != len(value) - 1:
        mark = chr(sentinel)
        value = (value[:-1].replace("\n", mark) + "\n") if value.endswith("\n") else value.replace("\n", mark)
    return _re2(pattern, insensitive, sentinel).search(value) is not None
