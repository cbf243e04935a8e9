"""The README's CLI table, row by row: what ``--json`` prints is what the row says.

Each row's command is run for real (a subprocess on a SQLite data
directory) with ``--json``: stdout is one JSON object and nothing else, with
exactly the members the row lists (``"x"?``: may be absent; nested objects
checked the same way), or, where the row names an object ("the key
object"), that object. A new row this test cannot run fails it: the table
and the code stay one (issue 13, item 7).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.test_cli import CliResult, expect_ok, keyhouse, scrub

pytestmark = pytest.mark.sqlite_only

README = Path(__file__).resolve().parents[2] / "README.md"


@dataclass
class Shape:
    """A JSON object as the README writes it: ``{"a", "b"?, "c": {...}, "d": [...]}``."""

    required: set[str] = field(default_factory=set)
    optional: set[str] = field(default_factory=set)
    nested: dict[str, Shape | str] = field(default_factory=dict)  # "list" for [...]

    def check(self, value: Any, where: str) -> None:
        assert isinstance(value, dict), f"{where}: not an object"
        keys = set(value)
        assert self.required <= keys, f"{where}: missing {sorted(self.required - keys)}"
        extra = keys - self.required - self.optional
        assert not extra, f"{where}: members the README does not list: {sorted(extra)}"
        for name, inner in self.nested.items():
            if name not in value:
                continue
            if inner == "list":
                assert isinstance(value[name], list), f"{where}.{name}: not a list"
            else:
                assert isinstance(inner, Shape)
                inner.check(value[name], f"{where}.{name}")


def parse_shape(text: str) -> Shape:
    tokens: list[str] = re.findall(r'\{|\}|"[^"]*"|\[\.\.\.\]|[:,?]', text)
    position = 0

    def take() -> str:
        nonlocal position
        position += 1
        return tokens[position - 1]

    def obj() -> Shape:
        assert take() == "{"
        shape = Shape()
        while True:
            name = take().strip('"')
            optional = tokens[position] == "?"
            if optional:
                take()
            (shape.optional if optional else shape.required).add(name)
            if tokens[position] == ":":
                take()
                if tokens[position] == "[...]":
                    take()
                    shape.nested[name] = "list"
                else:
                    shape.nested[name] = obj()
            closing = take()
            if closing == "}":
                return shape
            assert closing == ",", tokens

    return obj()


def table_rows() -> list[tuple[str, str]]:
    """(command, what it prints) of each row of the README's CLI table."""
    text = README.read_text()
    start = text.index("| command | prints with `--json` |")
    rows = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        command = cells[0].strip("`").replace("\\|", "|")
        rows.append((command, cells[1]))
    return rows


@dataclass
class Seeded:
    data: Path
    account: str
    key_id: str
    environment: str
    spare_key: str
    roll_key: str


def seed(tmp_path: Path) -> Seeded:
    data = tmp_path / "data"
    expect_ok(keyhouse(data, "init"))
    created = keyhouse(data, "account", "create", "--name", "Acme", "--json")
    expect_ok(created)
    account = created.json()["accountId"]
    environment = keyhouse(
        data, "environment", "create", "--account", account, "--name", "staging", "--json"
    ).json()["id"]
    spare = keyhouse(
        data, "key", "create", "--account", account, "--name", "spare", "--type", "public", "--json"
    ).json()["id"]
    rolling = keyhouse(
        data, "key", "create", "--account", account, "--name", "r", "--type", "public", "--json"
    ).json()["id"]
    catalog = tmp_path / "catalog.json"
    catalog.write_text(
        json.dumps(
            {
                "scopes": [{"name": "messages:send", "description": "Send messages."}],
                "attributes": [{"name": "senderDomain", "description": "The sending domain."}],
            }
        )
    )
    return Seeded(data, account, created.json()["keyId"], environment, spare, rolling)


# The README's command (its words before the first option or argument) -> the
# arguments to run it with, and, for a row that names an object, the id prefix it has.
Args = Callable[[Seeded], list[str]]
COMMANDS: dict[str, tuple[Args, str | None]] = {
    "init": (lambda s: ["init"], None),
    "status": (lambda s: ["status"], None),
    "migrate": (lambda s: ["migrate"], None),
    "account create": (lambda s: ["account", "create", "--name", "Beta"], None),
    "account list": (lambda s: ["account", "list"], None),
    "account limits": (lambda s: ["account", "limits", s.account, "--max-keys", "50"], "acc_"),
    "account usage": (lambda s: ["account", "usage", s.account], None),
    "environment create": (
        lambda s: ["environment", "create", "--account", s.account, "--name", "prod"],
        "env_",
    ),
    "environment list": (lambda s: ["environment", "list", "--account", s.account], None),
    "key create": (
        lambda s: ["key", "create", "--account", s.account, "--name", "n", "--type", "secret"],
        "key_",
    ),
    "key list": (lambda s: ["key", "list", "--account", s.account], None),
    "key rename": (lambda s: ["key", "rename", s.spare_key, "renamed"], "key_"),
    "key roll": (lambda s: ["key", "roll", s.roll_key], "key_"),
    "key revoke": (lambda s: ["key", "revoke", s.spare_key], "key_"),
    "events": (lambda s: ["events", "--account", s.account, "--limit", "2"], None),
    "admin-token": (lambda s: ["admin-token"], None),
    "key reencrypt": (lambda s: ["key", "reencrypt"], None),
    "scopes set": (lambda s: ["scopes", "set", str(s.data.parent / "catalog.json")], None),
    "scopes list": (lambda s: ["scopes", "list"], None),
}


def command_words(command: str) -> str:
    words = []
    for word in command.split()[1:]:
        # An argument is written in capitals: ID, NAME, FILE.json.
        if word.startswith(("-", "[")) or word[:1].isupper():
            break
        words.append(word)
    return " ".join(words)


def test_every_row_is_what_json_prints(tmp_path: Path) -> None:
    seeded = seed(tmp_path)
    rows = [(command_words(c), prints) for c, prints in table_rows() if not prints.startswith("—")]
    unknown = [words for words, _ in rows if words not in COMMANDS]
    assert not unknown, f"README rows this test cannot run yet: {unknown}"
    assert len(rows) >= 16
    for words, prints in rows:
        make_args, prefix = COMMANDS[words]
        result: CliResult = keyhouse(seeded.data, *make_args(seeded), "--json")
        expect_ok(result)
        out = result.json()  # one line, one JSON value
        assert result.out.count("\n") == 1, words  # and nothing else
        assert result.out.endswith("\n"), words
        shape = re.match(r"`(\{.*\})`", prints)
        if shape is not None:
            parse_shape(shape.group(1)).check(out, words)
        else:
            # A row naming an object: the API's object (its id tells which).
            assert prefix is not None, f"{words}: {prints!r} names no shape nor object"
            assert isinstance(out, dict), words
            assert str(out.get("id", "")).startswith(prefix), (words, scrub(json.dumps(out)))


def test_the_shape_reader() -> None:
    shape = parse_shape('{"a", "b": {"c", "d"?}, "e": [...], "f"?}')
    assert shape.required == {"a", "b", "e"}
    assert shape.optional == {"f"}
    shape.check({"a": 1, "b": {"c": 2}, "e": []}, "x")
    with pytest.raises(AssertionError, match="does not list"):
        shape.check({"a": 1, "b": {"c": 2}, "e": [], "g": 0}, "x")
    with pytest.raises(AssertionError, match="missing"):
        shape.check({"a": 1, "e": []}, "x")
