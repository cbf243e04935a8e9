"""``keyhouse key create`` with ``--scope``, ``--allow-ip``, ``--allow-origin`` and
``--attribute`` (issue 15 item 8): the same service and checks as ``POST /keys``."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_cli import expect_ok, expect_one_line_failure, keyhouse

CATALOG = {
    "scopes": [{"name": "messages:send", "description": "Send messages."}],
    "attributes": [{"name": "senderDomain", "description": "The sending domain."}],
}


def account(data_dir: Path) -> str:
    expect_ok(keyhouse(data_dir, "init"))
    result = keyhouse(data_dir, "account", "create", "--name", "Acme", "--json")
    expect_ok(result)
    account_id: str = result.json()["accountId"]
    return account_id


def test_the_send_only_key(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    acc = account(data_dir)
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps(CATALOG))
    expect_ok(keyhouse(data_dir, "scopes", "set", str(catalog)))
    result = keyhouse(
        data_dir,
        "key",
        "create",
        "--account",
        acc,
        "--name",
        "sender",
        "--type",
        "secret",
        "--scope",
        "messages:send",
        "--scope",
        "keys:read",
        "--allow-ip",
        "203.0.113.0/24",
        "--allow-ip",
        "2001:db8::/32",
        "--attribute",
        "senderDomain=acme.com",
        "--attribute",
        "senderDomain=acme.org",
        "--json",
    )
    expect_ok(result)
    made = result.json()
    assert made["scopes"] == ["keys:read", "messages:send"]
    assert made["restrictions"] == {
        "ipAllowlist": ["203.0.113.0/24", "2001:db8::/32"],
        "attributes": {"senderDomain": ["acme.com", "acme.org"]},
    }
    listed = keyhouse(data_dir, "key", "list", "--account", acc, "--json")
    expect_ok(listed)
    [mine] = [k for k in listed.json()["keys"] if k["id"] == made["id"]]
    assert mine["scopes"] == made["scopes"]


def test_an_origin_on_a_public_key(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    acc = account(data_dir)
    args = ["key", "create", "--account", acc, "--name", "widget", "--json"]
    origin = ["--allow-origin", "https://app.example.com"]
    result = keyhouse(data_dir, *args, "--type", "public", *origin)
    expect_ok(result)
    assert result.json()["restrictions"] == {"allowedOrigins": ["https://app.example.com"]}
    refused = keyhouse(data_dir, *args, "--type", "secret", *origin)
    line = expect_one_line_failure(refused)
    assert "validation_error" in line
    assert "public keys only" in line


def test_what_is_refused_is_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    acc = account(data_dir)
    base = ["key", "create", "--account", acc, "--name", "k", "--type", "secret"]
    cases = {
        ("--scope", "messages:send"): "keyhouse scopes",  # not declared here
        ("--allow-ip", "203.0.113.5/24"): "203.0.113.0/24",  # host bits: the network meant
        ("--attribute", "senderDomain"): "NAME=VALUE",
        ("--attribute", "region=eu"): "keyhouse scopes",
    }
    for option, hint in cases.items():
        line = expect_one_line_failure(keyhouse(data_dir, *base, *option))
        assert "validation_error" in line, line
        assert hint in line, line
    listed = keyhouse(data_dir, "key", "list", "--account", acc, "--json")
    expect_ok(listed)
    assert len(listed.json()["keys"]) == 1
