"""``GET /healthz`` and ``GET /readyz``: for load balancers and orchestrators."""

from __future__ import annotations

import os

from fastapi import APIRouter

from keyhouse import errors
from keyhouse.http.errors import RETRY_AFTER_SECONDS
from keyhouse.http.pipeline import RuntimeDep
from keyhouse.logs import get_logger
from keyhouse.schemas import ErrorResponse

__all__ = ["router"]

log = get_logger("keyhouse")

router = APIRouter(tags=["meta"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str | int]:
    """200 while the process serves requests; `pid` says which worker answered."""
    return {"status": "ok", "pid": os.getpid()}


@router.get(
    "/readyz",
    summary="Readiness",
    responses={503: {"model": ErrorResponse, "description": "Service Unavailable"}},
)
async def readyz(runtime: RuntimeDep) -> dict[str, str]:
    """200 when the database answers; 503 `service_unavailable` otherwise.

    The details say how limits are counted and, with Redis configured,
    whether it answers (without it keyhouse keeps serving, with in-process
    limits)."""
    try:
        await runtime.db.ping()
    except Exception as exc:
        log.warning("readyz_database_unreachable", error=type(exc).__name__)
        raise errors.ServiceUnavailable(
            "The database is not reachable.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        ) from None
    return {"status": "ready", "database": "ok", **(await runtime.limiter.health())}
