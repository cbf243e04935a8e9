"""FastAPI: the identity ``KeyhouseAuth`` verified, as a dependency.

    app = FastAPI()
    app.add_middleware(KeyhouseAuth, base_url=..., token=...)

    @app.get("/orders")
    def orders(identity: Identity = Depends(require_key())) -> ...:
        ...

or, with the alias, ``def orders(identity: KeyhouseIdentity)``. Imports
FastAPI: import this module only in a FastAPI app.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from keyhouse_client.middleware import Identity, identity_of

__all__ = ["KeyhouseIdentity", "require_key"]


def require_key() -> Callable[[Request], Identity]:
    """A dependency that gives the route the verified ``Identity``.

    The middleware has refused every request without a valid key before the
    route runs, so the dependency only reads what it found. On a path the
    middleware does not cover (not installed, or in ``exclude_paths``) there
    is no identity: the dependency raises ``RuntimeError`` (a 500), failing
    closed rather than serving the route without a key.
    """

    def keyhouse_identity(request: Request) -> Identity:
        identity = identity_of(request.scope)
        if identity is None:
            raise RuntimeError(
                "require_key(): no verified key on this request; add KeyhouseAuth to the "
                "app, and keep this path out of its exclude_paths"
            )
        return identity

    return keyhouse_identity


KeyhouseIdentity = Annotated[Identity, Depends(require_key())]
