"""The app the image runs (`python app.py`): the seed's user-management API with its sales dashboard.

The database comes from DATAFLOW_DATABASE_URL (or DATABASE_URL, as the Kubernetes manifest sets it,
once the configuration work reads it); the address from DATAFLOW_HOST/DATAFLOW_PORT (0.0.0.0:8000).
/health and /ready answer the manifest's probes.
"""

from datetime import datetime, timezone
from decimal import Decimal
from typing import Optional

from dataflow import DataFlow

app = DataFlow()


@app.model
class User:
    name: str
    email: str
    active: bool = True


@app.model
class Order:
    customer_id: int
    amount: Decimal
    status: str = "pending"


@app.resource("users")
class UserResource:
    def before_update(self, data):
        data["updated_at"] = datetime.now(timezone.utc)
        return data


@app.resource("orders")
class OrderResource:
    pass


@app.endpoint("/metrics/sales")
def sales_metrics(status: Optional[str] = None):
    orders = app.query("orders").where({"created_at": {"$gte": {"$date": "today"}}})
    if status:
        orders = orders.where({"status": status})
    return {"today": orders.aggregate([{"$sum": "$amount"}])}


if __name__ == "__main__":
    app.start()
