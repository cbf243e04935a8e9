"""The asynchronous clients: ``AsyncKeyhouse`` and ``AsyncAccountClient``, method
for method as ``_sync.py`` (generated from it by hand: keep the two in step).
Waits between attempts use ``asyncio.sleep``: these clients run on asyncio."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import httpx

from keyhouse_client import _core
from keyhouse_client._core import Call, RetryPolicy
from keyhouse_client._models import (
    Account,
    ApiKey,
    CreatedAccount,
    Environment,
    Event,
    EventPage,
    KeyRestrictions,
    KeyType,
    LimitsUpdate,
    VerifyResult,
)

__all__ = ["AsyncAccountClient", "AsyncKeyhouse"]

T = TypeVar("T")
Self = TypeVar("Self", bound="_Client")


class _Client:
    """Sends calls: one httpx.AsyncClient, the token, the retry policy."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int = 2,
        max_retry_wait: float = 10.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        kwargs = _core.build_http_kwargs(base_url, timeout)
        self._base = kwargs.pop("base_url")
        self._auth = _core.auth_headers(token)
        self._policy = RetryPolicy(max_retries, max_retry_wait)
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient(**kwargs)

    async def _run(self, call: Call[T]) -> T:
        kwargs = _core.request_kwargs(call, {**self._auth, **call.headers()})
        url = self._base + call.path
        attempt = 0
        while True:
            try:
                response = await self._http.request(call.method, url, **kwargs)
            except httpx.TransportError as exc:
                wait = self._policy.after_transport_error(exc, attempt)
                if wait is None:
                    raise _core.transport_error(exc) from exc
            else:
                wait = self._policy.after_response(response, attempt)
                if wait is None:
                    return _core.finish(call, response)
                await response.aclose()
            await asyncio.sleep(wait)
            attempt += 1

    async def close(self) -> None:
        """Close the connections (not those of an ``http_client`` you passed in)."""
        if self._owns_http:
            await self._http.aclose()

    async def aclose(self) -> None:
        """``close()``, under httpx's name for it."""
        await self.close()

    async def __aenter__(self: Self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


# -- the operator API -----------------------------------------------------------------


class OperatorAccounts:
    """``/admin/accounts``."""

    def __init__(self, client: _Client) -> None:
        self._c = client

    async def create(
        self,
        name: str,
        *,
        limits: LimitsUpdate | None = None,
        idempotency_key: str | None = None,
    ) -> CreatedAccount:
        """A new account and its first secret key (in full). Limits left out take
        the operator's defaults."""
        return await self._c._run(_core.create_account(name, limits, idempotency_key))

    async def list(self) -> list[Account]:
        """Every account, newest first."""
        return await self._c._run(_core.list_accounts())

    async def get(self, account_id: str) -> Account:
        """One account; ``KeyhouseError`` 404 ``not_found`` when there is none."""
        return await self._c._run(_core.get_account(account_id))

    async def update(
        self, account_id: str, *, name: str | None = None, limits: LimitsUpdate | None = None
    ) -> Account:
        """Rename and/or change limits: only what is given changes; a limit set to None
        is unlimited."""
        return await self._c._run(_core.update_account(account_id, name, limits))


class OperatorKeys:
    """Any account's keys (``/admin/accounts/{id}/keys``, ``/admin/keys/{id}``)."""

    def __init__(self, client: _Client) -> None:
        self._c = client

    async def list(
        self,
        account_id: str,
        *,
        environment_id: str | None = None,
        key_type: KeyType | None = None,
        revoked: bool | None = None,
    ) -> list[ApiKey]:
        """The account's keys, newest first, every environment's (filters as ``GET /keys``)."""
        params = _core.key_filters(environment_id, key_type, revoked)
        return await self._c._run(_core.list_keys(_core.admin_keys_of(account_id), params))

    async def create(
        self,
        account_id: str,
        name: str,
        *,
        key_type: KeyType = "secret",
        environment_id: str | None = None,
        expires_at: datetime | str | None = None,
        scopes: Sequence[str] | None = None,
        restrictions: KeyRestrictions | Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> ApiKey:
        """A new key of the account, with its full ``key`` (402 ``key_limit_reached``
        over the plan's ``maxKeys``). ``scopes`` and ``restrictions`` limit what it
        may do and where (names from the operator's catalog; 400 naming what is
        wrong)."""
        body = _core.create_key_body(
            name, key_type, environment_id, expires_at, scopes, restrictions
        )
        return await self._c._run(
            _core.create_key(_core.admin_keys_of(account_id), body, idempotency_key)
        )

    async def get(self, key_id: str) -> ApiKey:
        return await self._c._run(_core.get_key("/admin/keys", key_id))

    async def update(self, key_id: str, *, name: str) -> ApiKey:
        """Rename: ``name`` is the only member a key's update can change."""
        return await self._c._run(_core.rename_key("/admin/keys", key_id, name))

    async def revoke(
        self, key_id: str, *, force: bool = False, idempotency_key: str | None = None
    ) -> ApiKey:
        """Revoke at once (idempotent); the account's last account-wide secret key
        needs ``force=True`` (else 409 ``last_secret_key``)."""
        return await self._c._run(_core.revoke_key("/admin/keys", key_id, force, idempotency_key))

    async def roll(
        self,
        key_id: str,
        *,
        expires_in_seconds: int | None = None,
        idempotency_key: str | None = None,
    ) -> ApiKey:
        """The new key, in full; the old one works ``expires_in_seconds`` more
        (keyhouse's default 86400 when None; 0 to 604800)."""
        return await self._c._run(
            _core.roll_key("/admin/keys", key_id, expires_in_seconds, idempotency_key)
        )

    async def import_(
        self,
        account_id: str,
        key: str,
        *,
        name: str,
        key_type: KeyType,
        environment_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> ApiKey:
        """Store a key issued by another system (20-200 URL-safe characters)."""
        return await self._c._run(
            _core.import_key(account_id, key, name, key_type, environment_id, idempotency_key)
        )


class _Events:
    def __init__(self, client: _Client, path: str) -> None:
        self._c = client
        self._path = path

    async def _page(
        self, limit: int | None, starting_after: str | None, account_id: str | None
    ) -> EventPage:
        return await self._c._run(_core.events_page(self._path, limit, starting_after, account_id))

    async def _all(self, page_size: int, account_id: str | None) -> AsyncIterator[Event]:
        cursor: str | None = None
        while True:
            page = await self._page(page_size, cursor, account_id)
            for event in page.events:
                yield event
            cursor = _core.next_cursor(page)
            if cursor is None:
                return


class OperatorEvents(_Events):
    """Every account's audit log (``/admin/events``), newest first."""

    async def page(
        self,
        *,
        limit: int | None = None,
        starting_after: str | None = None,
        account_id: str | None = None,
    ) -> EventPage:
        """One page (``limit`` ≤ 100); ``account_id`` for one account's events."""
        return await self._page(limit, starting_after, account_id)

    def list(self, *, account_id: str | None = None, page_size: int = 100) -> AsyncIterator[Event]:
        """Every event, newest first: an async generator that fetches page after
        page as you iterate (``async for event in client.events.list()``)."""
        return self._all(page_size, account_id)


class AsyncKeyhouse(_Client):
    """The operator's client on asyncio: ``AsyncKeyhouse(base_url, token)``, as
    ``Keyhouse`` (``await`` each call; ``async with``, ``await close()``).

    ``token``: an admin token (``KEYHOUSE_ADMIN_TOKENS``), or a verify-only token
    (``KEYHOUSE_VERIFY_TOKENS``) for ``verify`` alone (anything else is then 403
    ``insufficient_permissions``). ``timeout``: seconds, or an ``httpx.Timeout``
    (default 10 s, 5 s to connect). ``max_retries`` (2) and ``max_retry_wait``
    (10 s): see ``_core.RetryPolicy``. ``http_client``: an ``httpx.AsyncClient`` of
    yours (proxies, TLS, a transport); you close it.

    Raises ``KeyhouseError`` for every error answer, ``KeyhouseUnavailable``
    (a subclass) when keyhouse cannot be reached or answers 503.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int = 2,
        max_retry_wait: float = 10.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(
            base_url,
            token,
            timeout=timeout,
            max_retries=max_retries,
            max_retry_wait=max_retry_wait,
            http_client=http_client,
        )
        self.accounts = OperatorAccounts(self)
        self.keys = OperatorKeys(self)
        self.events = OperatorEvents(self, "/admin/events")

    async def verify(
        self,
        key: str,
        *,
        scopes: Sequence[str] | None = None,
        ip: str | None = None,
        origin: str | None = None,
        attributes: Mapping[str, str] | None = None,
        **options: Any,
    ) -> VerifyResult:
        """``POST /verify``: whether ``key`` may pass, and whose it is.

        ``scopes``: what the request needs (each must be granted, else
        ``insufficient_scope``); ``ip``: the caller's address, and ``origin``:
        a browser request's ``Origin`` (a key with an ``ipAllowlist`` or
        ``allowedOrigins`` verified without them is refused: it fails closed);
        ``attributes``: what the request is about (``{"senderDomain":
        "acme.com"}``). Only those given are sent.

        A refusal is not an exception: ``result.valid`` is False and
        ``result.code`` says why (``malformed``, ``not_found``, ``revoked``,
        ``expired``, ``usage_exceeded``, ``rate_limited``, ``insufficient_scope``,
        ``ip_not_allowed``, ``origin_not_allowed``, ``attribute_not_allowed``,
        ``secret_key_in_browser``, or a code a newer keyhouse adds), with
        ``result.reason`` for the refusals of restricted keys. ``options`` are
        sent as further members of the request body (an unknown member is 400
        ``validation_error``).
        """
        body = _core.verify_options(scopes, ip, origin, attributes)
        return await self._run(_core.verify(key, {**options, **body}))


# -- the account API ------------------------------------------------------------------


class AccountKeys:
    """The calling account's keys (``/keys``); an environment-scoped key sees its
    environment's only."""

    def __init__(self, client: _Client) -> None:
        self._c = client

    async def list(
        self,
        *,
        environment_id: str | None = None,
        key_type: KeyType | None = None,
        revoked: bool | None = None,
    ) -> list[ApiKey]:
        """The keys, newest first."""
        params = _core.key_filters(environment_id, key_type, revoked)
        return await self._c._run(_core.list_keys("/keys", params))

    async def create(
        self,
        name: str,
        *,
        key_type: KeyType = "secret",
        environment_id: str | None = None,
        expires_at: datetime | str | None = None,
        scopes: Sequence[str] | None = None,
        restrictions: KeyRestrictions | Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> ApiKey:
        """A new key, with its full ``key``. ``scopes`` and ``restrictions`` as the
        operator's ``keys.create``; a restricted calling key gives its own when they
        are left out, and may not make a key wider than itself (403
        ``scope_escalation``)."""
        body = _core.create_key_body(
            name, key_type, environment_id, expires_at, scopes, restrictions
        )
        return await self._c._run(_core.create_key("/keys", body, idempotency_key))

    async def get(self, key_id: str) -> ApiKey:
        return await self._c._run(_core.get_key("/keys", key_id))

    async def rename(self, key_id: str, name: str) -> ApiKey:
        return await self._c._run(_core.rename_key("/keys", key_id, name))

    async def revoke(
        self, key_id: str, *, force: bool = False, idempotency_key: str | None = None
    ) -> ApiKey:
        """Revoke at once (idempotent; ``force=True`` for the last account-wide secret key)."""
        return await self._c._run(_core.revoke_key("/keys", key_id, force, idempotency_key))

    async def roll(
        self,
        key_id: str,
        *,
        expires_in_seconds: int | None = None,
        idempotency_key: str | None = None,
    ) -> ApiKey:
        """The new key, in full; the old one works ``expires_in_seconds`` more (default 86400)."""
        return await self._c._run(
            _core.roll_key("/keys", key_id, expires_in_seconds, idempotency_key)
        )


class AccountEnvironments:
    def __init__(self, client: _Client) -> None:
        self._c = client

    async def list(self) -> list[Environment]:
        return await self._c._run(_core.list_environments())

    async def create(self, name: str, *, idempotency_key: str | None = None) -> Environment:
        """A new environment (409 ``conflict`` when the account has one of that name)."""
        return await self._c._run(_core.create_environment(name, idempotency_key))


class CurrentAccount:
    def __init__(self, client: _Client) -> None:
        self._c = client

    async def get(self) -> Account:
        """The calling account, its limits and this period's ``usage`` (never counted)."""
        return await self._c._run(_core.my_account())


class AccountEvents(_Events):
    """The calling account's audit log (``/events``), newest first."""

    async def page(
        self, *, limit: int | None = None, starting_after: str | None = None
    ) -> EventPage:
        return await self._page(limit, starting_after, None)

    def list(self, *, page_size: int = 100) -> AsyncIterator[Event]:
        """Every event, newest first: an async generator over all pages."""
        return self._all(page_size, None)


class AsyncAccountClient(_Client):
    """``AccountClient`` on asyncio: ``AsyncAccountClient(base_url, key)``.

    Each call counts against the account's plan (402 ``usage_limit_exceeded``,
    429 ``rate_limited`` when over it), except ``account.get()``.
    """

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int = 2,
        max_retry_wait: float = 10.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(
            base_url,
            key,
            timeout=timeout,
            max_retries=max_retries,
            max_retry_wait=max_retry_wait,
            http_client=http_client,
        )
        self.keys = AccountKeys(self)
        self.environments = AccountEnvironments(self)
        self.account = CurrentAccount(self)
        self.events = AccountEvents(self, "/events")
