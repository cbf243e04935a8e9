"""``pip install ./clients/python`` in a fresh venv: keyhouse-client and httpx, and
nothing of the server (issue 14: a platform must not install SQLAlchemy,
FastAPI and cryptography to call keyhouse).

One test: a venv and a pip install take ~10-20 s here (pip fetches hatchling
and httpx from the package index it is configured with).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CLIENT = ROOT / "clients" / "python"
SERVER_ONLY = {"keyhouse", "sqlalchemy", "fastapi", "cryptography", "starlette", "pydantic"}


def run(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_pip_install_in_a_fresh_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    made = run(sys.executable, "-m", "venv", venv, timeout=120)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    installed = run(
        python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", CLIENT
    )
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]

    listed = run(python, "-m", "pip", "list", "--format=json", "--disable-pip-version-check")
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert {"keyhouse-client", "httpx"} <= names
    assert names & SERVER_ONLY == set()

    # The client and both middlewares import without any web framework;
    # keyhouse_client.fastapi is the one module that needs FastAPI.
    imported = run(
        python,
        "-c",
        "import keyhouse_client, keyhouse_client.middleware; "
        "from keyhouse_client import Keyhouse, AsyncKeyhouse, AccountClient, "
        "AsyncAccountClient, KeyhouseAuth, KeyhouseWSGIAuth, KeyhouseError; "
        "print(keyhouse_client.__version__)",
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "0.1.0"
    fastapi = run(python, "-c", "import keyhouse_client.fastapi")
    assert "No module named 'fastapi'" in fastapi.stderr
