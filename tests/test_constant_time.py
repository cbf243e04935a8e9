"""Secrets are never compared with ``==``: lookups go by hash, tokens by compare_digest.

``==`` on strings stops at the first differing character, so its time tells
an attacker how much of a guess was right. keyhouse finds keys by the
SHA-256 of the whole key (a database index) and compares admin-token
digests with ``hmac.compare_digest``; this check keeps it that way.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import keyhouse

SRC = Path(keyhouse.__file__).parent
# Names that hold a secret or a digest of one.
SECRET = re.compile(r"(^|_)(token|tokens|secret|password|plaintext|digest|key_hash|admin)($|_)")


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _is_column(node: ast.AST) -> bool:
    """``ApiKey.key_hash`` (a model's column) or ``table.c.key_hash`` (a table's):
    the comparison is SQL, not Python."""
    if not isinstance(node, ast.Attribute):
        return False
    value = node.value
    if isinstance(value, ast.Name):
        return value.id[:1].isupper()
    return isinstance(value, ast.Attribute) and value.attr == "c"


def secret_comparisons() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            if not any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
                continue
            if any(_is_column(o) for o in [node.left, *node.comparators]):
                continue  # SQL: the database matches the hash through its index
            for operand in [node.left, *node.comparators]:
                name = _name(operand)
                if name and SECRET.search(name.lower()):
                    found.append(f"{path.relative_to(SRC)}:{node.lineno} compares {name}")
    return found


def test_no_secret_is_compared_with_equality() -> None:
    assert secret_comparisons() == []


def test_the_check_finds_what_it_looks_for() -> None:
    # The check itself must be able to fail.
    tree = ast.parse(
        "if token == given:\n    pass\nq = ApiKey.key_hash == key_hash\n"
        "r = _table.c.key_hash == b\ns = row.key_hash == key_hash\n"
    )
    compares = [n for n in ast.walk(tree) if isinstance(n, ast.Compare)]
    assert _name(compares[0].left) == "token"
    assert not _is_column(compares[0].left)
    assert _is_column(compares[1].left)
    assert _is_column(compares[2].left)
    assert not _is_column(compares[3].left)
    assert not _is_column(compares[3].comparators[0])
    assert SECRET.search("token")
    assert SECRET.search("key_hash")
    assert not SECRET.search("key_type")


def test_admin_tokens_use_compare_digest() -> None:
    source = (SRC / "admin_tokens.py").read_text(encoding="utf-8")
    assert "hmac.compare_digest" in source
