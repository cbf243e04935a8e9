"""clients/python/examples: each runs against a live keyhouse, and each is in the
README word for word (the README shows them; these tests keep them working).
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from keyhouse_client import Keyhouse

from tests.clients.python.conftest import Live, unique

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "clients" / "python" / "examples"
SCRIPTS = ["manage_accounts.py", "account_api.py", "verify_async.py"]
APPS = ["fastapi_app.py", "litestar_app.py", "flask_app.py"]


def readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_example_is_run_here() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(SCRIPTS + APPS)


@pytest.mark.parametrize("name", SCRIPTS + APPS)
def test_the_readme_shows_the_example_verbatim(name: str) -> None:
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    assert f"```python\n{text}```" in readme(), f"{name} is not in the README as it is"


def run_script(name: str, live: Live, key: str = "") -> str:
    env = {
        **os.environ,
        "KEYHOUSE_URL": live.url,
        "KEYHOUSE_ADMIN_TOKEN": live.admin_token,
        "KEYHOUSE_VERIFY_TOKEN": live.verify_token,
        "KEYHOUSE_KEY": key,
    }
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    if key:
        assert key not in done.stdout
    return done.stdout


def test_manage_accounts(live: Live) -> None:
    out = run_script("manage_accounts.py", live).splitlines()
    assert out[0].startswith("account acc_")
    assert out[0].endswith("plan 100000")
    assert out[1] == "verify: valid True"
    assert out[2].startswith("rolled key_")
    assert out[3] == "refused: 409 last_secret_key"
    # Newest first: the roll (and its new key), the widget, the first key, the account.
    events = [line.split()[1] for line in out[4:]]
    assert events[-1] == "account.created"
    assert sorted(events[:-1]) == ["key.created", "key.created", "key.created", "key.rolled"]


def test_account_api(live: Live, admin: Keyhouse) -> None:
    created = admin.accounts.create(unique("example"))
    out = run_script("account_api.py", live, key=created.key.key).splitlines()
    assert out[0].startswith("new key key_")
    assert " in env_" in out[0]
    assert len([line for line in out if line.endswith(" active")]) == 2
    assert "requests this month: 3" in out
    assert out[-1].startswith("account.created ")


def test_verify_async(live: Live, admin: Keyhouse) -> None:
    created = admin.accounts.create(unique("example"))
    out = run_script("verify_async.py", live, key=created.key.key)
    assert out == f"valid key {created.key.id} of {created.account.id}\n"
    assert run_script("verify_async.py", live, key="unknown_" + "a1" * 12) == "refused: not_found\n"


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Run an ASGI app's startup and shutdown around the block, as a server does."""
    send_stream, receive_stream = anyio.create_memory_object_stream[dict[str, Any]](4)
    started, stopped = anyio.Event(), anyio.Event()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()
        elif message["type"] == "lifespan.shutdown.complete":
            stopped.set()
        else:
            raise AssertionError(message)

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    async with send_stream, receive_stream, anyio.create_task_group() as group:
        group.start_soon(app, scope, receive_stream.receive, send)
        await send_stream.send({"type": "lifespan.startup"})
        with anyio.fail_after(10):
            await started.wait()
        yield
        await send_stream.send({"type": "lifespan.shutdown"})
        with anyio.fail_after(10):
            await stopped.wait()


def load(name: str, live: Live, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("KEYHOUSE_URL", live.url)
    monkeypatch.setenv("KEYHOUSE_VERIFY_TOKEN", live.verify_token)
    return runpy.run_path(str(EXAMPLES / name), run_name=name.removesuffix(".py"))["app"]


@pytest.mark.parametrize("name", ["fastapi_app.py", "litestar_app.py"])
async def test_asgi_apps(
    name: str, live: Live, admin: Keyhouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = admin.accounts.create(unique("example"))
    app = load(name, live, monkeypatch)
    transport = httpx.ASGITransport(app=app)
    async with lifespan(app), httpx.AsyncClient(transport=transport, base_url="http://a") as c:
        if name == "fastapi_app.py":
            assert (await c.get("/healthz")).json() == {"status": "ok"}
        refused = await c.get("/orders")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "missing_api_key"
        ok = await c.get("/orders", headers={"Authorization": f"Bearer {created.key.key}"})
        assert ok.json() == {"account": created.account.id, "key": created.key.id}


def test_flask_app(live: Live, admin: Keyhouse, monkeypatch: pytest.MonkeyPatch) -> None:
    created = admin.accounts.create(unique("example"))
    app = load("flask_app.py", live, monkeypatch)
    try:
        with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://a") as c:
            refused = c.get("/orders", headers={"Authorization": "Bearer unknown_" + "a1" * 12})
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "invalid_api_key"
            ok = c.get("/orders", headers={"Authorization": f"Bearer {created.key.key}"})
            assert ok.json() == {"account": created.account.id, "key": created.key.id}
    finally:
        app.wsgi_app.close()
