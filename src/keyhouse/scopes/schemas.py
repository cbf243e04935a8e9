"""The scope catalog as the API shows and takes it (``GET``/``PUT /admin/scopes``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from keyhouse.schemas import Schema

__all__ = [
    "MAX_CATALOG_ATTRIBUTES",
    "MAX_CATALOG_SCOPES",
    "AttributeEntry",
    "Catalog",
    "CatalogAttribute",
    "CatalogScope",
    "PutCatalogRequest",
    "ScopeEntry",
]

MAX_CATALOG_SCOPES = 1000
MAX_CATALOG_ATTRIBUTES = 100

# Checked for shape by the service (scopes/service.py), whose 400 names the
# entry and says what to write; here only what the columns hold.
EntryName = Annotated[str, StringConstraints(min_length=1, max_length=100)]
Description = Annotated[str, StringConstraints(max_length=500)]


class ScopeEntry(Schema):
    """A scope of the platform: ``resource:action``, lowercase."""

    model_config = ConfigDict(title="ScopeEntry")

    name: EntryName = Field(
        description="'resource:action' in lowercase, such as 'messages:send'; no wildcard "
        "(a key's 'messages:*' grants every 'messages:' scope).",
        examples=["messages:send"],
    )
    description: Description = Field("", description="What the scope allows, for people.")


class AttributeEntry(Schema):
    """An attribute a key can be restricted on (``restrictions.attributes``)."""

    model_config = ConfigDict(title="AttributeEntry")

    name: EntryName = Field(
        description="A camelCase identifier, such as 'senderDomain'.", examples=["senderDomain"]
    )
    description: Description = Field("", description="What the attribute is, for people.")


class PutCatalogRequest(Schema):
    """The whole catalog: it replaces the one stored (members left out are emptied)."""

    model_config = ConfigDict(title="PutCatalogRequest")

    scopes: list[ScopeEntry] = Field(max_length=MAX_CATALOG_SCOPES)
    attributes: list[AttributeEntry] = Field(
        default_factory=list, max_length=MAX_CATALOG_ATTRIBUTES
    )


class CatalogScope(BaseModel):
    model_config = ConfigDict(title="CatalogScope")

    name: str
    description: str
    builtin: bool = Field(
        description="One of keyhouse's own account-API scopes; not in the catalog."
    )


class CatalogAttribute(BaseModel):
    model_config = ConfigDict(title="CatalogAttribute")

    name: str
    description: str


class Catalog(BaseModel):
    """The scopes keys may carry (keyhouse's built-ins first) and the attributes
    they may be restricted on."""

    model_config = ConfigDict(title="Catalog")

    scopes: list[CatalogScope]
    attributes: list[CatalogAttribute]
