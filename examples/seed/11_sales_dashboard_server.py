# Seed README, Production Example 1 "E-commerce Analytics Dashboard", as written, served for real.
# Filled in: the database URL (DataFlow() reads DATAFLOW_DATABASE_URL), the tables and rows the
# queries read (declare_orders), and the address app.start() listens on (DATAFLOW_HOST/DATAFLOW_PORT).
from _models import declare_orders

from dataflow import DataFlow

app = DataFlow()
declare_orders(app)  # filled in: orders and order items, as in 11_dashboard_queries.py

# --- as written ---
# Real-time sales metrics
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

app.start()
