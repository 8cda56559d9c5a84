# Seed README, Enterprise Features: "Security & Compliance".
# Filled in: the database, the models (User is the data subject; personal fields declared), rows for
# user 123 and for another user, and the two requests that call the handler.
from decimal import Decimal
from typing import Annotated, Optional

from _env import URL

from dataflow import DataFlow, Field

app = DataFlow(URL)


@app.model
class User:
    id: int
    name: Annotated[str, Field(pii=True)]
    email: Annotated[str, Field(unique=True, pii=True)]
    status: str = "active"


@app.model
class Order:
    user_id: Annotated[int, Field(references="User")]
    total: Decimal
    shipping_address: Optional[str] = None
    __dataflow__ = {"pii": ["shipping_address"]}


app.create("User", id=123, name="Jane Roe", email="jane.roe@example.com")
app.create("User", id=124, name="Rick Poe", email="rick.poe@example.com")
app.create("Order", user_id=123, total=Decimal("40.00"), shipping_address="7 Elm Row, Leeds")
app.create("Order", user_id=124, total=Decimal("15.50"), shipping_address="9 Oak Lane, York")

# --- the seed's block, as written ---
# GDPR/CCPA compliance built-in
@app.compliance("gdpr")
def handle_data_request(user_id, request_type):
    if request_type == "export":
        return app.export_user_data(user_id)
    elif request_type == "delete":
        return app.anonymize_user_data(user_id)
# --- end of the block ---


exported = handle_data_request(123, "export")
deleted = handle_data_request(123, "delete")
requests = app.audit_log(action="gdpr_request")
print("exported:", exported["counts"], "anonymized:", deleted["anonymized"])
