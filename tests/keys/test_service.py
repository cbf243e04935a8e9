"""``KeyService`` itself: rules its callers (endpoints, CLI) rely on it to enforce."""

from __future__ import annotations

import pytest

from keyhouse import errors
from keyhouse.audit.service import CLI
from keyhouse.environments.service import EnvironmentService
from keyhouse.keys.service import KeyService
from keyhouse.runtime import Runtime

UNKNOWN_ACCOUNT = "acc_" + "0" * 26


class TestUnknownAccount:
    """The service checks that the account exists; callers do not have to."""

    async def test_create(self, runtime: Runtime) -> None:
        async with runtime.db.session(write=True) as session:
            with pytest.raises(errors.AccountNotFound) as caught:
                await KeyService(session, runtime).create(
                    UNKNOWN_ACCOUNT, name="k", key_type="secret", actor=CLI
                )
        assert caught.value.status_code == 404
        assert caught.value.code == "not_found"

    async def test_import_before_the_key_is_looked_at(self, runtime: Runtime) -> None:
        async with runtime.db.session(write=True) as session:
            with pytest.raises(errors.AccountNotFound):
                # Too short to import: the unknown account is reported first.
                await KeyService(session, runtime).import_key(
                    UNKNOWN_ACCOUNT, "short", name="k", key_type="secret", actor=CLI
                )

    async def test_environment_create(self, runtime: Runtime) -> None:
        async with runtime.db.session(write=True) as session:
            with pytest.raises(errors.AccountNotFound):
                await EnvironmentService(session).create(UNKNOWN_ACCOUNT, "prod", actor=CLI)
