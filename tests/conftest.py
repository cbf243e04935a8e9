"""Fixtures: real databases migrated by Alembic, the real ASGI app.

Every test that uses ``settings`` (or ``app``, ``client``, ``runtime``,
``make_settings``) runs twice: on SQLite and on PostgreSQL (``backend``).

* SQLite: the schema is migrated once per session into a template file and
  each test gets its own copy (its own data directory, its own generated
  encryption key).
* PostgreSQL (127.0.0.1:5432, user postgres, or TEST_POSTGRES_URL): one
  database per test run, made and migrated at the start and dropped at the
  end; its tables are emptied before each test. With ``CI=true`` an
  unreachable server fails the run; elsewhere those tests are skipped with
  the reason.

``@pytest.mark.sqlite_only`` keeps a test to SQLite (file modes, pragmas);
``@pytest.mark.postgresql_only`` to PostgreSQL (LISTEN/NOTIFY).
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import os
import secrets
import shutil
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import hypothesis
import pytest
from fastapi import FastAPI

import keyhouse.models  # noqa: F401  (registers every table on Base.metadata)
from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.db.base import Base
from keyhouse.db.migrate import migrate
from keyhouse.runtime import Runtime
from tests.factories import listener as runtime_listener

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


PG_SERVER = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# Every table of the models, taken from the metadata so that a new table is
# emptied between tests without anyone remembering to list it here
# (tests/db/test_cleanup.py fails if the migrated database has one more).
CLEANED_TABLES = tuple(table.name for table in Base.metadata.sorted_tables)
# One statement for all of them: TRUNCATE checks foreign keys against the
# set as a whole, so the order does not matter, and CASCADE also empties a
# table outside the set that references one of them.
CLEANUP = "TRUNCATE {} CASCADE".format(", ".join(f'"{name}"' for name in CLEANED_TABLES))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        backends = ["sqlite", "postgresql"]
        if metafunc.definition.get_closest_marker("sqlite_only") is not None:
            backends = ["sqlite"]
        if metafunc.definition.get_closest_marker("postgresql_only") is not None:
            backends = ["postgresql"]
        metafunc.parametrize("backend", backends)


def run_sync(coro_factory: Callable[[], Any]) -> Any:
    """Run a coroutine to completion from sync code, even inside a test's event loop."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro_factory()))
        except BaseException as exc:  # handed back to the caller
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0] if result else None


async def _pg_execute(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of this test run, migrated; dropped at the end."""
    try:
        run_sync(lambda: _pg_execute(PG_SERVER, "SELECT 1"))
    except Exception as exc:
        reason = f"PostgreSQL at {PG_SERVER} does not answer ({type(exc).__name__})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI needs it (.ci/run starts it)")
        pytest.skip(reason)
    name = f"keyhouse_test_{os.getpid()}_{secrets.token_hex(4)}"
    run_sync(lambda: _pg_execute(PG_SERVER, f'CREATE DATABASE "{name}"'))
    url = PG_SERVER.rsplit("/", 1)[0] + f"/{name}"
    sa_url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        run_sync(lambda: migrate(Settings(database_url=sa_url)))
        yield sa_url
    finally:
        run_sync(lambda: _pg_execute(PG_SERVER, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("template")
    asyncio.run(migrate(Settings(data_dir=data_dir)))
    return data_dir / "keyhouse.db"


@pytest.fixture
def make_settings(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> Callable[..., Settings]:
    """Settings on a fresh, migrated database (one per test) and data directory."""
    data_dir = tmp_path / "data"
    database_url: str | None = None
    pg_secrets = {
        "encryption_keys": f"test:{base64.b64encode(os.urandom(32)).decode()}",
        "admin_tokens": f"kh_admin_{secrets.token_urlsafe(32)}",
    }
    if backend == "postgresql":
        database_url = request.getfixturevalue("pg_url")
        run_sync(lambda: _pg_execute(pg_plain(database_url), CLEANUP))
    else:
        template: Path = request.getfixturevalue("template_db")

    def make(**overrides: Any) -> Settings:
        if not data_dir.exists():
            data_dir.mkdir(mode=0o700)
            if database_url is None:
                shutil.copyfile(template, data_dir / "keyhouse.db")
                (data_dir / "keyhouse.db").chmod(0o600)
        if database_url is not None:
            overrides.setdefault("database_url", database_url)
            # With KEYHOUSE_DATABASE_URL nothing is generated: the secrets are given.
            overrides.setdefault("encryption_keys", pg_secrets["encryption_keys"])
            overrides.setdefault("admin_tokens", pg_secrets["admin_tokens"])
        return Settings(data_dir=data_dir, **overrides)

    return make


def pg_plain(sa_url: str | None) -> str:
    """The asyncpg form of a SQLAlchemy URL."""
    assert sa_url is not None
    return sa_url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        runtime: Runtime = application.state.runtime
        if not runtime.db.is_sqlite:
            # Its first connect clears the cache: let that happen before the test.
            await asyncio.wait_for(runtime_listener(runtime).connected.wait(), 10)
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
