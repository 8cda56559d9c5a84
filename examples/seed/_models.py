"""The models and rows the seed's query fragments leave out, shared by examples 04 and 08-13."""

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Optional

from _env import URL

from dataflow import DataFlow


def user_app(url: str = URL) -> DataFlow:
    """A DataFlow with the User model the query examples filter on, and eight users."""
    app = DataFlow(url)
    declare_users(app)
    return app


def declare_users(app: DataFlow) -> type:
    """Declare the User model on ``app`` and store eight users; return the model class."""

    @app.model
    class User:
        id: int
        name: str
        email: str
        age: int
        department: str
        status: str = "active"
        active: bool = True
        metadata: Optional[dict] = None
        tags: list = []
        skills: list = []

    people = [
        ("John Smith", 34, "eng", "active", {"preferences": {"theme": "dark"}}, ["premium"], ["py", "sql", "go", "k8s"]),
        ("Johnny Bravo", 17, "sales", "active", {"preferences": {"theme": "dark"}}, ["premium"], ["talk"]),
        ("john lower", 40, "eng", "inactive", {"preferences": {"theme": "light"}}, [], ["py"]),
        ("Alice Doe", 29, "engineering", "active", {"preferences": {"theme": "dark"}}, ["premium", "beta"],
         ["py", "rust", "sql", "c"]),
        ("Bob Roe", 52, "sales", "active", None, ["basic"], []),
        ("Carol Poe", 70, "eng", "active", {"preferences": {"theme": "dark"}}, ["premium"], ["a", "b", "c", "d"]),
        ("Dan Moe", 45, "hr", "inactive", {}, [], ["x"]),
        ("Eve Loe", 19, "sales", "active", {"preferences": {}}, ["premium"], ["1", "2", "3"]),
    ]
    app.bulk_create("User", [
        {"name": n, "email": f"{n.split()[0].lower()}@example.com", "age": a, "department": d, "status": s,
         "metadata": m, "tags": t, "skills": k}
        for n, a, d, s, m, t, k in people
    ])
    return User


def order_app(url: str = URL) -> DataFlow:
    """A DataFlow with orders, order items, sessions and logs, as the dashboard examples query them."""
    app = DataFlow(url)
    declare_orders(app)
    return app


def declare_orders(app: DataFlow) -> None:
    """Declare Order, OrderItem, Session and Log on ``app`` and store their rows (unless already stored)."""
    now = datetime.now(timezone.utc)

    @app.model
    class Order:
        id: int
        customer_id: int
        amount: Decimal
        status: str

    @app.model
    class OrderItem:
        id: int
        order_id: int
        product_id: int
        quantity: int

    @app.model
    class Session:
        id: int
        user_id: int
        last_seen: datetime

    @app.model
    class Log:
        id: int
        level: str
        message: str
        timestamp: datetime

    if app.count("Order"):
        return
    app.bulk_create("Order", [
        {"customer_id": c, "amount": Decimal(a), "status": s}
        for c, a, s in [(1, "10.50", "completed"), (1, "20.00", "completed"), (2, "5.25", "completed"),
                        (2, "100.00", "pending"), (3, "7.00", "completed"), (3, "8.00", "cancelled")]
    ])
    app.bulk_create("OrderItem", [{"order_id": 1 + i % 6, "product_id": i % 4, "quantity": 1 + i % 3}
                                  for i in range(20)])
    app.bulk_create("Session", [{"user_id": i, "last_seen": now - timedelta(minutes=m)}
                                for i, m in enumerate([1, 2, 4, 10, 60])])
    app.bulk_create("Log", [{"level": lv, "message": "m", "timestamp": now - timedelta(minutes=m)}
                            for lv, m in [("ERROR", 5), ("ERROR", 30), ("INFO", 1), ("ERROR", 90)]])
