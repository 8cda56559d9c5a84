"""``/health`` (liveness: the process answers) and ``/ready`` (readiness: the database answers and the
schema is migrated), for the Kubernetes probes in ``deploy/kubernetes.yaml``."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from starlette.responses import JSONResponse

from ..errors import DataFlowError

log = logging.getLogger("dataflow.web")


def routes(db: Any) -> list[dict[str, Any]]:
    def health() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    def ready() -> JSONResponse:
        try:
            db.ensure_ready()  # connects; migrates (auto_migrate) or checks (existing_schema_mode)
            if not db.config.auto_migrate and not db.config.existing_schema_mode and db.specs:
                if db.schema_diff().operations:
                    return JSONResponse({"status": "unavailable", "reason": "migrations pending"}, status_code=503)
            with db.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except (DataFlowError, sa.exc.SQLAlchemyError, *db.driver_errors) as exc:
            log.warning("not ready: %s", type(exc).__name__)
            return JSONResponse({"status": "unavailable", "reason": "database unavailable"}, status_code=503)
        return JSONResponse({"status": "ready", "database": db.backend})

    doc = {"status": {"type": "string"}}
    return [
        dict(path="/health", endpoint=health, methods=["GET"], tags=["health"], operation_id="health",
             summary="Liveness: the process answers", response_model=None,
             responses={200: {"content": {"application/json": {"schema": {"type": "object", "properties": doc}}}}}),
        dict(path="/ready", endpoint=ready, methods=["GET"], tags=["health"], operation_id="ready",
             summary="Readiness: the database answers and its schema is migrated", response_model=None,
             responses={503: {"description": "Not ready",
                              "content": {"application/json": {"schema": {"type": "object", "properties": doc}}}}}),
    ]
