"""E-commerce platform (the seed's "Examples Repository"): products, inventory, orders, order items,
a checkout, and the sales dashboard of the seed's Production Example 1.

Run: ``python examples/ecommerce/app.py`` (SQLite ``./dataflow.db``), or with
``DATAFLOW_DATABASE_URL=postgresql://...``; address from DATAFLOW_HOST/DATAFLOW_PORT (0.0.0.0:8000).
REST: /products, /inventory, /orders, /order_items (GET/POST/PATCH/PUT/DELETE), POST /checkout,
GET /metrics/sales; docs at /docs.
"""

from decimal import Decimal
from typing import Annotated

from fastapi import HTTPException
from pydantic import BaseModel, Field as PydanticField

from dataflow import DataFlow
from dataflow.models import Field

app = DataFlow()


@app.model
class Product:
    sku: Annotated[str, Field(unique=True, max_length=64)]
    name: str
    price: Decimal
    active: bool = True


@app.model
class Inventory:
    __dataflow__ = {"table": "inventory", "versioned": True}
    product_id: Annotated[int, Field(references="Product", unique=True, on_delete="cascade")]
    quantity: int = 0


@app.model
class Order:
    customer_id: int
    amount: Decimal = Decimal("0")
    status: str = "pending"


@app.model
class OrderItem:
    order_id: Annotated[int, Field(references="Order", on_delete="cascade")]
    product_id: Annotated[int, Field(references="Product")]
    quantity: int
    unit_price: Decimal


@app.resource("products")
class ProductResource:
    def after_create(self, record):
        app.create("Inventory", {"product_id": record["id"], "quantity": 0})

    def before_create(self, data):
        if data["price"] < 0:
            raise HTTPException(422, "price must not be negative")
        return data


@app.resource("inventory")
class InventoryResource:
    pass


@app.resource("orders")
class OrderResource:
    def before_delete(self, id):
        if app.read("Order", id, fields=["status"])["status"] == "paid":
            raise HTTPException(409, "a paid order cannot be deleted; refund it first")


@app.resource("order_items")
class OrderItemResource:
    pass


class Line(BaseModel):
    product_id: int
    quantity: int = PydanticField(gt=0, le=1000)


class Checkout(BaseModel):
    customer_id: int
    items: list[Line] = PydanticField(min_length=1, max_length=100)


@app.endpoint("/checkout", methods=["POST"], status_code=201)
def checkout(body: Checkout):
    """Reserve stock (optimistic locking on the inventory row), then store the order and its items."""
    lines = []
    for line in body.items:
        product = app.read("Product", line.product_id, raise_on_not_found=False)
        if product is None or not product["active"]:
            raise HTTPException(422, f"items: product {line.product_id} is not for sale")
        stock = app.read("Inventory", {"product_id": line.product_id})
        if stock["quantity"] < line.quantity:
            raise HTTPException(409, f"items: not enough stock of product {line.product_id}")
        # A concurrent checkout that took the same stock first makes this a ConflictError (409).
        app.update("Inventory", stock["id"], {"quantity": stock["quantity"] - line.quantity,
                                              "version": stock["version"]})
        lines.append((line, product["price"]))
    amount = sum(price * line.quantity for line, price in lines)
    order = app.create("Order", {"customer_id": body.customer_id, "amount": amount, "status": "paid"})
    app.bulk_create("OrderItem", [{"order_id": order["id"], "product_id": line.product_id,
                                   "quantity": line.quantity, "unit_price": price} for line, price in lines])
    return {**order, "items": len(lines)}


# The seed's Production Example 1, as written.
@app.endpoint("/metrics/sales")
def sales_metrics():
    return {
        "today": app.query("orders").where({
            "created_at": {"$gte": {"$date": "today"}}
        }).aggregate([{"$sum": "$amount"}]),

        "top_products": app.query("order_items").aggregate([
            {"$group": {"_id": "$product_id", "sold": {"$sum": "$quantity"}}},
            {"$sort": {"sold": -1}},
            {"$limit": 10}
        ])
    }


if __name__ == "__main__":
    app.start()
