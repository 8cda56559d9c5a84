"""Review: updates and deletes by primary key in one statement: errors, scope, nothing half done."""

from __future__ import annotations

from typing import Annotated, Optional

import pytest

from dataflow import DataFlow, DataFlowError, Field, NotFoundError


def declare(db):
    @db.model
    class Owner:
        email: Annotated[str, Field(unique=True)]

    @db.model
    class Pet:
        name: str
        owner_id: Annotated[Optional[int], Field(references="Owner", on_delete="restrict")] = None


def test_errors_of_one_statement_changes_are_clean_and_change_nothing(db):
    declare(db)
    a = db.create("Owner", email="a@x")
    b = db.create("Owner", email="b@x")
    db.create("Pet", name="rex", owner_id=a["id"])
    with pytest.raises(DataFlowError) as caught:
        db.update("Owner", b["id"], {"email": "a@x"})
    assert "a@x" not in str(caught.value)
    assert db.read("Owner", b["id"], cache=False)["email"] == "b@x"
    with pytest.raises(DataFlowError):
        db.delete("Owner", a["id"])
    assert db.count("Owner", cache=False) == 2
    # a failed one-statement write inside a block leaves the block usable and rolls back with it
    with pytest.raises(RuntimeError):
        with db.transaction():
            db.update("Owner", b["id"], {"email": "c@x"})
            db.delete("Pet", {"name": "rex"})
            raise RuntimeError("roll back")
    assert db.read("Owner", b["id"], cache=False)["email"] == "b@x" and db.count("Pet", cache=False) == 1


def test_another_tenants_id_is_not_found_by_one_statement_changes(db_url):
    with DataFlow(db_url, multi_tenant=True) as db:
        declare(db)
        with db.tenant("acme"):
            mine = db.create("Owner", email="a@x")
        with db.tenant("globex"):
            with pytest.raises(NotFoundError):
                db.update("Owner", mine["id"], {"email": "z@x"})
            assert db.delete("Owner", mine["id"], raise_on_not_found=False) is None
        with db.tenant("acme"):
            assert db.read("Owner", mine["id"], cache=False)["email"] == "a@x"
