"""Calls every keyhouse operation through a client openapi-python-client generated.

Run by ``tests/clients/test_generated_client.py`` with the generator's own
Python (``.venv/clientgen``), the generated package on ``sys.path``:

    python use_generated_client.py BASE_URL ADMIN_TOKEN

Prints one JSON object: ``{"calls": {operationId: [status, type of the parsed answer]}}``.
Each call is what a user of the client writes, with the client's types.
No key string is printed.
"""

from __future__ import annotations

import json
import secrets
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from keyhouse_openapi_client import AuthenticatedClient, Client
from keyhouse_openapi_client.api.account import get_current_account
from keyhouse_openapi_client.api.environments import create_environment, list_environments
from keyhouse_openapi_client.api.events import list_events
from keyhouse_openapi_client.api.forward_auth import forward_auth
from keyhouse_openapi_client.api.keys import (
    create_key,
    get_key,
    list_keys,
    rename_key,
    revoke_key,
    roll_key,
)
from keyhouse_openapi_client.api.meta import healthz, readyz
from keyhouse_openapi_client.api.operator import (
    admin_create_key,
    admin_get_key,
    admin_list_events,
    admin_list_keys,
    admin_rename_key,
    admin_revoke_key,
    admin_roll_key,
    create_account,
    get_account,
    get_scope_catalog,
    import_key,
    list_accounts,
    put_scope_catalog,
    update_account,
)
from keyhouse_openapi_client.api.verify import verify_key
from keyhouse_openapi_client.models import (
    CreateAccountRequest,
    CreateEnvironmentRequest,
    CreateKeyRequest,
    CreateKeyRequestKeytype,
    ImportKeyRequest,
    ImportKeyRequestKeytype,
    LimitsUpdate,
    ListKeysKeyTypeType0,
    PutCatalogRequest,
    RollKeyRequest,
    ScopeEntry,
    UpdateAccountRequest,
    UpdateKeyRequest,
    VerifyRequest,
)
from keyhouse_openapi_client.types import Response

calls: dict[str, list[Any]] = {}


def call(operation: str, response: Response[Any], label: str = "") -> Any:
    calls[operation + label] = [int(response.status_code), type(response.parsed).__name__]
    return response.parsed


def main(base_url: str, admin_token: str) -> None:
    admin = AuthenticatedClient(base_url=base_url, token=admin_token)
    anonymous = Client(base_url=base_url)

    call("healthz", healthz.sync_detailed(client=anonymous))
    call("readyz", readyz.sync_detailed(client=anonymous))

    created = call(
        "createAccount",
        create_account.sync_detailed(client=admin, body=CreateAccountRequest(name="Acme")),
    )
    account_id = created.account.id
    secret = created.key.key
    account = AuthenticatedClient(base_url=base_url, token=secret)
    call("listAccounts", list_accounts.sync_detailed(client=admin))
    call(
        "putScopeCatalog",
        put_scope_catalog.sync_detailed(
            client=admin,
            body=PutCatalogRequest(scopes=[ScopeEntry(name="messages:send", description="Send")]),
        ),
    )
    call("getScopeCatalog", get_scope_catalog.sync_detailed(client=admin))
    call("getAccount", get_account.sync_detailed(account_id, client=admin))
    call(
        "updateAccount",
        update_account.sync_detailed(
            account_id,
            client=admin,
            body=UpdateAccountRequest(limits=LimitsUpdate(max_keys=50)),
        ),
    )
    call(
        "importKey",
        import_key.sync_detailed(
            account_id,
            client=admin,
            body=ImportKeyRequest(
                key="legacy_" + secrets.token_urlsafe(24),
                name="imported",
                key_type=ImportKeyRequestKeytype.SECRET,
            ),
        ),
    )

    # The operator's key API, on any account.
    made = call(
        "adminCreateKey",
        admin_create_key.sync_detailed(
            account_id,
            client=admin,
            body=CreateKeyRequest(name="ops", key_type=CreateKeyRequestKeytype.PUBLIC),
        ),
    )
    call("adminListKeys", admin_list_keys.sync_detailed(account_id, client=admin))
    call("adminGetKey", admin_get_key.sync_detailed(made.id, client=admin))
    call(
        "adminRenameKey",
        admin_rename_key.sync_detailed(made.id, client=admin, body=UpdateKeyRequest(name="o2")),
    )
    replaced = call("adminRollKey", admin_roll_key.sync_detailed(made.id, client=admin))
    call("adminRevokeKey", admin_revoke_key.sync_detailed(replaced.id, client=admin))
    call("adminListEvents", admin_list_events.sync_detailed(client=admin))

    call("getCurrentAccount", get_current_account.sync_detailed(client=account))
    environment = call(
        "createEnvironment",
        create_environment.sync_detailed(
            client=account, body=CreateEnvironmentRequest(name="staging")
        ),
    )
    call("listEnvironments", list_environments.sync_detailed(client=account))
    key = call(
        "createKey",
        create_key.sync_detailed(
            client=account,
            body=CreateKeyRequest(
                name="backend",
                key_type=CreateKeyRequestKeytype.SECRET,
                environment_id=environment.id,
                expires_at=datetime.now(UTC) + timedelta(days=30),
            ),
        ),
    )
    call(
        "listKeys",
        list_keys.sync_detailed(
            client=account, key_type=ListKeysKeyTypeType0.SECRET, revoked=False
        ),
    )
    call("getKey", get_key.sync_detailed(key.id, client=account))
    call(
        "renameKey",
        rename_key.sync_detailed(key.id, client=account, body=UpdateKeyRequest(name="renamed")),
    )
    # A roll without a body (the default grace), then one with a body.
    rolled = call("rollKey", roll_key.sync_detailed(key.id, client=account))
    call(
        "rollKey",
        roll_key.sync_detailed(
            rolled.id, client=account, body=RollKeyRequest(expires_in_seconds=0)
        ),
        label=" with a body",
    )
    call("revokeKey", revoke_key.sync_detailed(key.id, client=account))
    call("verifyKey", verify_key.sync_detailed(client=admin, body=VerifyRequest(key=secret)))
    # A proxy's question: its token (an admin token will do) and the client's key.
    proxy = AuthenticatedClient(
        base_url=base_url, token=secret, headers={"X-Keyhouse-Forward-Token": admin_token}
    )
    call("forwardAuth", forward_auth.sync_detailed(client=proxy))
    call("listEvents", list_events.sync_detailed(client=account, limit=5))
    json.dump({"calls": calls}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
