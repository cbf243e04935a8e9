"""The CLI's log lines: JSON on stderr, so that ``--json`` leaves stdout one JSON object.

``key list`` of a key that no configured encryption key decrypts logs a
``key_not_recoverable`` warning (keys/presenter.py). Before the CLI
configured logging, structlog's default printed it on stdout, as coloured
text above the JSON object. The commands run in this process (CliRunner),
on logging as a fresh ``keyhouse`` process finds it: structlog unconfigured
(the app of the fixtures configures it), the stdlib's root logger restored after.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import warnings
from collections.abc import Iterator

import pytest
import structlog
from typer.testing import CliRunner

from keyhouse.app import create_app
from keyhouse.cli import app as cli
from keyhouse.config import Settings
from keyhouse.runtime import Runtime
from tests.factories import AccountWithKey, create_account, settings_env

pytestmark = pytest.mark.sqlite_only


async def account_of(settings: Settings) -> AccountWithKey:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        return await create_account(runtime)


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """structlog's configuration and the root logger as they were before the test."""
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level, showwarning = list(root.handlers), root.level, warnings.showwarning
    try:
        yield
    finally:
        structlog.configure(**config)
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.captureWarnings(False)
        warnings.showwarning = showwarning


def other_encryption_key() -> str:
    return f"other:{base64.b64encode(os.urandom(32)).decode()}"


def test_a_json_command_logs_on_stderr_and_prints_one_object(
    settings: Settings, restored_logging: None
) -> None:
    account = asyncio.run(account_of(settings))
    structlog.reset_defaults()  # the app configured it: not the CLI's process
    # Another encryption key than the one that encrypted the account's key:
    # listed masked, with a warning.
    env = {**settings_env(settings), "KEYHOUSE_ENCRYPTION_KEYS": other_encryption_key()}
    result = CliRunner().invoke(
        cli, ["key", "list", "--account", account.account_id, "--json"], env=env
    )
    assert result.exit_code == 0, result.stderr

    listed = json.loads(result.stdout)
    assert [k["id"] for k in listed["keys"]] == [account.key_id]
    assert listed["keys"][0]["recoverable"] is False

    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(line["event"], line["level"]) for line in lines] == [
        ("key_not_recoverable", "warning")
    ]
    assert lines[0]["key_id"] == account.key_id
    assert account.key not in result.stdout + result.stderr


def test_the_settings_log_level_holds(settings: Settings, restored_logging: None) -> None:
    account = asyncio.run(account_of(settings))
    structlog.reset_defaults()
    env = {
        **settings_env(settings),
        "KEYHOUSE_ENCRYPTION_KEYS": other_encryption_key(),
        "KEYHOUSE_LOG_LEVEL": "error",
    }
    result = CliRunner().invoke(
        cli, ["key", "list", "--account", account.account_id, "--json"], env=env
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["keys"][0]["id"] == account.key_id
    assert result.stderr == ""
