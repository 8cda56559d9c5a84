"""A delete changes more than its own table when foreign keys say ON DELETE CASCADE or SET NULL: the
cached reads of those tables go stale with it (transitively), on every backend."""

from __future__ import annotations

from typing import Annotated, Optional

from dataflow import Field


def test_a_delete_makes_cached_reads_of_cascaded_tables_stale(db):
    @db.model
    class Author:
        name: str

    @db.model
    class Book:
        title: str
        author_id: Annotated[int, Field(references="Author", on_delete="cascade")]

    @db.model
    class Review:
        stars: int
        book_id: Annotated[int, Field(references="Book", on_delete="cascade")]

    @db.model
    class Loan:
        who: str
        book_id: Annotated[Optional[int], Field(references="Book", on_delete="set_null")]

    ann, bob = db.create("Author", name="Ann"), db.create("Author", name="Bob")
    b1 = db.create("Book", title="one", author_id=ann["id"])
    b2 = db.create("Book", title="two", author_id=bob["id"])
    db.create("Review", stars=5, book_id=b1["id"])
    db.create("Review", stars=3, book_id=b2["id"])
    loan = db.create("Loan", who="x", book_id=b1["id"])

    def cached():
        return (db.count("Book", cache=True), db.count("Review", cache=True),
                db.read("Loan", loan["id"], cache=True)["book_id"], db.read("Book", b1["id"], cache=True,
                                                                             raise_on_not_found=False))
    assert cached()[:3] == (2, 2, b1["id"])
    hits = db.cache.stats()["hits"]
    assert cached()[:3] == (2, 2, b1["id"]) and db.cache.stats()["hits"] == hits + 4

    db.delete("Author", ann["id"])  # cascades to Book one, then its Review; sets Loan.book_id to NULL
    assert cached() == (1, 1, None, None)

    db.bulk_delete("Author", {"name": "Bob"})
    assert cached()[:2] == (0, 0)
