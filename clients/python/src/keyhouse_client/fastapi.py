"""FastAPI: the identity ``KeyhouseAuth`` verified, as a dependency.

    app = FastAPI()
    app.add_middleware(KeyhouseAuth, base_url=..., token=...)

    @app.get("/orders")
    def orders(identity: Identity = Depends(require_key())) -> ...:
        ...

or, with the alias, ``def orders(identity: KeyhouseIdentity)``. A route that
needs scopes: ``Depends(require_key(scopes=["orders:read"]))``, checked
against the scopes keyhouse answered for the key when the middleware verified
it (no second verification; a refusal is 403 ``insufficient_scope`` in
keyhouse's envelope). Imports FastAPI: import this module only in a FastAPI
app.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated

from fastapi import Depends, Request

from keyhouse_client.middleware import Identity, KeyhouseRefusal, forbidden, identity_of

__all__ = ["InsufficientScope", "KeyhouseIdentity", "require_key"]


class InsufficientScope(KeyhouseRefusal):
    """Raised by ``require_key(scopes=...)``; ``KeyhouseAuth`` answers it with 403
    ``insufficient_scope`` in keyhouse's envelope (the app needs no handler)."""

    def __init__(self, missing: Sequence[str]) -> None:
        self.missing = list(missing)
        names = ", ".join(self.missing)
        super().__init__(
            forbidden(
                "insufficient_scope",
                f"The key's scopes do not grant {names}.",
                f"Use a key whose scopes include {names}.",
            )
        )


def require_key(scopes: Sequence[str] = ()) -> Callable[[Request], Identity]:
    """A dependency that gives the route the verified ``Identity``.

    The middleware has refused every request without a valid key before the
    route runs, so the dependency only reads what it found. On a path the
    middleware does not cover (not installed, or in ``exclude_paths``) there
    is no identity: the dependency raises ``RuntimeError`` (a 500), failing
    closed rather than serving the route without a key.

    ``scopes``: what this route needs, each granted by the key's scopes
    (``Identity.grants``: keyhouse's rule, ``orders:*`` grants ``orders:read``,
    a key without scopes grants all), else 403 ``insufficient_scope``.
    """
    if isinstance(scopes, str):
        raise ValueError("scopes is a list of scope names, not one string")
    needed = tuple(scopes)

    def keyhouse_identity(request: Request) -> Identity:
        identity = identity_of(request.scope)
        if identity is None:
            raise RuntimeError(
                "require_key(): no verified key on this request; add KeyhouseAuth to the "
                "app, and keep this path out of its exclude_paths"
            )
        missing = identity.missing_scopes(needed)
        if missing:
            raise InsufficientScope(missing)
        return identity

    return keyhouse_identity


KeyhouseIdentity = Annotated[Identity, Depends(require_key())]
