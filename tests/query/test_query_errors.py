"""Malformed filters, sorts and pipelines raise FilterError naming the offending part.

No database is involved: errors are raised while compiling, before any SQL could be sent.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Optional

import pytest
import sqlalchemy as sa

from dataflow.errors import FilterError, ValidationError
from dataflow.models import spec_from_class
from dataflow.query import compile_filter, compile_pipeline, compile_sort
from dataflow.schema.tables import build_table


class Person:
    __dataflow__ = {"timestamps": False}
    name: Optional[str] = None
    age: Optional[int] = None
    active: Optional[bool] = None
    seen: Optional[datetime] = None
    born: Optional[date] = None
    code: Optional[uuid.UUID] = None
    amount: Optional[Decimal] = None
    status: Optional[str] = None
    metadata: Optional[dict] = None
    tags: Optional[list] = None


TABLE = build_table(spec_from_class(Person), sa.MetaData())

FILTERS = [
    ({"age": {"$gtx": 5}}, "filter.age.$gtx"),
    ({"nope": 1}, "filter.nope"),
    ({1: 2}, "filter.1"),
    ({"$foo": 1}, "filter.$foo"),
    ({"age": "abc"}, "filter.age"),
    ({"age": True}, "filter.age"),
    ({"active": 1}, "filter.active"),
    ({"name": 5}, "filter.name"),
    ({"age": {"$gt": 1, "x": 2}}, "filter.age"),
    ({"tags": {"$in": "x"}}, "filter.tags.$in"),
    ({"age": {"$in": [1, "x"]}}, "filter.age.$in[1]"),
    ({"age": {"$nin": 5}}, "filter.age.$nin"),
    ({"age": {"$exists": "yes"}}, "filter.age.$exists"),
    ({"age": {"$between": [1]}}, "filter.age.$between"),
    ({"age": {"$between": [1, "x"]}}, "filter.age.$between[1]"),
    ({"age": {"$not": 5}}, "filter.age.$not"),
    ({"age": {"$not": {"$gtx": 5}}}, "filter.age.$not.$gtx"),
    ({"age.x": 1}, "filter.age.x"),
    ({"metadata..x": 1}, "filter.metadata..x"),
    ({'metadata.a"b': 1}, 'filter.metadata.a"b'),
    ({"metadata.x": {"$gt": {"a": 1}}}, "filter.metadata.x.$gt"),
    ({"metadata.x": {"$gt": [1]}}, "filter.metadata.x.$gt"),
    ({"name": {"$regex": "(a"}}, "filter.name.$regex"),
    ({"name": {"$regex": "a\\b"}}, "filter.name.$regex"),
    ({"name": {"$regex": "\\y"}}, "filter.name.$regex"),
    ({"name": {"$regex": "(?=a)"}}, "filter.name.$regex"),
    ({"name": {"$regex": "(a)\\1"}}, "filter.name.$regex"),
    ({"name": {"$regex": "[[:alpha:]]"}}, "filter.name.$regex"),
    ({"name": {"$regex": "a{300}"}}, "filter.name.$regex"),
    ({"name": {"$regex": "a{2"}}, "filter.name.$regex"),
    ({"name": {"$regex": "*a"}}, "filter.name.$regex"),
    ({"name": {"$regex": "a**"}}, "filter.name.$regex"),
    ({"name": {"$regex": "[z-a]"}}, "filter.name.$regex"),
    ({"name": {"$regex": 5}}, "filter.name.$regex"),
    ({"name": {"$regex": "x", "$options": "m"}}, "filter.name.$options"),
    ({"name": {"$options": "i"}}, "filter.name.$options"),
    ({"age": {"$regex": "1"}}, "filter.age.$regex"),
    ({"age": {"$like": "x"}}, "filter.age.$like"),
    ({"name": {"$like": 5}}, "filter.name.$like"),
    ({"name": {"$ilike": None}}, "filter.name.$ilike"),
    ({"$or": {"age": 1}}, "filter.$or"),
    ({"$or": []}, "filter.$or"),
    ({"$and": [{"age": 1}, "x"]}, "filter.$and[1]"),
    ({"$or": [{"age": 1}, {"nope": 2}]}, "filter.$or[1].nope"),
    ({"$nor": [{"age": {"$in": [1, "x"]}}]}, "filter.$nor[0].age.$in[1]"),
    ({"$not": 5}, "filter.$not"),
    ({"tags": {"$size": -1}}, "filter.tags.$size"),
    ({"tags": {"$size": "3"}}, "filter.tags.$size"),
    ({"tags": {"$size": {"$foo": 1}}}, "filter.tags.$size.$foo"),
    ({"tags": {"$size": {"$gt": 1.5}}}, "filter.tags.$size.$gt"),
    ({"age": {"$size": 3}}, "filter.age.$size"),
    ({"age": {"$contains": 3}}, "filter.age.$contains"),
    ({"age": {"$all": [3]}}, "filter.age.$all"),
    ({"tags": {"$all": "x"}}, "filter.tags.$all"),
    ({"tags": {"$elemMatch": {}}}, "filter.tags.$elemMatch"),
    ({"tags": {"$elemMatch": 5}}, "filter.tags.$elemMatch"),
    ({"tags": {"$elemMatch": {"k": {"$bad": 1}}}}, "filter.tags.$elemMatch.k.$bad"),
    ({"seen": {"$gt": {"$date": "yesterday-ish"}}}, "filter.seen.$gt.$date"),
    ({"seen": {"$gt": {"$date": 5}}}, "filter.seen.$gt.$date"),
    ({"seen": "not a date"}, "filter.seen"),
    ({"born": "2024-13-01"}, "filter.born"),
    ({"code": "not-a-uuid"}, "filter.code"),
    ({"amount": "ten"}, "filter.amount"),
    ({"amount": {"$gt": [1]}}, "filter.amount.$gt"),
]


@pytest.mark.parametrize("filt, path", FILTERS, ids=[p for _, p in FILTERS])
def test_malformed_filter_names_the_path(filt, path):
    with pytest.raises(FilterError) as info:
        compile_filter(TABLE, filt)
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: ")
    assert isinstance(info.value, ValidationError)


def test_a_filter_must_be_a_dict():
    with pytest.raises(FilterError) as info:
        compile_filter(TABLE, "age > 5")  # type: ignore[arg-type]
    assert info.value.path == "filter"


def test_the_caller_chooses_the_root_of_the_path():
    with pytest.raises(FilterError) as info:
        compile_filter(TABLE, {"age": {"$gtx": 1}}, path="where")
    assert info.value.path == "where.age.$gtx"


def test_the_error_says_what_to_do():
    with pytest.raises(FilterError, match="unknown field 'nmae'.*fields are: .*name"):
        compile_filter(TABLE, {"nmae": "x"})
    with pytest.raises(FilterError, match="supported: .*\\$gt"):
        compile_filter(TABLE, {"age": {"$gtx": 1}})
    with pytest.raises(FilterError, match="lookaround"):
        compile_filter(TABLE, {"name": {"$regex": "(?!x)"}})


SORTS = [
    ({"nope": 1}, "sort.nope"),
    ({"age": 2}, "sort.age"),
    ({"age": True}, "sort.age"),
    (["-nope"], "sort[0]"),
    ([("age", "sideways")], "sort[0]"),
    ([5], "sort[0]"),
    (5, "sort"),
    ("age.x", "sort"),
]


@pytest.mark.parametrize("sort, path", SORTS, ids=[p for _, p in SORTS])
def test_malformed_sort_names_the_path(sort, path):
    with pytest.raises(FilterError) as info:
        compile_sort(TABLE, sort)
    assert info.value.path == path


PIPELINES = [
    ("not a list", "pipeline"),
    ([5], "pipeline[0]"),
    ([{"$match": {}, "$limit": 1}], "pipeline[0]"),
    ([{"$bogus": 1}], "pipeline[0].$bogus"),
    ([{"$match": {"age": {"$gtx": 1}}}], "pipeline[0].$match.age.$gtx"),
    ([{"$match": "x"}], "pipeline[0].$match"),
    ([{"$group": {"total": {"$sum": "$amount"}}}], "pipeline[0].$group"),
    ([{"$group": {"_id": "$nope"}}], "pipeline[0].$group._id"),
    ([{"$group": {"_id": {"a": "$nope"}}}], "pipeline[0].$group._id.a"),
    ([{"$group": {"_id": None, "total": {"$summ": "$amount"}}}], "pipeline[0].$group.total"),
    ([{"$group": {"_id": None, "total": "$amount"}}], "pipeline[0].$group.total"),
    ([{"$group": {"_id": None, "total": {"$sum": "$status"}}}], "pipeline[0].$group.total.$sum"),
    ([{"$group": {"_id": None, "total": {"$avg": "$nope"}}}], "pipeline[0].$group.total.$avg"),
    ([{"$group": {"_id": None, "a.b": {"$sum": 1}}}], "pipeline[0].$group.a.b"),
    ([{"$group": {"_id": None, "n": {"$count": 1}}}], "pipeline[0].$group.n.$count"),
    ([{"$group": {"_id": "$status", "n": {"$sum": 1}}}, {"$match": {"status": "x"}}], "pipeline[1].$match.status"),
    ([{"$limit": 0}], "pipeline[0].$limit"),
    ([{"$limit": "5"}], "pipeline[0].$limit"),
    ([{"$skip": -1}], "pipeline[0].$skip"),
    ([{"$sort": {}}], "pipeline[0].$sort"),
    ([{"$sort": {"nope": 1}}], "pipeline[0].$sort.nope"),
    ([{"$sum": "$amount"}, {"$limit": 1}], "pipeline[1]"),
    ([{"$project": {}}], "pipeline[0].$project"),
    ([{"$project": {"age": 1, "name": 0}}], "pipeline[0].$project.name"),
    ([{"$project": {"x": {"$pow": [1, 2]}}}], "pipeline[0].$project.x.$pow"),
    ([{"$project": {"x": {"$add": ["$name", 1]}}}], "pipeline[0].$project.x.$add[0]"),
    ([{"$project": {"x": {"$divide": [1]}}}], "pipeline[0].$project.x.$divide"),
    ([{"$project": {"nope": 1}}], "pipeline[0].$project.nope"),
    ([{"$count": ""}], "pipeline[0].$count"),
]


@pytest.mark.parametrize("pipeline, path", PIPELINES, ids=[p for _, p in PIPELINES])
def test_malformed_pipeline_names_the_path(pipeline, path):
    with pytest.raises(FilterError) as info:
        compile_pipeline(TABLE, pipeline)
    assert info.value.path == path
