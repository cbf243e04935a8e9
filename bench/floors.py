"""The framework floors: one empty endpoint each, served like keyhouse.

``uvicorn floors:fastapi_app --workers 2`` and ``floors:starlette_app``
(``--app-dir bench``). ``GET /`` answers ``{}`` with a JSONResponse, as
keyhouse's endpoints answer: what the framework alone costs per request,
with no middleware, dependency, database or key check.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

__all__ = ["fastapi_app", "starlette_app"]

fastapi_app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@fastapi_app.get("/")
async def fastapi_empty() -> JSONResponse:
    return JSONResponse({})


async def starlette_empty(request: Request) -> JSONResponse:
    return JSONResponse({})


starlette_app = Starlette(routes=[Route("/", starlette_empty)])
