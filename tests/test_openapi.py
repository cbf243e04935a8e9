"""The OpenAPI document as generated clients read it (issue 13, item 4).

The document's other promises (the seed's schemas, errors, no 422) are in
``tests/test_app.py``; a client generated from it is exercised in
``tests/clients/test_generated_client.py``.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from keyhouse.app import create_app
from keyhouse.config import Settings

pytestmark = pytest.mark.sqlite_only


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def document(settings: Settings) -> dict[str, Any]:
    found: dict[str, Any] = create_app(settings).openapi()
    return found


def test_operation_ids_are_readable_and_unique(settings: Settings) -> None:
    ids = [operation["operationId"] for _, _, operation in operations(document(settings))]
    assert len(ids) == len(set(ids)), sorted(ids)
    for operation_id in ids:
        assert re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)*", operation_id), operation_id


def test_the_key_operations_have_the_names_clients_expect(settings: Settings) -> None:
    by_route = {
        (method, path): op["operationId"] for method, path, op in operations(document(settings))
    }
    assert by_route[("GET", "/keys")] == "listKeys"
    assert by_route[("POST", "/keys")] == "createKey"
    assert by_route[("GET", "/keys/{key_id}")] == "getKey"
    assert by_route[("PATCH", "/keys/{key_id}")] == "renameKey"
    assert by_route[("POST", "/keys/{key_id}/revoke")] == "revokeKey"
    assert by_route[("POST", "/keys/{key_id}/roll")] == "rollKey"
    assert by_route[("POST", "/verify")] == "verifyKey"
    assert by_route[("GET", "/account")] == "getCurrentAccount"
    assert by_route[("GET", "/admin/accounts/{account_id}")] == "getAccount"


def test_an_optional_body_is_the_model_not_required(settings: Settings) -> None:
    body = document(settings)["paths"]["/keys/{key_id}/roll"]["post"]["requestBody"]
    assert body["required"] is False
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RollKeyRequest"
    }
