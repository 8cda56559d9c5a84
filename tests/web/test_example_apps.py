"""examples/ecommerce and examples/api_gateway, each started as a real server and driven over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path


from served import SRC, Served

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SHOP, GATEWAY = EXAMPLES / "ecommerce" / "app.py", EXAMPLES / "api_gateway" / "app.py"


def test_ecommerce(module_url, tmp_path):
    with Served(SHOP, module_url, tmp_path) as shop:
        http = shop.http
        mug = http.post("/products", json={"sku": "MUG", "name": "Mug", "price": "9.50"})
        assert mug.status_code == 201, mug.text
        tea = http.post("/products", json={"sku": "TEA", "name": "Tea", "price": "4.25"}).json()
        assert http.post("/products", json={"sku": "MUG", "name": "Again", "price": "1"}).status_code == 409
        assert http.post("/products", json={"sku": "NEG", "name": "x", "price": "-1"}).status_code == 422
        stock = {s["product_id"]: s for s in http.get("/inventory").json()["records"]}  # made by after_create
        for pid, qty in ((mug.json()["id"], 5), (tea["id"], 1)):
            assert http.patch(f"/inventory/{stock[pid]['id']}", json={"quantity": qty}).status_code == 200

        order = http.post("/checkout", json={"customer_id": 7, "items": [
            {"product_id": mug.json()["id"], "quantity": 2}, {"product_id": tea["id"], "quantity": 1}]})
        assert order.status_code == 201, order.text
        assert Decimal(order.json()["amount"]) == Decimal("23.25") and order.json()["items"] == 2
        r = http.post("/checkout", json={"customer_id": 8, "items": [{"product_id": tea["id"], "quantity": 1}]})
        assert r.status_code == 409 and "not enough stock" in r.json()["message"]
        assert http.post("/checkout", json={"customer_id": 8, "items": []}).status_code == 422
        left = {s["product_id"]: s["quantity"] for s in http.get("/inventory").json()["records"]}
        assert left == {mug.json()["id"]: 3, tea["id"]: 0}

        metrics = http.get("/metrics/sales").json()
        assert Decimal(metrics["today"]) == Decimal("23.25")
        assert [(p["_id"], p["sold"]) for p in metrics["top_products"]] == [(mug.json()["id"], 2), (tea["id"], 1)]
        assert http.delete(f"/orders/{order.json()['id']}").status_code == 409  # paid: the hook refuses
        items = http.get("/order_items", params={"order_id": order.json()["id"]}).json()
        assert items["total"] == 2


def test_api_gateway(module_url, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFLOW_")}
    env.update(DATAFLOW_DATABASE_URL=module_url, PYTHONPATH=str(SRC))
    add = [sys.executable, str(GATEWAY), "add-client"]
    key = subprocess.run([*add, "frontend", "3"], env=env, cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout.strip()
    other = subprocess.run([*add, "batch", "100"], env=env, cwd=tmp_path, capture_output=True, text=True,
                           check=True).stdout.strip()
    (tmp_path / "shop").mkdir()
    with Served(SHOP, f"sqlite:///{tmp_path / 'shop' / 'shop.db'}", tmp_path / "shop") as shop, \
            Served(GATEWAY, module_url, tmp_path, env={"UPSTREAM_URL": shop.base}) as gateway:
        http = gateway.http
        assert http.get("/health").json() == {"status": "ok"}  # the gateway's own, no key needed
        assert http.get("/products").status_code == 401
        assert http.get("/products", headers={"X-API-Key": "wrong"}).status_code == 401
        made = http.post("/products", json={"sku": "A", "name": "A", "price": "1"}, headers={"X-API-Key": key})
        assert made.status_code == 201, made.text  # proxied to the shop
        assert shop.http.get("/products").json()["total"] == 1
        assert http.get("/products", headers={"X-API-Key": key}).json()["total"] == 1
        assert http.get("/products/999", headers={"X-API-Key": key}).status_code == 404  # upstream's answer
        limited = http.get("/products", headers={"X-API-Key": key})  # the 4th request of a 3-a-minute client
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert http.get("/products", headers={"X-API-Key": other}).status_code == 200  # its own bucket
    assert key not in gateway.output() and key not in shop.output()
