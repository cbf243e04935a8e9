"""The scope catalog: what the platform declares its keys may do.

The operator replaces it whole (``PUT /admin/scopes``, ``keyhouse scopes
set``); keys are validated against it (``catalog_names``, called by the key
service). keyhouse's built-in scopes (``keys.restrictions.BUILTIN_SCOPES``)
are never stored: they are shown with ``builtin: true`` and cannot be
redeclared.

A scope or attribute that a key still carries cannot be removed: the
replace is refused with 409 naming the keys (revoked keys do not count).
Allowing it would leave keys that work with a scope the catalog no longer
has, and that no narrowing PATCH could keep (each key update is validated
against the catalog). A ``resource:*`` on a key counts as using the
resource: removing the resource's last scope is refused too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from keyhouse import errors
from keyhouse.audit.service import Actor, AuditService
from keyhouse.db.session import DbSession
from keyhouse.keys.restrictions import (
    BUILTIN_RESOURCES,
    BUILTIN_SCOPES,
    is_attribute_name,
    is_scope_name,
    scope_resource,
)
from keyhouse.models import CatalogEntry
from keyhouse.scopes.repository import CatalogRepository, Kind

__all__ = ["CatalogChange", "Entry", "ScopeService", "catalog_names", "catalog_object"]

# Keys named in a 409, at most.
_SHOWN_KEYS = 5


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    description: str


@dataclass(frozen=True, slots=True)
class CatalogChange:
    """What a replace did, by kind: names added, removed, and re-described."""

    added: dict[Kind, list[str]]
    removed: dict[Kind, list[str]]
    changed: dict[Kind, list[str]]

    def to_json(self) -> dict[str, Any]:
        """The ``scopes.updated`` event's data: only what changed."""
        out: dict[str, Any] = {}
        kinds: tuple[tuple[Kind, str], ...] = (("scope", "scopes"), ("attribute", "attributes"))
        for kind, member in kinds:
            part = {
                what: names
                for what, names in (
                    ("added", self.added.get(kind, [])),
                    ("removed", self.removed.get(kind, [])),
                    ("changed", self.changed.get(kind, [])),
                )
                if names
            }
            if part:
                out[member] = part
        return out


async def catalog_names(session: DbSession) -> tuple[frozenset[str], frozenset[str]]:
    """``(scopes, attributes)``: the names the catalog declares (built-ins not included;
    ``keys.restrictions.parse_scopes`` adds them).

    Call it in the transaction that writes a key's scopes or restrictions: on
    PostgreSQL it takes the catalog's lock shared until that transaction
    ends, so a concurrent ``PUT /admin/scopes`` either ran before (and the
    key is checked against its catalog) or waits and then sees the key.
    """
    repo = CatalogRepository(session)
    await repo.lock(shared=True)
    scopes: set[str] = set()
    attributes: set[str] = set()
    for kind, name in await repo.names():
        (scopes if kind == "scope" else attributes).add(name)
    return frozenset(scopes), frozenset(attributes)


def catalog_object(entries: Sequence[CatalogEntry]) -> dict[str, Any]:
    """``{"scopes": [...built-ins, ...declared], "attributes": [...]}`` as the API shows it."""
    scopes: list[dict[str, Any]] = [
        {"name": name, "description": description, "builtin": True}
        for name, description in BUILTIN_SCOPES.items()
    ]
    attributes: list[dict[str, Any]] = []
    for entry in sorted(entries, key=lambda e: e.name):
        if entry.kind == "scope":
            scopes.append({"name": entry.name, "description": entry.description, "builtin": False})
        else:
            attributes.append({"name": entry.name, "description": entry.description})
    return {"scopes": scopes, "attributes": attributes}


def _bad(field: str, problem: str, fix: str) -> errors.BadRequest:
    return errors.BadRequest(f"{field} {problem}", fix=f"{field}: {fix}")


def _validated(scopes: Sequence[Entry], attributes: Sequence[Entry]) -> list[CatalogEntry]:
    """The entries to store, or the 400 naming the first bad one (``scopes[2].name``)."""
    out: list[CatalogEntry] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(scopes):
        field = f"scopes[{index}].name"
        name = entry.name
        if name.endswith(":*") or name == "*":
            raise _bad(
                field,
                "is a wildcard; the catalog declares single scopes.",
                "declare each scope ('messages:send'); a key's 'messages:*' grants them all.",
            )
        if not is_scope_name(name):
            raise _bad(
                field,
                "is not a scope name.",
                "write 'resource:action' in lowercase letters, digits, '_' and '-', "
                "such as 'messages:send'.",
            )
        if name in BUILTIN_SCOPES or scope_resource(name) in BUILTIN_RESOURCES:
            raise _bad(
                field,
                f"'{name}' is in keyhouse's own resource '{scope_resource(name)}'.",
                f"choose another resource name; {', '.join(sorted(BUILTIN_RESOURCES))} are "
                "keyhouse's own (GET /admin/scopes lists its built-in scopes).",
            )
        if name in seen:
            raise _bad(
                field,
                f"'{name}' is declared twice (scopes[{seen[name]}] too).",
                "declare each scope once.",
            )
        seen[name] = index
        out.append(CatalogEntry(kind="scope", name=name, description=entry.description))
    seen = {}
    for index, entry in enumerate(attributes):
        field = f"attributes[{index}].name"
        name = entry.name
        if not is_attribute_name(name):
            raise _bad(
                field,
                "is not an attribute name.",
                "write a camelCase identifier of letters and digits, such as 'senderDomain'.",
            )
        if name in seen:
            raise _bad(
                field,
                f"'{name}' is declared twice (attributes[{seen[name]}] too).",
                "declare each attribute once.",
            )
        seen[name] = index
        out.append(CatalogEntry(kind="attribute", name=name, description=entry.description))
    return out


class ScopeService:
    def __init__(self, session: DbSession) -> None:
        self.repo = CatalogRepository(session)
        self.audit = AuditService(session)

    async def get(self) -> list[CatalogEntry]:
        """The declared entries (built-ins are added by ``catalog_object``)."""
        return list(await self.repo.entries())

    async def replace(
        self, scopes: Sequence[Entry], attributes: Sequence[Entry], *, actor: Actor
    ) -> tuple[list[CatalogEntry], CatalogChange]:
        """Replace the catalog; ``scopes.updated`` is recorded when something changed.

        Errors: 400 validation_error (a bad, duplicate or built-in name), 409
        conflict (a removed scope or attribute that keys still carry, naming
        them).
        """
        new = _validated(scopes, attributes)
        await self.repo.lock(shared=False)
        old = {_key(e): e.description for e in await self.repo.entries()}
        wanted = {_key(e): e.description for e in new}
        change = CatalogChange(
            added=_by_kind(k for k in wanted if k not in old),
            removed=_by_kind(k for k in old if k not in wanted),
            changed=_by_kind(k for k in wanted if k in old and old[k] != wanted[k]),
        )
        if not (change.added or change.removed or change.changed):
            return await self.get(), change
        if change.removed:
            await self._refuse_removal_in_use(change.removed, set(wanted))
        await self.repo.replace(new)
        self.audit.record("scopes.updated", account_id=None, actor=actor, data=change.to_json())
        return await self.get(), change

    async def _refuse_removal_in_use(
        self, removed: dict[Kind, list[str]], kept: set[tuple[Kind, str]]
    ) -> None:
        gone_scopes = set(removed.get("scope", []))
        gone_attributes = set(removed.get("attribute", []))
        kept_resources = BUILTIN_RESOURCES | {
            scope_resource(name) for kind, name in kept if kind == "scope"
        }
        users: dict[str, list[str]] = {}  # what is still used -> keys using it
        for key_id, key_scopes, restrictions in await self.repo.restricted_keys():
            for name in key_scopes or ():
                if name in gone_scopes or (
                    name.endswith(":*") and scope_resource(name) not in kept_resources
                ):
                    users.setdefault(name, []).append(key_id)
            for name in (restrictions or {}).get("attributes") or {}:
                if name in gone_attributes:
                    users.setdefault(name, []).append(key_id)
        if not users:
            return
        name, keys = sorted(users.items())[0]
        shown = ", ".join(keys[:_SHOWN_KEYS]) + (
            f" and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else ""
        )
        others = f" ({len(users) - 1} more names are in use too)" if len(users) > 1 else ""
        raise errors.Conflict(
            f"'{name}' is still carried by {len(keys)} key(s) that are not revoked: "
            f"{shown}{others}.",
            fix=f"Keep '{name}' in the catalog, or first revoke those keys or remove it from "
            "them (PATCH /keys/{id}).",
        )


def _key(entry: CatalogEntry) -> tuple[Kind, str]:
    return ("scope" if entry.kind == "scope" else "attribute", entry.name)


def _by_kind(keys: Any) -> dict[Kind, list[str]]:
    out: dict[Kind, list[str]] = {}
    for kind, name in sorted(keys):
        out.setdefault(kind, []).append(name)
    return out
