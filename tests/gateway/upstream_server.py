"""The upstream of the gateway tests: a real HTTP server process, two ports.

``python -m tests.gateway.upstream_server HTTP_PORT RAW_PORT``

* HTTP_PORT: a well-behaved API under uvicorn (pure ASGI, no framework);
  every request but ``/__upstream/*`` is counted by path, so a test can tell
  whether the gateway passed a request on:

  - ``/__upstream/seen?path=P``  -> ``{"count": n}``: requests to P so far
  - ``/__upstream/release?name=N``  -> lets ``/stream?name=N`` finish
  - ``/count``  -> ``{"bytes": n}`` of the request body, read chunk by chunk
  - ``/bytes?n=N``  -> N bytes, in 64 KiB chunks
  - ``/stream?name=N``  -> ``first\\n``, then waits for the release, then ``rest\\n``
  - ``/status/CODE``  -> that status, a body and headers of its own (a cookie too)
  - anything else  -> the echo: ``{method, rawPath, query, headers, bodyLength, bodySha256}``

* RAW_PORT: a misbehaving one (asyncio streams), by path:

  - ``/close``  -> reads the request, closes the connection without a word
  - ``/reset``  -> reads the request, resets the connection (RST)
  - ``/never``  -> reads the request, never answers
  - ``/cut``  -> a 200 announcing 1,000,000 bytes, sends 10, closes
  - ``/garbage``  -> answers with bytes that are not HTTP
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import struct
import sys
from collections import Counter, defaultdict
from typing import Any
from urllib.parse import parse_qs

import uvicorn

Scope = dict[str, Any]

seen: Counter[str] = Counter()
releases: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
CHUNK = 64 * 1024


def _param(scope: Scope, name: str) -> str:
    values = parse_qs(scope["query_string"].decode("latin-1")).get(name, [""])
    return str(values[0])


async def _send_json(send: Any, status: int, body: Any, headers: list[Any] | None = None) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    path: str = scope["path"]
    if path == "/__upstream/seen":
        await _send_json(send, 200, {"count": seen[_param(scope, "path")]})
        return
    if path == "/__upstream/release":
        releases[_param(scope, "name")].set()
        await _send_json(send, 200, {"released": True})
        return
    seen[path] += 1
    if path == "/count":
        total = 0
        while True:
            message = await receive()
            total += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await _send_json(send, 200, {"bytes": total})
        return
    if path == "/bytes":
        size = int(_param(scope, "n"))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/octet-stream"),
                    (b"content-length", str(size).encode()),
                ],
            }
        )
        block = b"x" * CHUNK
        while size > 0:
            part = block[: min(size, CHUNK)]
            size -= len(part)
            await send({"type": "http.response.body", "body": part, "more_body": size > 0})
        return
    if path == "/stream":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"first\n", "more_body": True})
        await releases[_param(scope, "name")].wait()
        await send({"type": "http.response.body", "body": b"rest\n"})
        return
    if path.startswith("/status/"):
        status = int(path.rsplit("/", 1)[1])
        extra = [
            (b"x-upstream", b"its own"),
            (b"set-cookie", b"session=upstream-cookie; Path=/"),
            (b"cache-control", b"max-age=60"),
        ]
        if 300 <= status < 400:
            extra.append((b"location", b"/elsewhere"))
        await _send_json(send, status, {"upstream": True, "status": status}, extra)
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    echo = {
        "method": scope["method"],
        "rawPath": scope["raw_path"].decode("latin-1"),
        "query": scope["query_string"].decode("latin-1"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "bodyLength": len(body),
        "bodySha256": hashlib.sha256(body).hexdigest(),
    }
    await _send_json(send, 200, echo, [(b"x-echo", b"yes")])


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    return head.split(b" ", 2)[1]


async def raw(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        target = await _read_head(reader)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
        return
    if target == b"/never":
        await asyncio.sleep(3600)
    elif target == b"/reset":
        sock: socket.socket = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    elif target == b"/cut":
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n0123456789")
        await writer.drain()
        await asyncio.sleep(0.2)
    elif target == b"/garbage":
        writer.write(b"this is not http\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)
    writer.close()


async def main(http_port: int, raw_port: int) -> None:
    server = await asyncio.start_server(raw, "127.0.0.1", raw_port)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=http_port, log_level="warning", access_log=False
    )
    async with server:
        await uvicorn.Server(config).serve()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
