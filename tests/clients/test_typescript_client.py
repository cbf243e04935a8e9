"""A TypeScript client generated from ``/openapi.json`` works (issue 14, item 5).

openapi-typescript turns the document a real ``keyhouse serve`` serves into
types, openapi-fetch calls the server with them: what a Node platform would
use. ``typescript/list-keys.ts`` lists an account's keys; it is compiled with
``tsc --strict`` and run with node against the live server, once with the
account's key and once with a bad one (the seed's envelope, typed).
``typescript/wrong-field.ts`` reads a member the key object does not have and
must not compile: the generated types are real, not ``any``.

The packages are pinned in ``typescript/package-lock.json`` and installed by
``make test`` when npm is present (``tests/clients/typescript/node_modules``).
Without node the test is skipped, with ``CI=true`` it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.keys.format import KeyFormat
from keyhouse.runtime import Runtime
from tests.factories import AccountWithKey, create_account, create_key
from tests.limits.conftest import served

pytestmark = pytest.mark.sqlite_only

PACKAGE = Path(__file__).with_name("typescript")
NODE_MODULES = PACKAGE / "node_modules"
BIN = NODE_MODULES / ".bin"
# What `strict` alone leaves to the defaults: ES modules as Node 20 runs them.
TSC_FLAGS = [
    "--strict",
    "--pretty",
    "false",
    "--module",
    "nodenext",
    "--moduleResolution",
    "nodenext",
    "--target",
    "es2022",
    "--types",
    "node",
    # Skips checking the packages' own .d.ts (TypeScript's recommended default;
    # 7 s instead of 2 s here). The generated schema is a .ts file: checked.
    "--skipLibCheck",
]
# wrong-field.ts's two mistakes, as (line, TypeScript error code).
EXPECTED_TYPE_ERRORS = {(10, "TS2551"), (12, "TS2322")}


def require_node() -> str:
    """The node binary; skips (fails with ``CI=true``) when node or the packages are missing."""
    node = shutil.which("node")
    if node is None:
        reason = "no node on PATH: the TypeScript client test needs Node.js 18+ and npm"
    elif not (BIN / "openapi-typescript").exists() or not (BIN / "tsc").exists():
        reason = f"no {NODE_MODULES} (make {NODE_MODULES}/.installed)"
    else:
        return node
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def prepared_keys(settings: Settings) -> tuple[AccountWithKey, str, str]:
    """An account (its first key), a second secret key and a public key: their ids."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        account = await create_account(runtime)
        second = await create_key(runtime, account.account_id, name="second")
        public = await create_key(runtime, account.account_id, key_type="public", name="web")
    return account, second.row.id, public.row.id


def test_generated_typescript_client_lists_keys(settings: Settings, tmp_path: Path) -> None:
    node = require_node()
    account, second_id, public_id = asyncio.run(prepared_keys(settings))
    work = tmp_path / "ts"
    work.mkdir()
    for source in ("list-keys.ts", "wrong-field.ts"):
        shutil.copyfile(PACKAGE / source, work / source)
    # The sources import openapi-fetch as a platform's code does: node_modules
    # next to them, and ES modules.
    (work / "node_modules").symlink_to(NODE_MODULES)
    (work / "package.json").write_text('{"type": "module"}\n')

    with served(settings, 1) as [url]:
        (work / "openapi.json").write_text(httpx.get(f"{url}/openapi.json").text)
        # schema.ts rather than .d.ts: compiled and type-checked with the sources.
        generated = run([str(BIN / "openapi-typescript"), "openapi.json", "-o", "schema.ts"], work)
        assert generated.returncode == 0, generated.stdout + generated.stderr

        # One tsc run for both files (each run costs ~2 s): list-keys.ts must
        # compile cleanly, wrong-field.ts must fail with exactly its two mistakes.
        compiled = run(
            [str(BIN / "tsc"), *TSC_FLAGS, "--outDir", "out", "list-keys.ts", "wrong-field.ts"],
            work,
        )
        diagnostics = compiled.stdout.strip().splitlines()
        found = set()
        for line in diagnostics:
            match = re.match(r"wrong-field\.ts\((\d+),\d+\): error (TS\d+):", line)
            assert match, f"a type error outside wrong-field.ts:\n{compiled.stdout}"
            found.add((int(match[1]), match[2]))
        assert found == EXPECTED_TYPE_ERRORS, compiled.stdout
        assert compiled.returncode != 0

        listed = run([node, "out/list-keys.js", url], work, {"KEYHOUSE_KEY": account.key})
        # Well formed (its checksum is right) but issued by no one.
        unknown = KeyFormat().generate("secret")
        refused = run([node, "out/list-keys.js", url], work, {"KEYHOUSE_KEY": unknown})

    assert listed.returncode == 0, listed.stderr[-3000:]
    answer = json.loads(listed.stdout)
    assert answer["status"] == 200
    # Newest first; the query parameter (keyType=secret) leaves the public key out.
    assert [k["id"] for k in answer["keys"]] == [second_id, account.key_id]
    assert public_id not in listed.stdout
    assert {k["accountId"] for k in answer["keys"]} == {account.account_id}
    assert {k["keyType"] for k in answer["keys"]} == {"secret"}
    assert answer["keys"][0]["name"] == "second"

    assert refused.returncode == 0, refused.stderr[-3000:]
    error = json.loads(refused.stdout)
    assert error["status"] == 401
    assert error["code"] == "invalid_api_key"
    assert error["message"]
    assert error["fix"]
    assert error["trackingId"] == error["trackingIdHeader"]
    assert account.key not in listed.stdout + listed.stderr + refused.stdout + refused.stderr
