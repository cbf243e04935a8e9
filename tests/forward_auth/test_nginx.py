"""The shipped nginx config (``deploy/nginx/keyhouse-forward-auth.conf``) with a real nginx.

nginx (Debian's package) runs the file as shipped, with only the addresses
and the verify token replaced, in front of a real ``keyhouse serve`` and a
tiny upstream API (a thread of this test) that answers with the request it
got. With ``CI=true`` a missing nginx fails the test (``.ci/run`` installs
it); elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyhouse.app import create_app
from keyhouse.config import Settings
from tests.factories import AccountWithKey, create_account, create_environment, create_key
from tests.limits.conftest import free_port, served
from tests.limits.helpers import account_on_plan

SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "keyhouse-forward-auth.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
VERIFY_TOKEN = "kh_verify_" + secrets.token_urlsafe(32)
IDENTITY = (
    "x-keyhouse-account-id",
    "x-keyhouse-key-id",
    "x-keyhouse-key-type",
    "x-keyhouse-environment-id",
)

pytestmark = pytest.mark.sqlite_only


def _nginx_or_skip() -> None:
    if os.path.exists(NGINX):
        return
    problem = f"no nginx at {NGINX} (Debian: apt-get install nginx-light)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{problem}; CI needs it (.ci/run installs it)")
    pytest.skip(problem)


class _Echo(BaseHTTPRequestHandler):
    """The upstream API: answers 200 with the method, path, headers and body it received."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        payload = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "headers": [[k.lower(), v] for k, v in self.headers.items()],
                "body": body.decode("utf-8", "replace"),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def echo_upstream() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def site_config(keyhouse_port: int, upstream_port: int, listen_port: int) -> str:
    """The shipped file with only its addresses and token replaced (each must be there)."""
    text = SHIPPED.read_text()
    replacements = {
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{keyhouse_port};",
        "server 127.0.0.1:9000;": f"server 127.0.0.1:{upstream_port};",
        "listen 8080;": f"listen 127.0.0.1:{listen_port};",
        '"REPLACE_WITH_A_VERIFY_TOKEN"': f'"{VERIFY_TOKEN}"',
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, f"the shipped config lost {old!r}"
        text = text.replace(old, new)
    return text


@contextmanager
def nginx(prefix: Path, site: str, port: int) -> Iterator[str]:
    """nginx in the foreground on ``site``, its files in ``prefix``; yields its URL."""
    prefix.mkdir()
    (prefix / "site.conf").write_text(site)
    user = "user root;\n" if os.geteuid() == 0 else ""
    (prefix / "nginx.conf").write_text(
        f"""{user}daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/site.conf;
}}
"""
    )
    args = [
        NGINX,
        "-p",
        str(prefix),
        "-c",
        str(prefix / "nginx.conf"),
        "-e",
        str(prefix / "error.log"),
    ]
    checked = subprocess.run([*args, "-t"], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr.replace(VERIFY_TOKEN, "[token]")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (prefix / "error.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not listen within 20 s"
                time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def raw_exchange(url: str, request: bytes) -> httpx.Response:
    """``request`` sent as is over a socket (what httpx would not send), nginx's answer read
    until it closes the connection."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = [(name, value) for name, _, value in (line.partition(": ") for line in lines)]
    return httpx.Response(int(status_line.split(" ")[1]), headers=headers, content=body)


async def _accounts(settings: Settings) -> dict[str, Any]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        runtime = app.state.runtime
        plain = await create_account(runtime)
        env = await create_environment(runtime, plain.account_id, "staging")
        scoped = await create_key(
            runtime, plain.account_id, key_type="public", environment_id=env.id
        )
        return {
            "plain": plain,
            "env_id": env.id,
            "scoped": AccountWithKey(plain.account_id, scoped.row.id, scoped.plaintext),
            "quota": await account_on_plan(runtime, monthlyRequests=1),
            "big": await account_on_plan(runtime, monthlyRequests=1),
            "rate": await account_on_plan(runtime, ratePerSecond=1, burst=1),
        }


def envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The seed's envelope with ``status`` and ``code``, its id in X-Tracking-Id."""
    __tracebackhide__ = True
    assert response.status_code == status, (response.status_code, response.headers)
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert set(body) == {"trackingId", "error"}
    assert body["error"]["code"] == code, body["error"]["code"]
    assert body["error"]["message"]
    assert response.headers["x-tracking-id"] == body["trackingId"]
    return body


def upstream_saw(response: httpx.Response) -> dict[str, Any]:
    __tracebackhide__ = True
    assert response.status_code == 200, response.status_code
    seen: dict[str, Any] = response.json()
    seen["header"] = dict(seen["headers"])
    return seen


async def test_the_shipped_nginx_config(settings: Settings, tmp_path: Path) -> None:
    _nginx_or_skip()
    accounts = await _accounts(settings)
    plain: AccountWithKey = accounts["plain"]
    with ExitStack() as stack:
        # Stopped one by one below, each also at the end whatever happens.
        api = stack.enter_context(ExitStack())
        keyhouse = stack.enter_context(ExitStack())
        upstream_port = api.enter_context(echo_upstream())
        keyhouse_url = keyhouse.enter_context(
            served(settings, 1, KEYHOUSE_VERIFY_TOKENS=VERIFY_TOKEN)
        )[0]
        port = free_port()
        site = site_config(int(keyhouse_url.rsplit(":", 1)[1]), upstream_port, port)
        url = stack.enter_context(nginx(tmp_path / "nginx", site, port))
        client = stack.enter_context(httpx.Client(base_url=url, timeout=10))

        # A good key reaches the API with its identity, without Authorization; a
        # client's own X-Keyhouse-* headers are replaced, not passed on.
        spoofed = {"X-Keyhouse-Account-Id": "acc_spoofed", "X-Keyhouse-Environment-Id": "env_x"}
        seen = upstream_saw(
            client.post("/items?limit=5&q=shoes", headers={**plain.auth, **spoofed}, json={"a": 1})
        )
        assert seen["method"] == "POST"
        assert seen["path"] == "/items?limit=5&q=shoes"
        assert json.loads(seen["body"]) == {"a": 1}
        assert "authorization" not in seen["header"]
        assert seen["header"]["x-keyhouse-account-id"] == plain.account_id
        assert seen["header"]["x-keyhouse-key-id"] == plain.key_id
        assert seen["header"]["x-keyhouse-key-type"] == "secret"
        assert "x-keyhouse-environment-id" not in seen["header"]
        assert [k for k, _ in seen["headers"] if k in IDENTITY] == list(IDENTITY[:3])
        assert plain.key not in json.dumps(seen)

        scoped: AccountWithKey = accounts["scoped"]
        seen = upstream_saw(client.get("/items", headers=scoped.auth))
        assert seen["header"]["x-keyhouse-key-type"] == "public"
        assert seen["header"]["x-keyhouse-environment-id"] == accounts["env_id"]

        # A bad key: 401 and keyhouse's envelope; the API is not asked.
        refused = client.get("/items", headers={"Authorization": "Bearer not-a-key-of-anyone"})
        envelope(refused, 401, "invalid_api_key")
        assert refused.headers.get_list("www-authenticate") == ['Bearer realm="keyhouse"']
        envelope(client.get("/items"), 401, "missing_api_key")
        # Two Authorization headers: nginx refuses them itself ("client sent duplicate
        # header line"), in keyhouse's envelope; nothing is passed on.
        two = [("Authorization", f"Bearer {plain.key}"), ("Authorization", "Bearer x")]
        both = client.get("/items", headers=two)
        assert envelope(both, 400, "validation_error")["error"]["fix"]
        assert both.headers["x-tracking-id"].startswith("nginx_")
        assert plain.key not in both.text

        # Only the four identity headers are keyhouse's: a client's X_Keyhouse_Account_Id
        # (a CGI server's X-Keyhouse-Account-Id) is dropped by nginx (underscores), and
        # any other X-Keyhouse-* passes as sent (deploy/README.md says so).
        seen = upstream_saw(
            client.get(
                "/items",
                headers={
                    **plain.auth,
                    "X_Keyhouse_Account_Id": "acc_spoofed",
                    "X_Keyhouse_Environment_Id": "env_spoofed",
                    "X-Keyhouse-Name": "spoof",
                },
            )
        )
        read_as = [name.replace("_", "-") for name, _ in seen["headers"]]
        assert read_as.count("x-keyhouse-account-id") == 1
        assert "x-keyhouse-environment-id" not in read_as
        assert seen["header"]["x-keyhouse-name"] == "spoof"

        # nginx's own refusals, in keyhouse's envelope with a fix (reviewer r14: a body
        # over client_max_body_size got 503 "key service not reachable"). By its
        # Content-Length: refused before keyhouse is asked, so the plan's one call is
        # still there afterwards.
        big: AccountWithKey = accounts["big"]
        auth_line = f"Authorization: Bearer {big.key}\r\n".encode()
        too_big = raw_exchange(
            url,
            b"POST /items HTTP/1.1\r\nHost: api\r\n"
            + auth_line
            + b"Content-Length: 20000000\r\nConnection: close\r\n\r\n",
        )
        assert envelope(too_big, 413, "payload_too_large")["error"]["fix"]
        # Chunked: nginx learns the size while reading, after the check (documented: that
        # call counts); still 413 and the envelope, not 502.
        chunked = raw_exchange(
            url,
            b"POST /items HTTP/1.1\r\nHost: api\r\n"
            + f"Authorization: Bearer {plain.key}\r\n".encode()
            + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            # The chunk's size and its first byte: nginx checks the size once data comes.
            + b"%x\r\na" % (11 * 1024 * 1024),
        )
        envelope(chunked, 413, "payload_too_large")
        upstream_saw(client.get("/items", headers=big.auth))
        envelope(client.get("/items", headers=big.auth), 402, "usage_limit_exceeded")
        assert envelope(client.get("/" + "a" * 20_000), 414, "validation_error")["error"]["fix"]
        long_header = {**plain.auth, "X-Big": "b" * 20_000}
        assert envelope(client.get("/items", headers=long_header), 431, "validation_error")
        garbage = raw_exchange(url, b"GARBAGE\r\n\r\n")
        assert envelope(garbage, 400, "validation_error")["error"]["fix"]
        assert envelope(client.request("TRACE", "/items"), 405, "method_not_allowed")
        unknown_te = raw_exchange(
            url,
            b"POST /items HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: gzip\r\n"
            b"Connection: close\r\n\r\n",
        )
        envelope(unknown_te, 501, "validation_error")

        # Over the monthly quota: 402, where auth_request alone would say 500.
        quota: AccountWithKey = accounts["quota"]
        upstream_saw(client.get("/items", headers=quota.auth))
        envelope(client.get("/items", headers=quota.auth), 402, "usage_limit_exceeded")

        # Over the rate: 429 with Retry-After and the RateLimit-* headers.
        rate: AccountWithKey = accounts["rate"]
        first = client.get("/items", headers=rate.auth)
        assert first.status_code == 200
        assert first.headers["ratelimit-limit"] == "1"
        limited = first
        for _ in range(5):  # the bucket of 1 refills in 1 s: the next calls come sooner
            limited = client.get("/items", headers=rate.auth)
            if limited.status_code == 429:
                break
        envelope(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.headers["ratelimit-remaining"] == "0"

        # The API down, the key good: the seed's 502 provider_error.
        api.close()
        body = envelope(client.get("/items", headers=plain.auth), 502, "provider_error")
        assert body["error"]["provider"] == "api"

        # keyhouse down: 503 with the envelope and Retry-After (fail closed).
        keyhouse.close()
        down = client.get("/items", headers=plain.auth)
        envelope(down, 503, "service_unavailable")
        assert down.headers["retry-after"] == "2"
