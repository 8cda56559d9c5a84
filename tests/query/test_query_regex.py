"""The $regex subset: what it accepts, how it renders per engine, and that it matches the same
strings on every database as Python's ``re`` (ASCII mode) does for the same pattern."""

from __future__ import annotations

import re
from typing import Optional

import pytest

from dataflow.errors import FilterError
from dataflow.query import compile_filter, regex
from dfq_support import insert, make_table, matching_ids

RENDERED = [
    # pattern, insensitive, python, postgresql, pcre
    ("^Jo", False, "^Jo", "^Jo", "(?-i)^Jo"),
    ("^jo", True, "(?i)^jo", "(?i)^jo", "(?i)^jo"),
    ("a.c", False, "a[^\\u000a]c", "a[^\\u000a]c", "(?-i)a[^\\x{a}]c"),
    ("b$", False, "b$", "b(?=\\n?$)", "(?-i)b$"),
    ("a|b", False, "(?:a|b)", "(?:a|b)", "(?-i)(?:a|b)"),
    ("(ab)+", False, "(?:ab)+", "(?:ab)+", "(?-i)(?:ab)+"),
    ("x{2,3}y{4}z{1,}", False, "x{2,3}y{4}z+", "x{2,3}y{4}z+", "(?-i)x{2,3}y{4}z+"),
    ("[a-c_]\\d", False, "[a-c\\u005f][0-9]", "[a-c\\u005f][0-9]", "(?-i)[a-c\\x{5f}][0-9]"),
    ("\\.\\*", False, "\\u002e\\u002a", "\\u002e\\u002a", "(?-i)\\x{2e}\\x{2a}"),
    ("é", False, "\\u00e9", "\\u00e9", "(?-i)\\x{e9}"),
    ("a*?", False, "a*", "a*", "(?-i)a*"),
]


@pytest.mark.parametrize("pattern, insensitive, python, postgresql, pcre", RENDERED)
def test_rendering_per_engine(pattern, insensitive, python, postgresql, pcre):
    assert regex.render(pattern, insensitive, "python") == python
    assert regex.render(pattern, insensitive, "postgresql") == postgresql
    assert regex.render(pattern, insensitive, "pcre") == pcre


REJECTED = ["(a", "a)", "[abc", "[]", "[z-a]", "*a", "a**", "a{3", "{3}", "a{256}", "a{3,2}", "a\\b", "\\bword",
            "\\y", "\\A", "\\Z", "(?=a)", "(?!a)", "(?<=a)", "(?P<n>a)", "(?i)a", "(a)\\1", "[[:alpha:]]",
            "\\p{L}", "a\\", "[\\D]", "^*", "a++", "\\x41"]


@pytest.mark.parametrize("pattern", REJECTED)
def test_patterns_outside_the_subset_are_rejected(pattern):
    with pytest.raises(FilterError) as info:
        regex.parse(pattern, "filter.name.$regex")
    assert info.value.path == "filter.name.$regex"


class Text:
    __dataflow__ = {"timestamps": False}
    value: Optional[str] = None


STRINGS = ["John", "john", "JOHN", "Johnny", "ab\n", "a\nb", "ab", "", "a.b", "a*b", "x{2}", "a_b-c", "abc123",
           "  spaced\tout ", "aaa", "ba", "A-Z", "tail$", "[bracket]", "back\\slash", "pipe|d", "(paren)",
           "é", "日本"]

PATTERNS = [
    ("^J", ""), ("^j", "i"), ("ohn$", ""), ("OHN$", "i"), ("^John$", ""), ("b$", ""), ("^b", ""), ("a.b", ""),
    ("a\\.b", ""), ("a\\*b", ""), ("x\\{2\\}", ""), ("^a+$", ""), ("^(ab|ba)$", ""), ("^a{2,3}$", ""),
    ("[0-9]{3}", ""), ("\\d", ""), ("\\D", ""), ("^\\w+$", ""), ("\\s", ""), ("^\\S+$", ""), ("[^a-z]", ""),
    ("[_-]", ""), ("^[A-Z]-[A-Z]$", ""), ("\\$$", ""), ("\\[", ""), ("\\\\", ""), ("\\|", ""), ("^\\(", ""),
    ("^(?:j|J)o(hn)?", ""), ("n{2}", ""), ("^.$", ""), ("", ""), ("^$", ""), ("[a-c]+", "i"), ("^é$", ""),
    ("^..$", ""), ("\\t", ""), ("a\\nb", ""),
]


def test_the_same_matches_on_every_database(engine):
    texts = make_table(engine, Text)
    with engine.begin() as conn:
        insert(conn, texts, [{"value": s} for s in STRINGS])
        wrong = []
        for pattern, options in PATTERNS:
            flags = re.ASCII | (re.IGNORECASE if options else 0)
            expected = [i + 1 for i, s in enumerate(STRINGS) if re.search(pattern, s, flags)]
            cond = {"$regex": pattern, **({"$options": options} if options else {})}
            got = matching_ids(conn, texts, compile_filter(texts, {"value": cond}))
            if got != expected:
                wrong.append(f"{pattern!r} {options}: expected {[STRINGS[i - 1] for i in expected]}, "
                             f"got {[STRINGS[i - 1] for i in got]}")
    assert not wrong, "\n".join(wrong)
