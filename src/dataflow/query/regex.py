"""The ``$regex`` subset: one syntax, the same matches on SQLite, PostgreSQL and MySQL/MariaDB.

Each engine speaks a different regex dialect (PostgreSQL ARE, MariaDB PCRE2, Python ``re`` behind
SQLite's ``df_regexp``), so a pattern is parsed once into a small tree, checked against the subset,
and rendered for each engine so that it means the same thing there.

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

Not in the subset (rejected with ``FilterError``): backreferences, lookaround, word boundaries
(``\\b``, PostgreSQL's ``\\y``), ``\\A \\Z``, POSIX classes (``[[:alpha:]]``), Unicode properties,
inline flags, named groups, possessive quantifiers, and unescaped ``{`` that is not a quantifier.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ..errors import FilterError

MAX_REPEAT = 255  # PostgreSQL's limit on {m,n}
MAX_PATTERN = 2000

DIGIT = ((ord("0"), ord("9")),)
WORD = ((ord("0"), ord("9")), (ord("A"), ord("Z")), (ord("_"), ord("_")), (ord("a"), ord("z")))
SPACE = ((9, 13), (32, 32))  # \t \n \v \f \r and space
CLASS_ESCAPES = {"d": DIGIT, "w": WORD, "s": SPACE}
CONTROL_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v"}
FLAVORS = ("python", "postgresql", "pcre")


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

    def fail(self, why: str) -> FilterError:
        return FilterError(f"regex {self.s!r} is outside the supported subset: {why} (at position {self.i})",
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
        if end < 0 or not low_s.isdigit() or (high_s and not high_s.isdigit()) or not low_s.isascii():
            raise self.fail("'{' must start a quantifier {m}, {m,} or {m,n}; write \\{ for a literal brace")
        low = int(low_s)
        high = (int(high_s) if high_s else None) if comma else low
        if low > MAX_REPEAT or (high is not None and high > MAX_REPEAT):
            raise self.fail(f"repeat counts are limited to {MAX_REPEAT}")
        if high is not None and high < low:
            raise self.fail(f"{{{body}}}: the maximum is below the minimum")
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
            inner = self.alternation()
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
        raise self.fail(f"escape \\{c}{where} is not supported")

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
                    raise self.fail(f"range {lo}-{hi} is reversed")
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
    return _Parser(pattern, path).parse()


def check_options(options: object, path: str) -> bool:
    """Validate ``$options``; return True for case-insensitive."""
    if not isinstance(options, str) or any(o != "i" for o in options):
        raise FilterError(f"$options supports only 'i' (case-insensitive), got {options!r}", path=path)
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
DIALECT_FLAVOR = {"sqlite": "python", "postgresql": "postgresql", "mysql": "pcre", "mariadb": "pcre"}


@lru_cache(maxsize=2048)
def render(pattern: str, insensitive: bool, flavor: str) -> str:
    """Render a validated subset ``pattern`` for one engine."""
    tree = parse(pattern)
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
