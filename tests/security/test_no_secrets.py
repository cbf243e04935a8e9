"""No secret at rest or in logs.

A realistic session (creates, a roll, imports, verifications, a revoke and
requests that fail, a key in a query string and in a URL path among them),
then every place a secret could end up is searched: the SQLite files (the
WAL too), a ``pg_dump`` of the database, every key and value of the app's
Redis database, the captured logs (stdout and stderr) and every error body.

Neither an API key nor an encryption key nor an admin token may appear
there. Checks are booleans that name the place, never the secret: a failing
test prints no key.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis

from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.keys.format import KeyFormat
from tests.conftest import pg_plain
from tests.factories import bearer
from tests.limits.conftest import REDIS_DB, REDIS_HOST, REDIS_PORT


@dataclass
class Secrets:
    """What must stay out of storage, logs and error bodies."""

    api_keys: list[str] = field(default_factory=list)
    # One character off a real key or token: a guess must not be logged either.
    near_misses: list[str] = field(default_factory=list)
    encryption_keys: list[bytes] = field(default_factory=list)
    admin_tokens: list[str] = field(default_factory=list)

    def key_needles(self) -> list[bytes]:
        out: list[bytes] = []
        for key in self.api_keys + self.near_misses:
            raw = key.encode()
            # The body of a native key alone (a stored key without its prefix still leaks);
            # its hex too (pg_dump prints bytea as hex).
            out += [raw, raw[3:] if len(raw) > 40 else raw, raw.hex().encode()]
        return out

    def material_needles(self) -> list[bytes]:
        out: list[bytes] = []
        for raw in self.encryption_keys:
            out += [
                raw,
                base64.b64encode(raw),
                base64.urlsafe_b64encode(raw),
                base64.b64encode(raw).rstrip(b"="),
                raw.hex().encode(),
            ]
        for token in self.admin_tokens:
            out += [token.encode(), token.encode().hex().encode()]
        return out


def found_in(places: dict[str, bytes], needles: Iterable[bytes]) -> list[str]:
    """The names of the places holding any needle (never the needle)."""
    wanted = list(needles)
    return sorted(name for name, blob in places.items() if any(n in blob for n in wanted))


def one_char_off(value: str) -> str:
    pos = len(value) // 2
    return value[:pos] + ("A" if value[pos] != "A" else "B") + value[pos + 1 :]


@dataclass
class Session:
    client: httpx.AsyncClient
    admin_token: str
    secrets: Secrets
    error_bodies: dict[str, bytes] = field(default_factory=dict)

    async def call(
        self, label: str, method: str, url: str, expect: int, auth: str | None = None, **kw: Any
    ) -> Any:
        headers = dict(kw.pop("headers", {}))
        if auth is not None:
            headers.update(bearer(auth))
        response = await self.client.request(method, url, headers=headers, **kw)
        assert response.status_code == expect, f"{label}: {response.status_code} != {expect}"
        if response.status_code >= 400:
            self.error_bodies[f"error body of {label}"] = response.content
            return None
        return response.json()

    def issued(self, obj: dict[str, Any]) -> str:
        key: str = obj["key"]
        self.secrets.api_keys.append(key)
        return key


async def realistic_session(s: Session) -> None:
    admin = s.admin_token
    made = await s.call("create account", "POST", "/admin/accounts", 201, admin, json={"name": "A"})
    account_id = made["account"]["id"]
    root = s.issued(made["key"])

    env = await s.call("create env", "POST", "/environments", 201, root, json={"name": "prod"})
    server = await s.call(
        "create", "POST", "/keys", 201, root, json={"name": "server", "keyType": "secret"}
    )
    s.issued(server)
    widget = await s.call(
        "create pk", "POST", "/keys", 201, root, json={"name": "widget", "keyType": "public"}
    )
    s.issued(widget)
    scoped = s.issued(
        await s.call(
            "create scoped",
            "POST",
            "/keys",
            201,
            root,
            json={"name": "prod", "keyType": "secret", "environmentId": env["id"]},
        )
    )
    rolled = await s.call(
        "roll", "POST", f"/keys/{server['id']}/roll", 201, root, json={"expiresInSeconds": 60}
    )
    s.issued(rolled)
    body = {"name": "x", "keyType": "secret"}
    rolled_scoped = await s.call("scoped creates", "POST", "/keys", 201, scoped, json=body)
    s.issued(rolled_scoped)
    s.issued(await s.call("roll scoped", "POST", f"/keys/{rolled_scoped['id']}/roll", 201, scoped))

    # Imports: a foreign key and one in keyhouse's own format, into the account and an env.
    legacy = "legacy_" + secrets.token_urlsafe(32)
    native = KeyFormat().generate("secret")
    s.secrets.api_keys += [legacy, native]
    url = f"/admin/accounts/{account_id}/keys/import"
    for label, key, extra in [
        ("import foreign", legacy, {}),
        ("import native", native, {"environmentId": env["id"]}),
    ]:
        body = {"key": key, "name": label, "keyType": "secret", **extra}
        await s.call(label, "POST", url, 201, admin, json=body)
    body = {"key": legacy, "name": "again", "keyType": "secret"}
    await s.call("import duplicate", "POST", url, 409, admin, json=body)

    # Every key verifies and works; listings reveal keys (to their owner).
    for key in list(s.secrets.api_keys):
        result = await s.call("verify", "POST", "/verify", 200, admin, json={"key": key})
        code = result["code"]
        assert code == "valid"
    for key in [root, scoped, legacy, native, rolled["key"]]:
        await s.call("list", "GET", "/keys", 200, key)
        await s.call("account", "GET", "/account", 200, key)
    await s.call("events", "GET", "/events", 200, root)

    await s.call("revoke", "POST", f"/keys/{widget['id']}/revoke", 200, root)
    await s.call("verify revoked", "POST", "/verify", 200, admin, json={"key": widget["key"]})
    await s.call("revoked pk", "GET", "/keys", 401, widget["key"])

    # Requests that fail, each carrying a secret somewhere a careless app would log it.
    near = one_char_off(root)
    near_admin = one_char_off(admin)
    s.secrets.near_misses += [near, one_char_off(legacy)]
    await s.call("typo key", "GET", "/keys", 401, near)
    await s.call("unknown foreign", "GET", "/keys", 401, one_char_off(legacy))
    await s.call("basic scheme", "GET", "/keys", 401, headers={"Authorization": f"Basic {root}"})
    await s.call("key in query", "GET", f"/keys?api_key={root}", 400, root)
    await s.call("key in query, no auth", "GET", f"/keys?api_key={legacy}", 400)
    await s.call("key-like query value", "GET", f"/keys?q={scoped}", 400)
    await s.call("verify with key in query", "POST", f"/verify?key={root}", 400, admin, json={})
    await s.call("key in path", "GET", f"/keys/{root}", 404, root)
    await s.call("key in path (revoke)", "POST", f"/keys/{scoped}/revoke", 404, root)
    await s.call("key in path (no route)", "GET", f"/{root}", 404)
    await s.call("key as env filter", "GET", f"/keys/x/{legacy}", 404, root)
    await s.call("admin token on account api", "GET", "/keys", 401, admin)
    await s.call("account key on admin api", "GET", "/admin/accounts", 403, root)
    await s.call("bad admin token", "GET", "/admin/accounts", 401, near_admin)
    await s.call("bad admin token verify", "POST", "/verify", 401, near_admin, json={"key": root})
    await s.call("extra member", "POST", "/verify", 400, admin, json={"key": root, "x": root})
    await s.call(
        "broken json",
        "POST",
        "/verify",
        400,
        admin,
        content=f'{{"key": "{root}"'.encode(),
        headers={"Content-Type": "application/json"},
    )
    await s.call(
        "not json", "POST", "/verify", 415, admin, content=root.encode(), headers={"X": "y"}
    )
    await s.call("key as type", "POST", "/keys", 400, root, json={"name": "n", "keyType": root})
    await s.call(
        "key as grace",
        "POST",
        f"/keys/{server['id']}/roll",
        400,
        root,
        json={"expiresInSeconds": root},
    )
    await s.call("key as member", "PATCH", f"/keys/{server['id']}", 400, root, json={"key": root})
    await s.call("bad import", "POST", url, 400, admin, json={"key": root + "!", "name": "n"})
    await s.call("import by key", "POST", url, 403, root, json={"key": near, "name": "n"})


def redis_contents() -> bytes:
    # Untyped on purpose: redis-py types replies as bytes | str; this client answers bytes.
    client: Any = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    parts: list[bytes] = []
    try:
        for name in client.scan_iter(count=1000):
            parts.append(name)
            kind = client.type(name)
            if kind == b"string":
                parts.append(client.get(name) or b"")
            elif kind == b"hash":
                for k, v in client.hgetall(name).items():
                    parts += [k, v]
            elif kind == b"list":
                parts += client.lrange(name, 0, -1)
            elif kind == b"set":
                parts += list(client.smembers(name))
            elif kind == b"zset":
                parts += [m for m, _ in client.zrange(name, 0, -1, withscores=True)]
            else:
                parts.append(client.dump(name) or b"")
    finally:
        client.close()
    return b"\n".join(parts)


DB_FILES = ("keyhouse.db", "keyhouse.db-wal", "keyhouse.db-shm")


def data_dir_files(data_dir: Path, *names: str) -> dict[str, bytes]:
    return {n: (data_dir / n).read_bytes() for n in names if (data_dir / n).exists()}


@pytest.mark.parametrize("secrets_from", ["settings", "data dir"])
async def test_no_secret_at_rest_in_redis_logs_or_error_bodies(
    make_settings: Callable[..., Settings],
    backend: str,
    redis_url: str,
    secrets_from: str,
    capfd: pytest.CaptureFixture[str],
) -> None:
    if secrets_from == "data dir" and backend == "postgresql":
        pytest.skip("with KEYHOUSE_DATABASE_URL no secret is generated into the data dir")
    found = Secrets()
    overrides: dict[str, Any] = {
        "redis_url": redis_url,
        # Limits on, so counters and buckets go to Redis.
        "default_monthly_requests": 1_000_000,
        "default_rate_per_second": 1000,
        "default_burst": 1000,
        "log_level": "info",
    }
    if secrets_from == "settings":
        raw = secrets.token_bytes(32)
        token = "kh_admin_" + secrets.token_urlsafe(32)
        overrides["encryption_keys"] = f"k1:{base64.b64encode(raw).decode()}"
        overrides["admin_tokens"] = token
    settings = make_settings(**overrides)
    app = create_app(settings)
    data_dir = settings.data_dir
    try:
        async with app.router.lifespan_context(app):
            if secrets_from == "settings":
                found.encryption_keys.append(raw)
            else:
                # Generated on first start into the data dir: read them back from there.
                for line in (data_dir / "encryption_keys").read_text().split():
                    found.encryption_keys.append(base64.b64decode(line.partition(":")[2]))
                token = (data_dir / "admin_tokens").read_text().strip()
            found.admin_tokens.append(token)
            transport = httpx.ASGITransport(app=app)
            base = "http://testserver"
            async with httpx.AsyncClient(transport=transport, base_url=base) as client:
                session = Session(client, token, found)
                await realistic_session(session)
            while_running = data_dir_files(data_dir, *DB_FILES)
        after = data_dir_files(data_dir, *DB_FILES)

    finally:
        # Read even on failure: pytest would print what was captured, secrets and all.
        captured = capfd.readouterr()
    logs = (captured.err + captured.out).encode()

    # The checks would pass vacuously on empty places: each holds what it should.
    # (Booleans and counts computed first: pytest prints an assert's operands.)
    access_lines = logs.count(b'"event":"request"')
    redacted = b"[redacted]" in logs
    error_count = len(session.error_bodies)
    stored = redis_contents()
    redis_used = bool(stored)
    key_count = len(found.api_keys)
    assert access_lines >= 40, "the access log was not captured"
    assert redacted, "the key pasted into a URL path did not reach the log"
    assert error_count >= 25
    assert redis_used, "nothing in Redis: limits did not use it"
    assert key_count >= 9

    every = found.key_needles() + found.material_needles()
    leaks = found_in({"logs": logs, "Redis": stored, **session.error_bodies}, every)
    assert leaks == [], "a secret was found in these places"

    at_rest: dict[str, bytes] = {}
    if backend == "sqlite":
        has_db = "keyhouse.db" in while_running
        assert has_db
        at_rest |= {f"{k} while running": v for k, v in while_running.items()}
        at_rest |= {f"{k} after shutdown": v for k, v in after.items()}
    else:
        assert settings.database_url is not None
        with anyio.fail_after(60):
            done = await anyio.run_process(
                ["pg_dump", "--no-owner", "--dbname", pg_plain(settings.database_url)]
            )
        dump = done.stdout
        has_keys_table = b"COPY public.api_keys" in dump
        assert has_keys_table
        at_rest["pg_dump"] = dump
    # The database holds hashes and ciphertexts, never a key or the key that encrypts them.
    leaks = found_in(at_rest, every)
    assert leaks == [], "a secret was found in these places"
