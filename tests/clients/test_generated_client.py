"""A client generated from ``/openapi.json`` by openapi-python-client works (issue 13).

The generator runs offline on the document a real ``keyhouse serve`` serves
(``--fail-on-warning``: every schema is understood); then
``use_generated_client.py`` calls every operation with it, a roll without a
body included. The generator and the client run in ``.venv/clientgen``
(``make test`` makes it; its typer pin conflicts with keyhouse's).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from keyhouse.config import Settings
from tests.limits.conftest import served

pytestmark = pytest.mark.sqlite_only

ROOT = Path(__file__).resolve().parents[2]
CLIENTGEN = ROOT / ".venv" / "clientgen" / "bin"
ADMIN = "kh_admin_generated_client_test_0123456789"


def test_every_operation_works_through_the_generated_client(
    settings: Settings, tmp_path: Path
) -> None:
    if not (CLIENTGEN / "openapi-python-client").exists():
        reason = f"no openapi-python-client in {CLIENTGEN} (make .venv/clientgen/.installed)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with served(settings, 1, KEYHOUSE_ADMIN_TOKENS=ADMIN) as [url]:
        document = httpx.get(f"{url}/openapi.json").json()
        spec = tmp_path / "openapi.json"
        spec.write_text(json.dumps(document))
        # The generator formats its output with ruff: the one of its own venv.
        env = {**os.environ, "PATH": f"{CLIENTGEN}{os.pathsep}{os.environ['PATH']}"}
        generated = subprocess.run(
            [
                str(CLIENTGEN / "openapi-python-client"),
                "generate",
                "--path",
                str(spec),
                "--meta",
                "none",
                "--output-path",
                str(tmp_path / "pkg" / "keyhouse_openapi_client"),
                "--fail-on-warning",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert generated.returncode == 0, generated.stdout + generated.stderr
        used = subprocess.run(
            [
                str(CLIENTGEN / "python"),
                str(Path(__file__).with_name("use_generated_client.py")),
                url,
                ADMIN,
            ],
            env={**env, "PYTHONPATH": str(tmp_path / "pkg")},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert used.returncode == 0, used.stderr[-3000:]
    calls: dict[str, list[object]] = json.loads(used.stdout)["calls"]
    operations = {
        operation["operationId"]
        for path_item in document["paths"].values()
        for operation in path_item.values()
    }
    assert operations - calls.keys() == set(), "operations the client script does not call"
    for name, (status, parsed) in calls.items():
        assert isinstance(status, int), (name, status)
        assert 200 <= status < 300, (name, status, parsed)
        assert parsed not in {"ErrorResponse", "NoneType"}, (name, status, parsed)
    # The roll without a body: the default grace, answered with the new key.
    assert calls["rollKey"] == [201, "ApiKey"]
    assert calls["rollKey with a body"] == [201, "ApiKey"]
