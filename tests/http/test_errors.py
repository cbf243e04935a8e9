"""``http/errors.py``: what no service mapped still answers with the envelope."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.http.pipeline import SessionDep
from keyhouse.ids import new_id
from keyhouse.models import Environment
from keyhouse.runtime import Runtime
from tests.factories import create_account, expect_error


async def test_a_constraint_no_service_mapped_is_409_conflict_not_500(
    make_settings: Callable[..., Settings],
) -> None:
    """A real unique violation (two environments of one name, inserted as no service
    would), raised at the request's flush: 409 ``conflict`` with a fix, nothing stored."""
    app = create_app(make_settings())

    async def duplicate(account_id: str, session: SessionDep) -> None:
        for _ in range(2):
            env_id, created_at = new_id("env")
            session.add(
                Environment(id=env_id, account_id=account_id, name="twice", created_at=created_at)
            )
        await session.flush()

    app.add_api_route("/duplicate/{account_id}", duplicate, methods=["POST"])
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        acc = await create_account(runtime)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.post(f"/duplicate/{acc.account_id}")
            body = expect_error(response, 409, "conflict")
            assert body["error"]["fix"]
            listed = await client.get("/environments", headers=acc.auth)
    assert listed.json()["environments"] == []
