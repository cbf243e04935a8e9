"""Shared setup for the limits tests."""

from __future__ import annotations

from typing import Any

from keyhouse.accounts.schemas import LimitsUpdate
from keyhouse.accounts.service import AccountService
from keyhouse.audit.service import CLI
from keyhouse.runtime import Runtime
from tests.factories import AccountWithKey, create_account


async def account_on_plan(runtime: Runtime, **limits: Any) -> AccountWithKey:
    """An account (and its first secret key) with the given plan limits."""
    acc = await create_account(runtime)
    async with runtime.db.session(write=True) as session:
        await AccountService(session, runtime).update(
            acc.account_id, limits=LimitsUpdate(**limits), actor=CLI
        )
    runtime.cache.clear()
    return acc
