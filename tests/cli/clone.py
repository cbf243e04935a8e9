"""A fresh clone served by ``make serve``, for the tests of the newcomer's path.

The clone holds what ``make serve`` reads (the Makefile and pyproject.toml,
with their times kept so make sees ``.venv`` as up to date) and this
checkout's ``.venv``, linked: setting up a new ``.venv`` needs the network.
No setting and no ``.keyhouse`` yet, as after ``git clone``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.limits.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Served:
    clone: Path
    url: str
    port: int
    log: Path

    @property
    def data_dir(self) -> Path:
        return self.clone / ".keyhouse"

    @property
    def keyhouse(self) -> Path:
        """The command as the README runs it: ``.venv/bin/keyhouse`` of the clone."""
        return self.clone / ".venv" / "bin" / "keyhouse"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a new operator's shell: no KEYHOUSE_* setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYHOUSE_", "MAKE"))}
    env.update(extra)
    return env


@contextmanager
def make_serve(clone: Path) -> Iterator[Served]:
    clone.mkdir()
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(ROOT / name, clone / name)
    (clone / ".venv").symlink_to(ROOT / ".venv")
    port = free_port()
    log = clone.parent / f"{clone.name}-serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            ["make", "serve", f"PORT={port}"],
            cwd=clone,
            # As a newcomer runs it: no setting (the data directory is said at info).
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"make serve exited with {proc.returncode}"
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "make serve did not answer within 60 s"
            time.sleep(0.05)
        yield Served(clone, url, port, log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
