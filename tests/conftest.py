"""Fixtures: real SQLite files migrated by Alembic, the real ASGI app.

Migrating takes a while, so the schema is migrated once per session into a
template file and each test gets its own copy (its own data directory, its
own generated encryption key).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
from fastapi import FastAPI

from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.db.migrate import migrate
from keyhouse.runtime import Runtime

# No per-example deadline: speed goals live in benchmarks, not in tests (and a
# 2-core CI machine under load would make a deadline flaky). CI prints seeds.
hypothesis.settings.register_profile("keyhouse", deadline=None, print_blob=True)
hypothesis.settings.load_profile("keyhouse")

# Settings must come from the tests alone, whatever the shell exported.
for _name in [n for n in os.environ if n.startswith("KEYHOUSE_")]:
    del os.environ[_name]


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: Any) -> None:
    """Run every async test on anyio's pytest plugin (marked before anyio looks).

    Hypothesis wraps a test; the coroutine is then its ``inner_test``.
    """
    inner = getattr(getattr(obj, "hypothesis", None), "inner_test", obj)
    if inspect.iscoroutinefunction(inner) and name.startswith("test"):
        pytest.mark.anyio(obj)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("template")
    asyncio.run(migrate(Settings(data_dir=data_dir)))
    return data_dir / "keyhouse.db"


@pytest.fixture
def make_settings(tmp_path: Path, template_db: Path) -> Callable[..., Settings]:
    """Settings on a fresh, migrated SQLite data directory (``data_dir`` shared per test)."""
    data_dir = tmp_path / "data"

    def make(**overrides: Any) -> Settings:
        if not data_dir.exists():
            data_dir.mkdir(mode=0o700)
            shutil.copyfile(template_db, data_dir / "keyhouse.db")
            (data_dir / "keyhouse.db").chmod(0o600)
        return Settings(data_dir=data_dir, **overrides)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def runtime(app: FastAPI) -> Runtime:
    rt: Runtime = app.state.runtime
    return rt


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c
