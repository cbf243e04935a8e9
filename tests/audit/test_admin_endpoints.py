"""``GET /admin/events``: every account's audit log, paged as ``GET /events``, both engines."""

from __future__ import annotations

from typing import Any

import httpx

from keyhouse.runtime import Runtime
from tests.audit.test_endpoints import EVENT_MEMBERS, check_shape
from tests.factories import bearer, create_account, create_environment, create_key, expect_error


def admin(runtime: Runtime) -> dict[str, str]:
    return bearer(runtime.admin_tokens.first)


async def admin_page(client: httpx.AsyncClient, runtime: Runtime, query: str = "") -> Any:
    response = await client.get(f"/admin/events{query}", headers=admin(runtime))
    assert response.status_code == 200, response.status_code
    body = response.json()
    assert sorted(body) == ["events", "hasMore"]
    for event in body["events"]:
        check_shape({k: v for k, v in event.items() if k != "accountId"})
        assert set(event) - EVENT_MEMBERS == {"accountId"}, event
    return body


async def test_every_account_newest_first(client: httpx.AsyncClient, runtime: Runtime) -> None:
    acme = await create_account(runtime, "Acme")
    globex = await create_account(runtime, "Globex")
    env = await create_environment(runtime, globex.account_id, "staging")
    key = await create_key(runtime, acme.account_id, name="k")
    body = await admin_page(client, runtime, "?limit=100")
    seen = [(e["type"], e["accountId"]) for e in body["events"]]
    assert seen == [
        ("key.created", acme.account_id),
        ("environment.created", globex.account_id),
        ("key.created", globex.account_id),
        ("account.created", globex.account_id),
        ("key.created", acme.account_id),
        ("account.created", acme.account_id),
    ]
    assert body["hasMore"] is False
    assert body["events"][0]["keyId"] == key.row.id
    assert body["events"][1]["environmentId"] == env.id
    # The same events each account sees in its own log (which names no account).
    for acc in (acme, globex):
        own = (await client.get("/events?limit=100", headers=acc.auth)).json()["events"]
        mine = [
            {k: v for k, v in e.items() if k != "accountId"}
            for e in body["events"]
            if e["accountId"] == acc.account_id
        ]
        assert mine == own


async def test_paged_with_starting_after(client: httpx.AsyncClient, runtime: Runtime) -> None:
    for name in ("A", "B", "C"):
        await create_account(runtime, name)  # two events each
    everything = (await admin_page(client, runtime, "?limit=100"))["events"]
    assert len(everything) == 6
    pages: list[dict[str, Any]] = []
    query = "?limit=4"
    while True:
        body = await admin_page(client, runtime, query)
        pages.extend(body["events"])
        if not body["hasMore"]:
            break
        query = f"?limit=4&startingAfter={body['events'][-1]['id']}"
    assert pages == everything
    default = await admin_page(client, runtime)
    assert default["events"] == everything  # 20 by default


async def test_one_account_s_events(client: httpx.AsyncClient, runtime: Runtime) -> None:
    acme = await create_account(runtime, "Acme")
    await create_account(runtime, "Globex")
    body = await admin_page(client, runtime, f"?accountId={acme.account_id}")
    assert {e["accountId"] for e in body["events"]} == {acme.account_id}
    assert len(body["events"]) == 2
    # An unknown account has no events.
    unknown = await admin_page(client, runtime, "?accountId=acc_01M8N3NYFGR8Q51QMH52B1FG59")
    assert unknown == {"events": [], "hasMore": False}


async def test_bad_parameters_are_400(client: httpx.AsyncClient, runtime: Runtime) -> None:
    for query in ["?limit=0", "?limit=101", "?startingAfter=nope", "?accountId=acc_x"]:
        response = await client.get(f"/admin/events{query}", headers=admin(runtime))
        expect_error(response, 400, "validation_error")


async def test_actions_of_the_operator_are_recorded_as_the_admin(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acc = await create_account(runtime)
    response = await client.post(
        f"/admin/keys/{acc.key_id}/roll", headers=admin(runtime), json={"expiresInSeconds": 0}
    )
    assert response.status_code == 201
    body = await admin_page(client, runtime)
    rolled = [e for e in body["events"] if e["type"] == "key.rolled"]
    assert [(e["keyId"], e["actor"]) for e in rolled] == [(acc.key_id, {"type": "admin"})]
    assert rolled[0]["ip"] == "127.0.0.1"
