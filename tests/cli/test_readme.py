"""The README's commands run as written (issue 13, item 7): the first steps,
against ``make serve`` of a fresh clone, and the backup commands, whose
backup then restores.

Each ``sh`` block of a section is run by bash as it stands; the only change
is the port (a free one instead of 8000).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli.clone import ROOT, Served, clean_env, make_serve
from tests.factories import bearer
from tests.test_cli import CliResult, expect_ok, keyhouse, scrub

BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)


def section(title: str, path: Path = ROOT / "README.md") -> str:
    """The README's text under ``title`` (a heading line), up to the next heading
    of the same or a higher level (lines in code blocks are no headings)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    level = len(title.split(" ", 1)[0])
    start = lines.index(title + "\n")
    fenced = False
    for end in range(start + 1, len(lines)):
        line = lines[end]
        fenced ^= line.startswith("```")
        hashes = len(line) - len(line.lstrip("#"))
        if not fenced and 0 < hashes <= level and line[hashes : hashes + 1] == " ":
            break
    else:
        end = len(lines)
    return "".join(lines[start:end])


def sh_blocks(title: str) -> list[str]:
    return BLOCK.findall(section(title))


def bash(served: Served, script: str) -> CliResult:
    script = script.replace("127.0.0.1:8000", f"127.0.0.1:{served.port}")
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=served.clone,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def cli_json(data_dir: Path, *args: str) -> Any:
    result = keyhouse(data_dir, *args, "--json")
    expect_ok(result)
    return result.json()


def test_first_steps_as_written(tmp_path: Path) -> None:
    blocks = sh_blocks("### First steps")
    assert len(blocks) == 4, "the first steps have changed: look at this test again"
    with make_serve(tmp_path / "clone") as served:
        result = bash(served, "\n".join(blocks))
        expect_ok(result)
        refused = '"error"' in result.out
        assert not refused, f"a step was refused: {scrub(result.out)}"

        data_dir = served.data_dir
        accounts = cli_json(data_dir, "account", "list")["accounts"]
        assert [a["name"] for a in accounts] == ["Acme"], "the first steps made another account"
        account = accounts[0]["id"]
        [staging] = cli_json(data_dir, "environment", "list", "--account", account)["environments"]
        assert staging["name"] == "staging"
        keys = cli_json(data_dir, "key", "list", "--account", account)["keys"]
        shape = [(k["name"], k["keyType"], k.get("environmentId")) for k in keys]
        assert shape == [
            ("staging backend", "secret", staging["id"]),  # the scoped key they announce
            ("web widget", "public", None),
            ("Default secret key", "secret", None),
        ]
        # The last step, the CLI's table, lists the same keys.
        shown = all(k["id"] in result.out for k in keys)
        assert shown, "keyhouse key list did not show the keys"


@pytest.mark.parametrize("tool", ["sqlite3", "python"])
def test_backup_as_written_restores(tmp_path: Path, tool: str) -> None:
    blocks = sh_blocks("### Backups")
    assert len(blocks) == 2, "the backup commands have changed: look at this test again"
    command = blocks[0] if tool == "sqlite3" else blocks[1]
    assert command.startswith(f"{tool} " if tool == "sqlite3" else ".venv/bin/python ")
    if tool == "sqlite3" and shutil.which("sqlite3") is None:
        pytest.skip("the sqlite3 program is not installed here (the README's second way is)")
    with make_serve(tmp_path / "clone") as served:
        data_dir = served.data_dir
        acc = cli_json(data_dir, "account", "create", "--name", "Acme")
        auth = bearer(acc["key"])
        # Written by the running server: these rows sit in its write-ahead log.
        for name in ("one", "two", "three"):
            body = {"name": name, "keyType": "secret"}
            created = httpx.post(f"{served.url}/keys", json=body, headers=auth)
            assert created.status_code == 201, scrub(created.text)
        wal = data_dir / "keyhouse.db-wal"
        in_wal = wal.exists() and wal.stat().st_size > 0
        assert in_wal, "nothing in the write-ahead log"
        listed = httpx.get(f"{served.url}/keys", headers=auth)
        assert listed.status_code == 200
        expected = listed.json()
        # What the README warns of: a plain copy of keyhouse.db lacks them.
        plain = tmp_path / "plain-copy.db"
        shutil.copyfile(data_dir / "keyhouse.db", plain)
        with contextlib.closing(sqlite3.connect(plain)) as conn:
            names = {row[0] for row in conn.execute("SELECT name FROM api_keys")}
        missed = not {"one", "two", "three"} <= names
        assert missed, "a plain copy held every key: the README's warning is wrong"

        result = bash(served, command)
        expect_ok(result)
        backup = served.clone / "backup.db"
        assert backup.is_file(), "no backup.db where the README says"

    # Restore: the backup and the two secret files in a data directory of their own.
    restored = tmp_path / "restored"
    restored.mkdir(mode=0o700)
    shutil.copyfile(backup, restored / "keyhouse.db")
    for name in ("encryption_keys", "admin_tokens"):
        shutil.copyfile(data_dir / name, restored / name)
    for path in restored.iterdir():
        path.chmod(0o600)
    got = cli_json(restored, "key", "list", "--account", acc["accountId"])
    # lastUsedAt moves with use; everything else, full keys included, is the same.
    for listing in (got, expected):
        for key in listing["keys"]:
            key.pop("lastUsedAt", None)
    same = got == expected
    assert same, "the restored keyhouse lists other keys"
