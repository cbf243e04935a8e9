"""A real HTTP server that answers as scripted: the faults a live keyhouse cannot
be made to show on demand (a 503 answer, a proxy's HTML page, no answer in
time), for the client's retry and error paths.

It listens on 127.0.0.1 on a port of its own and records each request it gets
(method, path, headers), so a test can count attempts and compare the
``Idempotency-Key`` each carried. Everything else the client does is tested
against a live ``keyhouse serve``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
    # Wait for StandIn.release before answering (a server that does not answer).
    hold: bool = False


@dataclass
class StandIn:
    url: str
    answers: list[Answer]
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def next_answer(self) -> Answer:
        # The last answer repeats once the script is used up.
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@contextmanager
def stand_in(*answers: Answer) -> Iterator[StandIn]:
    state: StandIn

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            state.requests.append((self.command, self.path, dict(self.headers.items())))
            answer = state.next_answer()
            if answer.hold:
                state.release.wait(10)
            self.send_response(answer.status)
            for name, value in answer.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        do_GET = do_POST = do_PATCH = _answer

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state = StandIn(f"http://127.0.0.1:{server.server_address[1]}", list(answers))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)
