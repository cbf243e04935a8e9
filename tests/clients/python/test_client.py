"""The sync client (``Keyhouse``, ``AccountClient``) against a live ``keyhouse serve``."""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime, timedelta

import pytest
from keyhouse_client import (
    AccountClient,
    ApiKey,
    Keyhouse,
    KeyhouseError,
    KeyhouseUnavailable,
)

from tests.clients.python.conftest import Live, unique
from tests.clients.python.standin import Answer, stand_in
from tests.limits.conftest import free_port


def envelope(code: str, message: str = "m", **extra: str) -> bytes:
    return json.dumps(
        {"trackingId": "req_standin", "error": {"code": code, "message": message, **extra}}
    ).encode()


class TestOperatorAccounts:
    def test_create_list_get_update(self, admin: Keyhouse) -> None:
        name = unique("Acme")
        created = admin.accounts.create(name, limits={"maxKeys": 7, "monthlyRequests": None})
        account = created.account
        assert account.name == name
        assert account.limits.max_keys == 7
        assert account.limits.monthly_requests is None
        assert created.key.key_type == "secret"
        assert created.key.account_id == account.id
        assert created.key.key.startswith("sk_")

        assert account.id in {a.id for a in admin.accounts.list()}
        assert admin.accounts.get(account.id) == account

        updated = admin.accounts.update(account.id, name=name + " Ltd", limits={"burst": 5})
        assert updated.name == name + " Ltd"
        assert updated.limits.burst == 5
        assert updated.limits.max_keys == 7  # only what was sent changes
        cleared = admin.accounts.update(account.id, limits={"maxKeys": None})
        assert cleared.limits.max_keys is None
        assert cleared.name == name + " Ltd"

    def test_an_unknown_account_raises_the_envelope(self, admin: Keyhouse) -> None:
        with pytest.raises(KeyhouseError) as caught:
            admin.accounts.get("acc_01M8NDC4EFDFQ94W13VDP51JAN")
        error = caught.value
        assert (error.status, error.code) == (404, "not_found")
        assert error.message
        assert error.fix
        assert error.tracking_id is not None
        assert error.tracking_id.startswith("req_")
        assert error.provider is None
        assert error.provider_code is None
        assert not isinstance(error, KeyhouseUnavailable)
        assert "404 not_found" in str(error)

    def test_the_same_idempotency_key_replays_the_first_answer(self, admin: Keyhouse) -> None:
        idem = secrets.token_hex(16)
        name = unique("Once")
        first = admin.accounts.create(name, idempotency_key=idem)
        again = admin.accounts.create(name, idempotency_key=idem)
        assert again.account.id == first.account.id
        assert again.key.id == first.key.id
        assert [a.name for a in admin.accounts.list()].count(name) == 1

    def test_a_bad_body_is_400_with_a_fix(self, admin: Keyhouse) -> None:
        with pytest.raises(KeyhouseError) as caught:
            admin.accounts.create("", limits={"maxKeys": -1})
        assert (caught.value.status, caught.value.code) == (400, "validation_error")
        assert caught.value.fix


class TestOperatorKeys:
    def test_every_member_of_the_key_object(self, admin: Keyhouse, live: Live) -> None:
        account = admin.accounts.create(unique("Members")).account
        with AccountClient(live.url, admin.keys.list(account.id)[0].key) as own:
            environment = own.environments.create("staging")
        expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
        key = admin.keys.create(
            account.id,
            "scoped",
            key_type="secret",
            environment_id=environment.id,
            expires_at=expires,
        )
        assert isinstance(key, ApiKey)
        assert key.id.startswith("key_")
        assert key.key.startswith("sk_")
        assert len(key.key) == 3 + 49
        assert (key.key_type, key.account_id, key.name) == ("secret", account.id, "scoped")
        assert key.environment_id == environment.id
        assert key.revoked is False
        assert key.expires_at == expires
        assert key.created_at.tzinfo is not None
        assert key.last_used_at is None
        assert key.recoverable is True
        assert key.key not in repr(key)

        assert admin.verify(key.key).valid
        # lastUsedAt is written behind (KEYHOUSE_LAST_USED_FLUSH_SECONDS, 2 s).
        deadline = time.monotonic() + 10
        while (seen := admin.keys.get(key.id)).last_used_at is None:
            assert time.monotonic() < deadline, "lastUsedAt never written"
            time.sleep(0.1)
        assert seen.last_used_at is not None
        assert seen.last_used_at >= key.created_at

    def test_list_get_update_revoke_roll_import(self, admin: Keyhouse) -> None:
        account = admin.accounts.create(unique("Keys")).account
        public = admin.keys.create(account.id, "widget", key_type="public")
        assert public.key.startswith("pk_")
        assert {k.id for k in admin.keys.list(account.id)} >= {public.id}
        assert [k.id for k in admin.keys.list(account.id, key_type="public")] == [public.id]

        assert admin.keys.get(public.id).name == "widget"
        assert admin.keys.update(public.id, name="web widget").name == "web widget"

        rolled = admin.keys.roll(public.id, expires_in_seconds=60)
        assert rolled.id != public.id
        assert rolled.name == "web widget"
        old = admin.keys.get(public.id)
        assert old.expires_at is not None
        assert old.expires_at <= datetime.now(UTC) + timedelta(seconds=61)

        revoked = admin.keys.revoke(rolled.id)
        assert revoked.revoked is True
        assert [k.id for k in admin.keys.list(account.id, revoked=True)] == [rolled.id]

        imported_key = "legacy_" + secrets.token_urlsafe(24)
        imported = admin.keys.import_(
            account.id, imported_key, name="from the old system", key_type="secret"
        )
        assert imported.account_id == account.id
        assert admin.verify(imported_key).key_id == imported.id

    def test_the_last_secret_key_needs_force(self, admin: Keyhouse) -> None:
        created = admin.accounts.create(unique("Last"))
        with pytest.raises(KeyhouseError) as caught:
            admin.keys.revoke(created.key.id)
        assert (caught.value.status, caught.value.code) == (409, "last_secret_key")
        assert admin.keys.revoke(created.key.id, force=True).revoked

    def test_an_unknown_key_is_404(self, admin: Keyhouse) -> None:
        with pytest.raises(KeyhouseError) as caught:
            admin.keys.get("key_01M8NDC4EFDFQ94W13VDP51JAN")
        assert (caught.value.status, caught.value.code) == (404, "not_found")

    def test_an_id_cannot_reach_another_route(self, admin: Keyhouse) -> None:
        # "../accounts" is one path segment, percent-encoded: a 404, not /admin/accounts.
        with pytest.raises(KeyhouseError) as caught:
            admin.keys.get("../accounts")
        assert caught.value.status == 404


class TestVerify:
    def test_each_verdict(self, admin: Keyhouse, live: Live) -> None:
        created = admin.accounts.create(unique("Verdicts"))
        key = created.key
        verifier = Keyhouse(live.url, live.verify_token)
        with verifier:
            valid = verifier.verify(key.key)
            assert (valid.valid, valid.code) == (True, "valid")
            assert (valid.key_id, valid.account_id, valid.key_type, valid.name) == (
                key.id,
                created.account.id,
                "secret",
                "Default secret key",
            )
            assert valid.environment_id is None
            assert valid.ratelimit is None
            assert valid.usage is not None
            assert valid.usage.requests >= 1
            assert valid.usage.limit is None

            typo = key.key[:-1] + ("A" if key.key[-1] != "A" else "B")
            assert verifier.verify(typo).code == "malformed"
            assert verifier.verify("unknown_" + secrets.token_urlsafe(24)).code == "not_found"

            spare = admin.keys.create(created.account.id, "spare")
            admin.keys.roll(spare.id, expires_in_seconds=0)
            expired = verifier.verify(spare.key)
            assert (expired.valid, expired.code, expired.key_id) == (False, "expired", spare.id)

            admin.keys.revoke(key.id, force=True)
            assert verifier.verify(key.key).code == "revoked"

    def test_limits_in_the_verdict(self, admin: Keyhouse) -> None:
        rated = admin.accounts.create(unique("Rated"), limits={"ratePerSecond": 1, "burst": 1})
        first = admin.verify(rated.key.key)
        assert first.valid
        assert first.ratelimit is not None
        assert first.ratelimit.limit == 1
        second = admin.verify(rated.key.key)
        assert (second.valid, second.code) == (False, "rate_limited")

        quota = admin.accounts.create(unique("Quota"), limits={"monthlyRequests": 1})
        ok = admin.verify(quota.key.key)
        assert ok.valid
        assert ok.usage is not None
        assert ok.usage.limit == 1
        assert admin.verify(quota.key.key).code == "usage_exceeded"

    def test_a_verify_token_verifies_and_nothing_else(self, live: Live) -> None:
        with Keyhouse(live.url, live.verify_token) as verifier, pytest.raises(KeyhouseError) as c:
            verifier.accounts.list()
        caught = c
        assert (caught.value.status, caught.value.code) == (403, "insufficient_permissions")

    def test_options_are_body_members(self, admin: Keyhouse) -> None:
        # keyhouse takes no option today: an unknown member is refused, not ignored.
        with pytest.raises(KeyhouseError) as caught:
            admin.verify("unknown_" + secrets.token_urlsafe(24), permissions=["read"])
        assert (caught.value.status, caught.value.code) == (400, "validation_error")

    def test_a_wrong_token_is_401_and_names_no_token(self, live: Live) -> None:
        token = "kh_admin_" + secrets.token_urlsafe(24)
        with Keyhouse(live.url, token) as wrong, pytest.raises(KeyhouseError) as caught:
            wrong.verify("unknown_" + secrets.token_urlsafe(24))
        assert (caught.value.status, caught.value.code) == (401, "invalid_api_key")
        assert token not in str(caught.value)
        assert token not in repr(caught.value)


class TestAccountClient:
    def test_keys_environments_account(self, admin: Keyhouse, live: Live) -> None:
        created = admin.accounts.create(unique("Own"))
        with AccountClient(live.url, created.key.key) as client:
            assert [k.id for k in client.keys.list()] == [created.key.id]
            staging = client.environments.create("staging")
            assert [e.id for e in client.environments.list()] == [staging.id]
            scoped = client.keys.create("staging backend", environment_id=staging.id)
            assert scoped.environment_id == staging.id
            public = client.keys.create("widget", key_type="public")
            assert [k.id for k in client.keys.list(environment_id=staging.id)] == [scoped.id]
            assert client.keys.get(public.id).key_type == "public"
            assert client.keys.rename(public.id, "web widget").name == "web widget"
            rolled = client.keys.roll(scoped.id, expires_in_seconds=0)
            assert rolled.environment_id == staging.id
            assert client.keys.revoke(public.id).revoked

            me = client.account.get()
            assert me.id == created.account.id
            assert me.usage is not None
            assert me.usage.requests >= 8
            assert me.usage.resets_at > me.usage.period_start

    def test_events_iterate_every_page(self, admin: Keyhouse, live: Live) -> None:
        created = admin.accounts.create(unique("Events"))
        with AccountClient(live.url, created.key.key) as client:
            for number in range(5):
                client.keys.create(f"key {number}", key_type="public")
            first = client.events.page(limit=2)
            assert len(first.events) == 2
            assert first.has_more
            every = list(client.events.list(page_size=2))
            one_page = client.events.page(limit=100)
        assert not one_page.has_more
        assert [e.id for e in every] == [e.id for e in one_page.events]
        # account.created, key.created of its first key, and the 5 keys made here.
        assert len(every) == 7
        assert [e.type for e in every].count("key.created") == 6
        assert every[-1].type == "account.created"
        assert every[0].actor.type == "key"
        assert every[0].account_id is None

        operator_view = list(admin.events.list(account_id=created.account.id, page_size=4))
        assert [e.id for e in operator_view] == [e.id for e in every]
        assert {e.account_id for e in operator_view} == {created.account.id}

    def test_a_public_key_cannot_manage(self, admin: Keyhouse, live: Live) -> None:
        account = admin.accounts.create(unique("Public")).account
        public = admin.keys.create(account.id, "widget", key_type="public")
        with AccountClient(live.url, public.key) as client, pytest.raises(KeyhouseError) as c:
            client.keys.list()
        assert (c.value.status, c.value.code) == (403, "insufficient_permissions")

    def test_an_unknown_key_is_401(self, live: Live) -> None:
        with (
            AccountClient(live.url, "unknown_" + secrets.token_urlsafe(24)) as client,
            pytest.raises(KeyhouseError) as caught,
        ):
            client.account.get()
        assert (caught.value.status, caught.value.code) == (401, "invalid_api_key")


class TestRetries:
    def test_429_waits_retry_after_then_succeeds(self, admin: Keyhouse, live: Live) -> None:
        created = admin.accounts.create(unique("Slow"), limits={"ratePerSecond": 1, "burst": 1})
        with AccountClient(live.url, created.key.key, max_retries=2) as client:
            client.keys.list()
            started = time.monotonic()
            assert [k.id for k in client.keys.list()] == [created.key.id]
            # keyhouse's Retry-After is 1 s at 1 request a second.
            assert time.monotonic() - started >= 0.9

    def test_429_without_retries_raises_with_retry_after(self, admin: Keyhouse, live: Live) -> None:
        created = admin.accounts.create(unique("NoRetry"), limits={"ratePerSecond": 1, "burst": 1})
        with AccountClient(live.url, created.key.key, max_retries=0) as client:
            client.keys.list()
            with pytest.raises(KeyhouseError) as caught:
                client.keys.list()
        assert (caught.value.status, caught.value.code) == (429, "rate_limited")
        assert caught.value.retry_after == 1.0

    def test_a_wait_over_max_retry_wait_is_not_waited(self, admin: Keyhouse, live: Live) -> None:
        created = admin.accounts.create(unique("Capped"), limits={"ratePerSecond": 1, "burst": 1})
        with AccountClient(live.url, created.key.key, max_retry_wait=0.5) as client:
            client.keys.list()
            started = time.monotonic()
            with pytest.raises(KeyhouseError) as caught:
                client.keys.list()
        assert caught.value.code == "rate_limited"
        assert time.monotonic() - started < 0.5

    def test_503_is_retried_with_one_idempotency_key(self) -> None:
        unavailable = Answer(
            503, envelope("service_unavailable", fix="wait"), headers=(("Retry-After", "0"),)
        )
        with (
            stand_in(unavailable) as server,
            Keyhouse(server.url, "t" * 24) as client,
            pytest.raises(KeyhouseUnavailable) as caught,
        ):
            client.accounts.create("Acme")
        assert (caught.value.status, caught.value.code) == (503, "service_unavailable")
        assert caught.value.tracking_id == "req_standin"
        assert len(server.requests) == 3  # the first try and max_retries=2
        keys = {headers.get("Idempotency-Key") for _, _, headers in server.requests}
        assert len(keys) == 1
        assert None not in keys

    def test_503_then_200(self) -> None:
        account = {
            "id": "acc_1",
            "name": "Acme",
            "limits": {
                "maxKeys": None,
                "monthlyRequests": None,
                "ratePerSecond": None,
                "burst": None,
            },
            "createdAt": "2026-11-26T20:23:02.634Z",
        }
        answers = (
            Answer(503, envelope("service_unavailable"), headers=(("Retry-After", "0"),)),
            Answer(200, json.dumps(account).encode()),
        )
        with stand_in(*answers) as server, Keyhouse(server.url, "t" * 24) as client:
            assert client.accounts.get("acc_1").name == "Acme"
        assert len(server.requests) == 2

    @pytest.mark.parametrize("status", [400, 401, 402, 404, 409, 500, 502])
    def test_other_statuses_are_never_retried(self, status: int) -> None:
        body = envelope("provider_error", provider="ses", providerCode="throttled")
        with (
            stand_in(Answer(status, body)) as server,
            Keyhouse(server.url, "t" * 24) as client,
            pytest.raises(KeyhouseError) as caught,
        ):
            client.accounts.list()
        assert len(server.requests) == 1
        assert caught.value.status == status
        assert (caught.value.provider, caught.value.provider_code) == ("ses", "throttled")

    def test_a_body_that_is_not_the_envelope(self) -> None:
        page = Answer(
            502,
            b"<html>Bad Gateway</html>",
            headers=(("Content-Type", "text/html"), ("X-Tracking-Id", "req_proxy")),
        )
        with (
            stand_in(page) as server,
            Keyhouse(server.url, "t" * 24) as client,
            pytest.raises(KeyhouseError) as caught,
        ):
            client.accounts.list()
        assert (caught.value.status, caught.value.code) == (502, "unexpected_response")
        assert caught.value.tracking_id == "req_proxy"
        assert caught.value.fix

    def test_a_2xx_the_client_cannot_read(self) -> None:
        with (
            stand_in(Answer(200, b'{"accounts": [{"id": 1}]}')) as server,
            Keyhouse(server.url, "t" * 24) as client,
            pytest.raises(KeyhouseError) as c,
        ):
            client.accounts.list()
        assert (c.value.status, c.value.code) == (200, "unexpected_response")

    def test_unreachable(self) -> None:
        url = f"http://127.0.0.1:{free_port()}"
        with Keyhouse(url, "t" * 24, max_retries=1, max_retry_wait=0.1) as client:
            started = time.monotonic()
            with pytest.raises(KeyhouseUnavailable) as caught:
                client.verify("unknown_" + secrets.token_urlsafe(24))
        assert (caught.value.status, caught.value.code) == (None, "connect_error")
        assert caught.value.fix
        assert time.monotonic() - started >= 0.1  # one retry after the capped wait

    def test_timeout(self) -> None:
        with (
            stand_in(Answer(200, b"{}", hold=True)) as server,
            Keyhouse(server.url, "t" * 24, timeout=0.3) as client,
            pytest.raises(KeyhouseUnavailable) as caught,
        ):
            client.accounts.create("Acme")
        assert (caught.value.status, caught.value.code) == (None, "timeout")
        # A read timeout may hide a write: not retried.
        assert len(server.requests) == 1


def test_bad_arguments_fail_before_any_request() -> None:
    with pytest.raises(ValueError, match="base_url"):
        Keyhouse("127.0.0.1:8000", "t" * 24)
    with pytest.raises(ValueError, match="token"):
        Keyhouse("http://127.0.0.1:8000", "")
    with pytest.raises(ValueError, match="max_retries"):
        Keyhouse("http://127.0.0.1:8000", "t" * 24, max_retries=-1)
    with (
        Keyhouse("http://127.0.0.1:8000", "t" * 24) as client,
        pytest.raises(ValueError, match="time zone"),
    ):
        client.keys.create("acc_1", "naive", expires_at=datetime(2030, 1, 1))
