"""The newcomer's path, as one test (issue 13): a fresh clone, ``make serve``
with no setting, the CLI from another directory (refused, then pointed at the
keyhouse with KEYHOUSE_DATA_DIR), and a request with the key it printed.

SQLite only: ``make serve`` with no setting is the default database.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx

from tests.cli.clone import Served, clean_env, make_serve
from tests.test_cli import CliResult, expect_ok, expect_one_line_failure, scrub


def run(served: Served, cwd: Path, *args: str, **env: str) -> CliResult:
    proc = subprocess.run(
        [str(served.keyhouse), *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def test_fresh_clone_make_serve_cli_elsewhere_then_curl(tmp_path: Path) -> None:
    with make_serve(tmp_path / "clone") as served:
        data_dir = served.data_dir
        # make serve made the keyhouse, with no setting.
        made = sorted(p.name for p in data_dir.iterdir() if not p.name.startswith("keyhouse.db-"))
        assert made == ["admin_tokens", "encryption_keys", "keyhouse.db"]
        announced = served.log.read_text()
        assert f"KEYHOUSE_DATA_DIR={data_dir}" in announced, scrub(announced)

        # The CLI in another directory: refused, nothing made there.
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        for command in (["account", "list"], ["admin-token"]):
            line = expect_one_line_failure(run(served, elsewhere, *command))
            assert f"no keyhouse data directory at {elsewhere}/.keyhouse" in line, line
            assert "KEYHOUSE_DATA_DIR" in line, line
        assert list(elsewhere.iterdir()) == [], "the refused CLI left files behind"

        # Pointed at the server's keyhouse, it sees and changes the same data.
        point: dict[str, Any] = {"KEYHOUSE_DATA_DIR": str(data_dir)}
        status = run(served, elsewhere, "status", "--json", **point)
        expect_ok(status)
        assert status.json()["dataDir"] == str(data_dir)
        created = run(served, elsewhere, "account", "create", "--name", "Acme", "--json", **point)
        expect_ok(created)
        account = created.json()
        listed = run(served, elsewhere, "account", "list", "--json", **point)
        expect_ok(listed)
        assert [a["id"] for a in listed.json()["accounts"]] == [account["accountId"]]
        token = run(served, elsewhere, "admin-token", **point)
        expect_ok(token)
        assert list(elsewhere.iterdir()) == []

        # curl (httpx) with the printed key and the printed admin token.
        keys = httpx.get(
            f"{served.url}/keys", headers={"Authorization": f"Bearer {account['key']}"}
        )
        assert keys.status_code == 200, scrub(keys.text)
        assert [k["id"] for k in keys.json()["keys"]] == [account["keyId"]]
        admin = {"Authorization": f"Bearer {token.out.strip()}"}
        accounts = httpx.get(f"{served.url}/admin/accounts", headers=admin)
        assert accounts.status_code == 200, scrub(accounts.text)
        names = [a["name"] for a in accounts.json()["accounts"]]
        assert names == ["Acme"], json.dumps(names)
