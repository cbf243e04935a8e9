"""The README's send-only key example runs as written, and answers what it shows.

Its ``sh`` blocks run in one bash, against a
real ``keyhouse serve``, with ``KEY`` (the account's key of "First steps") set;
only the port changes. Each ``# {...}`` line after a command is what it
printed: its ``code`` and ``reason`` must be the ones printed.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path

import pytest

from keyhouse.config import Settings
from tests.cli.clone import ROOT, clean_env
from tests.cli.test_readme import BLOCK, section
from tests.factories import settings_env
from tests.limits.conftest import served
from tests.test_cli import scrub
from tests.test_scale_out import prepared_account

TITLE = "## Restricted keys: scopes, IP allowlists, origins, attributes"
CODE = re.compile(r'"code":"([a-z_]+)"')
REASON = re.compile(r'"reason":"([^"]+)"')


def restricted_blocks() -> list[str]:
    return BLOCK.findall(section(TITLE))


def shown(blocks: list[str]) -> list[tuple[str, str | None]]:
    """(code, reason) of each answer the blocks' comments show, in order."""
    out = []
    for block in blocks:
        for line in block.splitlines():
            code = CODE.search(line) if line.startswith("# {") else None
            if code is not None:
                reason = REASON.search(line)
                out.append((code.group(1), reason.group(1) if reason else None))
    return out


@pytest.mark.sqlite_only
def test_the_send_only_key_as_written(settings: Settings, tmp_path: Path) -> None:
    blocks = restricted_blocks()
    assert len(blocks) == 3, "the example has changed: look at this test again"
    acc = asyncio.run(prepared_account(settings))
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / ".venv").symlink_to(ROOT / ".venv")
    with served(settings, 1) as [url]:
        port = url.rsplit(":", 1)[1]
        script = "\n".join(blocks).replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=clone,
            env=clean_env(**settings_env(settings), KEY=acc.key),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    failed = proc.returncode != 0
    assert not failed, scrub(proc.stderr)
    answers = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    catalog, *verdicts, api = answers
    declared = {s["name"] for s in catalog["scopes"] if not s["builtin"]}
    assert declared == {"messages:send", "messages:read"}
    got: list[tuple[str, str | None]] = [(v["code"], v.get("reason")) for v in verdicts]
    got.append((api["error"]["code"], None))
    assert got == shown(blocks)
    assert [code for code, _ in got] == [
        "valid",
        "insufficient_scope",
        "ip_not_allowed",
        "attribute_not_allowed",
        "ip_not_allowed",
        "ip_not_allowed",
    ]
    assert verdicts[0]["scopes"] == ["messages:send"]
    assert verdicts[0]["restrictions"] == {
        "ipAllowlist": ["203.0.113.0/24"],
        "attributes": {"senderDomain": ["acme.com"]},
    }
