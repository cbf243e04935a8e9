"""``keyhouse serve``: uvicorn on a socket of keyhouse's own, in one process or N.

uvicorn's own ``--workers`` shares one listening socket made without
``IPPROTO_TCP``: under asyncio's event loop, asyncio then never sets
``TCP_NODELAY`` on its connections and every keep-alive response waits ~40 ms
for the client's delayed ACK (https://github.com/encode/uvicorn/issues/3149;
measured here: an empty endpoint at 727 req/s, p50 44 ms, the CPU 2% busy).
uvloop, the loop uvicorn picks when it is installed, sets ``TCP_NODELAY`` on
every connection whatever the socket (strace: ``setsockopt(TCP_NODELAY)``
after each ``accept4``). With one shared socket the first worker to wake also
takes most connections. Here each worker binds its own TCP socket with
``SO_REUSEPORT``: the kernel spreads connections over the workers, and
asyncio sets ``TCP_NODELAY``. A worker that dies is started again; SIGTERM or
SIGINT stops them all gracefully. ``keyhouse serve`` with one process binds
the same socket (without ``SO_REUSEPORT``) and serves it with the same
``serve_socket``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import sys
import time
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from keyhouse.logs import configure_logging, get_logger, route_stdlib_logging

__all__ = ["check_port", "main", "proxy_options", "serve_socket", "serve_workers", "tcp_socket"]

_STOP_TIMEOUT = 30.0

log = get_logger("keyhouse.serving")


def tcp_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def check_port(host: str, port: int) -> None:
    """Raise OSError now if the address is taken (SO_REUSEPORT would share it)."""
    tcp_socket(host, port, reuse_port=False).close()


KEYHOUSE_APP = "keyhouse.app:app_from_env"


def proxy_options(trusted_proxies: str) -> dict[str, Any]:
    """uvicorn's proxy options: ``X-Forwarded-*`` believed from ``trusted_proxies`` only.

    uvicorn's defaults believe them from 127.0.0.1 and ::1 (or
    ``FORWARDED_ALLOW_IPS``): any local client, a co-located process or a
    proxy that passes the header on unchanged, wrote the address of its
    choice into the audit log and into the failed-authentication limit's
    key (issue 13). With no trusted proxy the headers are not read at all.
    """
    if not trusted_proxies:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": trusted_proxies.split(",")}


def serve_socket(sock: socket.socket, options: dict[str, Any]) -> None:
    """Serve ``options["app"]`` with uvicorn on ``sock`` until SIGTERM/SIGINT.

    What each worker runs, and ``keyhouse serve`` in its one process: one way
    to serve, so one process and a worker cannot drift apart (socket, event
    loop, HTTP parser, log options).
    """
    import uvicorn

    # Every line JSON, uvicorn's too: its loggers propagate to keyhouse's
    # handler instead of its own text formatter (logs.route_stdlib_logging).
    level = options.get("log_level", "info")
    configure_logging(level)
    route_stdlib_logging(level)
    # As uvicorn.run: after its graceful shutdown uvicorn raises the signal
    # again, and SIGINT's default is KeyboardInterrupt (exit 130 from Typer).
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(uvicorn.Config(**{**options, "log_config": None})).run(sockets=[sock])


def _worker(host: str, port: int, options: dict[str, Any]) -> None:
    serve_socket(tcp_socket(host, port, reuse_port=True), options)


def serve_workers(
    host: str,
    port: int,
    workers: int,
    options: dict[str, Any],
    *,
    app: str = KEYHOUSE_APP,
    factory: bool = True,
) -> None:
    """Run ``workers`` processes serving ``app`` (an import string) until SIGTERM/SIGINT."""
    options = {**options, "app": app, "factory": factory}
    ctx = multiprocessing.get_context("spawn")
    stopping = False

    def start() -> BaseProcess:
        proc = ctx.Process(target=_worker, args=(host, port, options), daemon=False)
        proc.start()
        return proc

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    procs = [start() for _ in range(workers)]
    log.info(
        "serving",
        url=f"http://{host}:{port}",
        workers=workers,
        pids=[p.pid for p in procs],
        pid=os.getpid(),
    )
    try:
        while not stopping:
            for i, proc in enumerate(procs):
                if not proc.is_alive() and not stopping:
                    log.warning("worker_exited", worker_pid=proc.pid, exit_code=proc.exitcode)
                    procs[i] = start()
            time.sleep(0.2)
    finally:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                log.warning("worker_killed", worker_pid=proc.pid, after_seconds=_STOP_TIMEOUT)
                proc.kill()
                proc.join()
        log.info("stopped", pid=os.getpid())


def main(argv: list[str] | None = None) -> None:
    """``python -m keyhouse.serving MODULE:APP``: any ASGI app under this server.

    For the benchmark's framework floors, so they run under the same server
    and worker count as keyhouse.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m keyhouse.serving")
    parser.add_argument("app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--app-dir", default=None)
    args = parser.parse_args(argv)
    if args.app_dir:
        sys.path.insert(0, args.app_dir)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (args.app_dir, os.environ.get("PYTHONPATH")) if p
        )
    check_port(args.host, args.port)
    configure_logging("warning")
    options = {"access_log": False, "log_level": "warning", "server_header": False}
    serve_workers(args.host, args.port, args.workers, options, app=args.app, factory=False)


if __name__ == "__main__":
    main()
