"""Issue 8, the query and values half: bounded $regex, errors inside the tree, no values in messages.

Every database test runs on each backend of DATAFLOW_TEST_URLS (the ``db`` fixture).
"""

from __future__ import annotations

from typing import Optional

import pytest

from dataflow.errors import FilterError, ValidationError
from dataflow.query import regex


def _text_model(db):
    @db.model
    class Note:
        s: str
        n: Optional[int] = None
        meta: Optional[dict] = None
    return "Note"


# -- item 2: $regex never runs away -----------------------------------------------------------

CATASTROPHIC = ["^(a+)+$", "^(a|a)*$", "^(a|aa)+$", "(.*a){12}$", "^(\\w+\\s?)*$"]


@pytest.mark.parametrize("pattern", CATASTROPHIC)
def test_backtracking_patterns_answer_on_every_database(db, pattern):
    # On SQLite these ran Python's backtracking re under the GIL until killed (2**40 paths).
    model = _text_model(db)
    db.create(model, {"s": "a" * 40 + "!"})
    db.create(model, {"s": "a" * 40})
    found = [r["s"] for r in db.list(model, {"s": {"$regex": pattern}})]
    assert found == ["a" * 40]


def test_sqlite_regexp_is_linear_on_a_long_value():
    # 5,000 characters: Python's re would take longer than the age of the universe here.
    assert regex.search("^(a+)+$", False, "a" * 5000 + "!") is False
    assert regex.search("^(a|aa)+$", True, "A" * 5000) is True


@pytest.mark.parametrize("pattern, why", [
    ("(a{100}){11}", "multiply"),
    ("(((a{10}){10}){10}){2}", "multiply"),
    ("[ab]{255}[cd]{255}[ef]{255}[gh]{255}", "written out"),
    ("(" * 51 + "a" + ")" * 51, "nest"),
    ("a{1,\u00b2}", "ASCII digits"),
    ("a{\u0663}", "ASCII digits"),
    ("a{99999999999999999999}", "limited to 255"),
    ("ab\ud800", "surrogate"),
])
def test_patterns_beyond_the_limits_are_refused(pattern, why):
    with pytest.raises(FilterError) as info:
        regex.parse(pattern, "filter.s.$regex")
    assert why in str(info.value)
    assert info.value.path == "filter.s.$regex"


def test_deeply_nested_groups_are_a_filter_error_on_every_database(db):
    model = _text_model(db)
    with pytest.raises(FilterError, match="nest at most"):
        db.list(model, {"s": {"$regex": "(" * 1000 + ")" * 1000}})


def test_regex_errors_do_not_quote_the_pattern():
    secret = "jane.doe@example(com"
    with pytest.raises(FilterError) as info:
        regex.parse(secret, "filter.s.$regex")
    assert "jane" not in str(info.value)
    with pytest.raises(FilterError) as info:
        regex.check_options("secret-x", "filter.s.$options")
    assert "secret" not in str(info.value)
    with pytest.raises(FilterError) as info:
        regex.parse("[z-a]", "filter.s.$regex")
    assert "z-a" not in str(info.value)
