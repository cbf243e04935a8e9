"""The README's gateway example runs as written: the stand-in API and the gateway
each in their own "terminal" (a process), then the third block's commands.
Only the ports change (free ones instead of 9000 and 8080).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.cli.clone import ROOT, clean_env
from tests.cli.test_readme import section
from tests.gateway.conftest import stop_process, wait_until_answering
from tests.limits.conftest import free_port
from tests.test_cli import CliResult, expect_ok, scrub

TITLE = "### No proxy: `keyhouse gateway`"
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)


def gateway_blocks() -> list[str]:
    return BLOCK.findall(section(TITLE))


@contextmanager
def terminal(script: str, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        stop_process(proc)


def test_the_gateway_example_as_written(tmp_path: Path) -> None:
    blocks = gateway_blocks()
    assert len(blocks) == 3, "the gateway example has changed: look at this test again"
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / ".venv").symlink_to(ROOT / ".venv")
    api, gateway = free_port(), free_port()

    def ported(script: str) -> str:
        return script.replace("9000", str(api)).replace("8080", str(gateway))

    upstream_block, gateway_block, client_block = map(ported, blocks)
    with terminal(upstream_block, clone) as api_proc, terminal(gateway_block, clone) as gw_proc:
        wait_until_answering(f"http://127.0.0.1:{api}/", api_proc, "the stand-in API")
        wait_until_answering(f"http://127.0.0.1:{gateway}/", gw_proc, "keyhouse gateway")
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", client_block],
            cwd=clone,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    result = CliResult(proc.returncode, proc.stdout, proc.stderr)
    expect_ok(result)
    lines = result.out.splitlines()
    assert lines[0] == "200", scrub(result.out)
    assert '"code":"missing_api_key"' in lines[1], scrub(result.out)
