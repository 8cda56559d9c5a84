"""Model declarations: annotations -> ModelSpec, table names, defaults, reserved and unsupported fields."""

import itertools
import typing
from decimal import Decimal
from typing import Annotated, Any, Optional
from uuid import UUID, uuid4

import pytest
import sqlalchemy as sa
from kailash.runtime.local import LocalRuntime
from kailash.workflow.builder import WorkflowBuilder

from dataflow import DataFlow, Field, ModelError, ValidationError
from dataflow.models import RESERVED_FIELDS, spec_from_class, table_name_for


@pytest.fixture
def mem():
    """A DataFlow on an in-memory SQLite database, for declaration-only tests."""
    instance = DataFlow("sqlite:///:memory:")
    yield instance
    instance.close()


def raw_rows(db, table, columns="*"):
    """Rows as the database holds them, read with plain SQL (not through DataFlow)."""
    q = db.engine.dialect.identifier_preparer.quote
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(f"SELECT {columns} FROM {q(table)} ORDER BY 1")]


# ---------------------------------------------------------------- table names
@pytest.mark.parametrize("class_name, table", [
    ("User", "users"),
    ("OrderItem", "order_items"),
    ("Category", "categories"),
    ("Address", "addresses"),
    ("Box", "boxes"),
    ("Branch", "branches"),
    ("Day", "days"),
    ("Post", "posts"),
    ("HTTPRequest", "http_requests"),
    ("UserProfile2", "user_profile2s"),
])
def test_table_name_for(class_name, table):
    assert table_name_for(class_name) == table


@pytest.mark.parametrize("class_name, table", [
    ("User", "users"), ("OrderItem", "order_items"), ("Category", "categories"),
])
def test_declared_model_gets_plural_snake_case_table(mem, class_name, table):
    cls = type(class_name, (), {"__annotations__": {"title": str}})
    mem.model(cls)
    assert mem.get_model_info(class_name)["table"] == table
    mem.create(class_name, title="x")
    tables = set(sa.inspect(mem.engine).get_table_names()) - {"dataflow_migrations"}  # the migration history
    assert tables == {table}


def test_tablename_attribute_overrides_the_derived_name(mem):
    @mem.model
    class Person:
        __tablename__ = "people_tbl"
        name: str

    assert mem.get_model_info("Person")["table"] == "people_tbl"
    mem.create("Person", name="Ann")
    assert raw_rows(mem, "people_tbl", "name") == [("Ann",)]
    # the model is reachable by its table name too
    assert mem.read("people_tbl", 1)["name"] == "Ann"


def test_two_models_on_one_table_are_refused(mem):
    @mem.model
    class User:
        name: str

    class Account:
        __tablename__ = "users"
        name: str

    with pytest.raises(ModelError, match=r"Account: table 'users' is already used by model User"):
        mem.model(Account)


# ---------------------------------------------------------------- fields
def test_fields_in_order_with_implicit_id_and_timestamps():
    class Item:
        title: str
        price: float

    spec = spec_from_class(Item)
    assert list(spec.fields) == ["id", "title", "price", "created_at", "updated_at"]
    assert spec.primary_key == "id"
    idf = spec.fields["id"]
    assert (idf.pytype, idf.primary_key, idf.autoincrement, idf.required) == (int, True, True, False)
    assert spec.fields["title"].required and spec.fields["price"].required
    assert spec.fields["created_at"].auto == "created_at"


def test_declared_id_comes_first_whatever_its_position():
    class Item:
        title: str
        id: int

    assert list(spec_from_class(Item).fields)[:2] == ["id", "title"]


def test_timestamps_can_be_turned_off():
    class Item:
        __dataflow__ = {"timestamps": False}
        title: str

    assert list(spec_from_class(Item).fields) == ["id", "title"]


@pytest.mark.parametrize("pk_type", [str, UUID])
def test_non_integer_primary_keys(pk_type):
    cls = type("Thing", (), {"__annotations__": {"id": pk_type, "name": str}})
    f = spec_from_class(cls).fields["id"]
    assert f.pytype is pk_type and f.primary_key and not f.autoincrement and f.required


def test_float_primary_key_is_refused():
    cls = type("Thing", (), {"__annotations__": {"id": float, "name": str}})
    with pytest.raises(ModelError, match=r"Thing\.id must be int, str or UUID"):
        spec_from_class(cls)


def test_string_primary_key_round_trip(mem):
    @mem.model
    class Country:
        id: str
        name: str

    assert mem.create("Country", id="NZ", name="New Zealand")["id"] == "NZ"
    assert mem.read("Country", "NZ")["name"] == "New Zealand"
    with pytest.raises(ValidationError, match=r"Country\.id is required"):
        mem.create("Country", name="Nowhere")


def test_model_without_fields_is_refused():
    class Empty:
        pass

    with pytest.raises(ModelError, match=r"Empty declares no fields"):
        spec_from_class(Empty)


def test_private_annotations_are_not_fields():
    class Item:
        _cache: dict
        title: str

    assert "_cache" not in spec_from_class(Item).fields


@pytest.mark.parametrize("annotation", [Optional[int], typing.Union[int, None], int | None])
def test_optional_fields_are_nullable_and_not_required(annotation):
    cls = type("Item", (), {"__annotations__": {"qty": annotation}})
    f = spec_from_class(cls).fields["qty"]
    assert (f.pytype, f.nullable, f.required) == (int, True, False)


def test_optional_field_may_be_left_out(mem):
    @mem.model
    class Item:
        title: str
        note: Optional[str]

    rec = mem.create("Item", title="t")
    assert rec["note"] is None
    assert raw_rows(mem, "items", "title, note") == [("t", None)]


@pytest.mark.parametrize("annotation, base", [
    (list[str], list), (dict[str, Any], dict), (Optional[list[int]], list),
    (Annotated[str, Field(max_length=20)], str), (Optional[Annotated[str, Field(max_length=20)]], str),
])
def test_generic_and_annotated_types_resolve(annotation, base):
    cls = type("Item", (), {"__annotations__": {"value": annotation}})
    assert spec_from_class(cls).fields["value"].pytype is base


def test_field_options_from_annotated_and_dataflow_options():
    class Item:
        __dataflow__ = {"unique": ["sku"], "indexes": ["title"]}
        sku: str
        title: str
        body: Annotated[str, Field(text=True)]
        code: Annotated[str, Field(max_length=12, unique=True)]
        price: Annotated[Decimal, Field(precision=10, scale=2)]

    f = spec_from_class(Item).fields
    assert f["sku"].unique and not f["title"].unique and f["title"].index
    assert f["body"].max_length is None and f["title"].max_length == 255
    assert (f["code"].max_length, f["code"].unique) == (12, True)
    assert (f["price"].precision, f["price"].scale) == (10, 2)


def test_unknown_field_in_dataflow_index_is_refused(mem):
    class Item:
        __dataflow__ = {"indexes": ["nope"]}
        title: str

    with pytest.raises(ModelError, match=r"Item: __dataflow__ index or unique names unknown field 'nope'"):
        mem.model(Item)


# ---------------------------------------------------------------- defaults
def test_constant_defaults_make_fields_optional(mem):
    @mem.model
    class User:
        name: str
        active: bool = True
        score: float = 1.5
        role: str = "member"

    spec = User.__dataflow_spec__
    assert [n for n, f in spec.fields.items() if f.required] == ["name"]
    rec = mem.create("User", name="a")
    assert (rec["active"], rec["score"], rec["role"]) == (True, 1.5, "member")
    rec = mem.create("User", name="b", active=False, role="admin")
    assert (rec["active"], rec["role"]) == (False, "admin")
    assert raw_rows(mem, "users", "name, role") == [("a", "member"), ("b", "admin")]


def test_none_default_makes_field_nullable():
    class Item:
        title: str
        note: str = None

    f = spec_from_class(Item).fields["note"]
    assert f.nullable and not f.required and f.make_default() is None


def test_callable_default_is_called_for_every_record(mem):
    counter = itertools.count(1)

    @mem.model
    class Ticket:
        title: str
        number: int = lambda: next(counter)  # noqa: E731
        token: str = lambda: uuid4().hex  # noqa: E731

    a = mem.create("Ticket", title="a")
    b = mem.create("Ticket", title="b")
    c = mem.create("Ticket", title="c", number=99)
    assert (a["number"], b["number"], c["number"]) == (1, 2, 99)
    assert a["token"] != b["token"] and len(a["token"]) == 32
    mem.bulk_create("Ticket", [{"title": "d"}, {"title": "e"}])
    assert [r[1] for r in raw_rows(mem, "tickets", "id, number")] == [1, 2, 99, 3, 4]


def test_mutable_defaults_are_copied_per_record(mem):
    @mem.model
    class Doc:
        title: str
        meta: dict = {"tags": []}
        items: list = []

    spec = Doc.__dataflow_spec__
    first = spec.fields["meta"].make_default()
    first["tags"].append("x")
    assert spec.fields["meta"].make_default() == {"tags": []}
    assert spec.fields["items"].make_default() is not spec.fields["items"].make_default()
    assert mem.create("Doc", title="a")["meta"] == {"tags": []}


# ---------------------------------------------------------------- refused declarations
@pytest.mark.parametrize("name", sorted(RESERVED_FIELDS))
def test_reserved_field_names_raise_model_error_naming_the_field(name):
    cls = type("Widget", (), {"__annotations__": {"title": str, name: str}})
    with pytest.raises(ModelError) as info:
        spec_from_class(cls)
    assert info.value.field == name and info.value.model == "Widget"
    assert str(info.value).startswith(f"Widget.{name}: '{name}' is reserved for node parameters; rename the field")


@pytest.mark.parametrize("name", ["filter", "conditions", "data", "limit", "offset", "sort", "order_by", "found",
                                  "fields"])
def test_reserved_field_refused_at_declaration_on_db_model(mem, name):
    cls = type("Widget", (), {"__annotations__": {name: int}})
    with pytest.raises(ModelError, match=rf"Widget\.{name}: '{name}' is reserved"):
        mem.model(cls)
    assert mem.list_models() == []


class Custom:
    pass


@pytest.mark.parametrize("annotation, shown", [
    (set, "set"), (tuple, "tuple"), (complex, "complex"), (Custom, "Custom"), (Any, "Any"),
    (typing.Union[int, str], "Union"), (Optional[typing.Union[int, str]], "Union"), (bytearray, "bytearray"),
])
def test_unsupported_types_raise_model_error_naming_the_field(annotation, shown):
    cls = type("Widget", (), {"__annotations__": {"title": str, "weird": annotation}})
    with pytest.raises(ModelError) as info:
        spec_from_class(cls)
    msg = str(info.value)
    assert info.value.field == "weird" and info.value.model == "Widget"
    assert msg.startswith("Widget.weird: ") and shown in msg
    if "only Optional" not in msg:
        assert "is not supported; use one of int, str, bool, float, Decimal" in msg


@pytest.mark.parametrize("name", ["Name", "with_digits_1", "x" * 63])
def test_valid_field_names(name):
    cls = type("Widget", (), {"__annotations__": {name: str}})
    assert name in spec_from_class(cls).fields


def test_overlong_field_name_is_refused():
    cls = type("Widget", (), {"__annotations__": {"x" * 64: str}})
    with pytest.raises(ModelError, match=r"field names must be identifiers of at most 63 characters"):
        spec_from_class(cls)


def test_unresolvable_annotation_is_a_model_error():
    ns: dict = {}
    exec("class Widget:\n    owner: 'NoSuchType'\n", ns)
    with pytest.raises(ModelError, match=r"Widget: cannot read type annotations"):
        spec_from_class(ns["Widget"])


# ---------------------------------------------------------------- fields named like node metadata
METADATA_NAMES = ("name", "version", "tags", "description", "author", "metadata")


def _declare_profile(db):
    @db.model
    class Profile:
        name: str
        version: int
        tags: list
        description: str
        author: str
        metadata: dict

    return Profile


PROFILE = {"name": "Ann", "version": 3, "tags": ["a", "b"], "description": "about", "author": "me",
           "metadata": {"k": "v"}}


def test_metadata_like_field_names_in_the_spec(mem):
    _declare_profile(mem)
    info = mem.get_model_info("Profile")
    assert list(info["fields"]) == ["id", *METADATA_NAMES, "created_at", "updated_at"]


def test_metadata_like_field_names_direct_api(db):
    _declare_profile(db)
    rec = db.create("Profile", PROFILE)
    assert {k: rec[k] for k in METADATA_NAMES} == PROFILE
    db.update("Profile", rec["id"], {"name": "Bob", "version": 4, "tags": ["c"]})
    got = db.read("Profile", rec["id"])
    assert (got["name"], got["version"], got["tags"], got["author"]) == ("Bob", 4, ["c"], "me")
    assert raw_rows(db, "profiles", "name, version, description, author") == [("Bob", 4, "about", "me")]


def test_metadata_like_field_names_through_nodes(db):
    _declare_profile(db)
    wf = WorkflowBuilder()
    wf.add_node("ProfileCreateNode", "create", dict(PROFILE))
    wf.add_node("ProfileUpdateNode", "update", {"name": "Bob", "description": "changed"})
    wf.add_connection("create", "id", "update", "id")
    with LocalRuntime(enable_monitoring=False) as rt:
        results, _ = rt.execute(wf.build())
    created = results["create"]
    assert {k: created[k] for k in METADATA_NAMES} == PROFILE
    assert results["update"]["updated"] is True
    assert (results["update"]["name"], results["update"]["description"]) == ("Bob", "changed")
    assert results["update"]["version"] == 3 and results["update"]["tags"] == ["a", "b"]
    assert raw_rows(db, "profiles", "name, version, description, author") == [("Bob", 3, "changed", "me")]
