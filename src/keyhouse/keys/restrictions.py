"""What a restricted key may do: scopes, and the IP, origin and attribute restrictions.

Pure functions and one value type, no I/O: the key service validates with
``parse_scopes``/``parse_restrictions`` and refuses escalation with
``escalation``; verification decides with ``grants``/``missing_scopes``,
``ip_allowed``, ``origin_allowed`` and ``attribute_refusal`` on the
``Restrictions`` the key cache holds (parsed once per cache fill, never per
request).

Rules (each is a decision; the tests in tests/keys/test_restrictions.py hold them):

- Scopes are ``resource:action``, lowercase (``[a-z][a-z0-9_-]*`` each side,
  at most 100 characters). ``None`` is an unrestricted key (every scope);
  ``()`` grants nothing. A key's ``messages:*`` grants every ``messages:``
  scope, including ones the catalog declares later; catalog names are never
  wildcards, and there is no bare ``*``.
- IP allowlists are CIDRs with no host bits set (``203.0.113.5/24`` is
  refused with the network it probably meant: a typo there would silently
  allow or refuse a whole range). An IPv4-mapped IPv6 address
  (``::ffff:203.0.113.5``, what a dual-stack socket reports for an IPv4
  client) is checked as its IPv4 address, and an allowlist may not name
  ``::ffff:0:0/96`` networks: otherwise ``::ffff:203.0.113.5`` would pass an
  allowlist that was meant to hold only IPv6 networks, or be refused by
  ``203.0.113.0/24``.
- Origins are ``scheme://host[:port]`` (http or https, lowercase, no path,
  default ports dropped, as browsers send ``Origin``). ``https://*.example.com``
  matches one or more labels before ``example.com`` (``a.example.com`` and
  ``a.b.example.com``), never ``example.com`` itself, as Google's API key
  website restrictions do; the wildcard is a whole leftmost label followed
  by at least two labels (no ``https://*.com``). Allowed origins are for
  public keys only: a secret key never belongs in a browser.
- Attributes: ``{"senderDomain": ["acme.com"]}``; values compare exactly
  (case-sensitive; the platform sends what it stores). A verification that
  does not send an attribute the key restricts is refused, like a missing
  ``ip`` or ``origin`` (fail closed: a platform that forgot to pass
  ``senderDomain`` on its send path must not let the key send from anywhere).
- Fail closed: a restriction with no value to check (``ip`` or ``origin``
  absent or unparsable) refuses. An IPv6 zone id (``fe80::1%eth0``) is not
  part of an address: refused in an allowlist (400), and an ``ip`` with one is
  not an address (review r15: both were stored and echoed as written, text a
  caller chose).

Error messages never echo a value that does not have the shape asked for: a
field that is wrong may hold a pasted key.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from typing import Any

from keyhouse import errors

__all__ = [
    "BUILTIN_SCOPES",
    "MAX_ATTRIBUTE_VALUES",
    "MAX_ATTRIBUTE_VALUE_LENGTH",
    "MAX_CIDRS",
    "MAX_ORIGINS",
    "MAX_SCOPES",
    "Restrictions",
    "attribute_refusal",
    "escalation",
    "grants",
    "ip_allowed",
    "is_attribute_name",
    "is_scope_name",
    "missing_scopes",
    "origin_allowed",
    "parse_restrictions",
    "parse_scopes",
    "scope_resource",
    "shown_address",
]

# keyhouse's own account API; the key routes map onto these.
BUILTIN_SCOPES: dict[str, str] = {
    "keys:read": "List and read the account's keys.",
    "keys:write": "Create, import, update, roll and revoke the account's keys.",
    "environments:read": "List and read the account's environments.",
    "environments:write": "Create and delete the account's environments.",
    "events:read": "Read the account's audit events.",
    "account:read": "Read the account, its plan and its usage.",
}
BUILTIN_RESOURCES = frozenset(name.partition(":")[0] for name in BUILTIN_SCOPES)

MAX_SCOPES = 100
MAX_CIDRS = 100
MAX_ORIGINS = 100
MAX_ATTRIBUTE_VALUES = 100
MAX_ATTRIBUTE_VALUE_LENGTH = 256
MAX_SCOPE_NAME_LENGTH = 100  # catalog_entries.name is String(100)

_PART = r"[a-z][a-z0-9_-]*"
_SCOPE = re.compile(rf"{_PART}:{_PART}")
_WILDCARD = re.compile(rf"{_PART}:\*")
# camelCase identifiers: "senderDomain", "channel".
_ATTRIBUTE = re.compile(r"[a-z][A-Za-z0-9]{0,63}")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_ORIGIN = re.compile(
    rf"(?P<scheme>https?)://(?P<host>(?:\*\.)?{_LABEL}(?:\.{_LABEL})*)(?::(?P<port>[0-9]{{1,5}}))?"
)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_MAPPED = IPv6Network("::ffff:0:0/96")

Network = IPv4Network | IPv6Network


def is_scope_name(name: str) -> bool:
    """A catalog scope name: ``resource:action``, lowercase, no wildcard, <= 100 characters."""
    return len(name) <= MAX_SCOPE_NAME_LENGTH and _SCOPE.fullmatch(name) is not None


def is_attribute_name(name: str) -> bool:
    """An attribute name: a camelCase identifier (``senderDomain``), <= 64 characters."""
    return _ATTRIBUTE.fullmatch(name) is not None


def scope_resource(name: str) -> str:
    """``"messages"`` of ``"messages:send"`` (and of ``"messages:*"``)."""
    return name.partition(":")[0]


def _is_wildcard(name: str) -> bool:
    return len(name) <= MAX_SCOPE_NAME_LENGTH and _WILDCARD.fullmatch(name) is not None


# --- the value type ---------------------------------------------------------


def _ranges(networks: Iterable[Network]) -> tuple[tuple[int, int, int], ...]:
    # (version, network as int, mask as int): one AND and a compare per entry
    # on the verify path, instead of ipaddress's `in` with its type checks.
    return tuple((n.version, int(n.network_address), int(n.netmask)) for n in networks)


@dataclass(frozen=True, slots=True)
class Restrictions:
    """A key's restrictions; ``None`` members do not restrict.

    ``attributes`` is sorted by name; its values are exact strings.
    """

    ip_allowlist: tuple[Network, ...] | None = None
    allowed_origins: tuple[str, ...] | None = None
    attributes: tuple[tuple[str, frozenset[str]], ...] | None = None
    _ip_ranges: tuple[tuple[int, int, int], ...] = field(
        init=False, repr=False, compare=False, default=()
    )
    # to_json's members, made once: POST /verify shows a key's restrictions on
    # every answer, and str() of 10 networks was ~30 us of a ~120 us verify
    # (cProfile of bench/asgi_profile.py verify-restricted).
    _shown: tuple[tuple[str, Any], ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        shown: list[tuple[str, Any]] = []
        if self.ip_allowlist is not None:
            object.__setattr__(self, "_ip_ranges", _ranges(self.ip_allowlist))
            shown.append(("ipAllowlist", tuple(str(network) for network in self.ip_allowlist)))
        if self.allowed_origins is not None:
            shown.append(("allowedOrigins", self.allowed_origins))
        if self.attributes is not None:
            shown.append(
                (
                    "attributes",
                    tuple((name, tuple(sorted(values))) for name, values in self.attributes),
                )
            )
        object.__setattr__(self, "_shown", tuple(shown))

    def to_json(self) -> dict[str, Any]:
        """The API's and the database's shape, members only when set:
        ``{"ipAllowlist": ["203.0.113.0/24"], "allowedOrigins": ["https://app.example.com"],
        "attributes": {"senderDomain": ["acme.com"]}}`` (values sorted). A new
        object each call: the caller may change it."""
        out: dict[str, Any] = {}
        for member, value in self._shown:
            if member == "attributes":
                out[member] = {name: list(values) for name, values in value}
            else:
                out[member] = list(value)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Restrictions | None:
        """Stored (already validated) data back into a value; None or empty -> None."""
        if not data:
            return None
        ips = data.get("ipAllowlist")
        origins = data.get("allowedOrigins")
        attributes = data.get("attributes")
        restrictions = cls(
            ip_allowlist=None
            if ips is None
            else tuple(ipaddress.ip_network(value, strict=False) for value in ips),
            allowed_origins=None if origins is None else tuple(origins),
            attributes=None
            if attributes is None
            else tuple(sorted((name, frozenset(values)) for name, values in attributes.items())),
        )
        return restrictions if restrictions.to_json() else None


# --- validation (400s) ------------------------------------------------------


def _bad(field: str, problem: str, fix: str) -> errors.BadRequest:
    """A 400 whose message and fix both name the field (``restrictions.ipAllowlist[3]``)."""
    return errors.BadRequest(f"{field} {problem}", fix=f"{field}: {fix}")


def _some(names: Iterable[str], limit: int = 12) -> str:
    ordered = sorted(names)
    shown = ", ".join(ordered[:limit])
    return shown + (f" (and {len(ordered) - limit} more)" if len(ordered) > limit else "")


def parse_scopes(values: Sequence[str], catalog: Collection[str]) -> tuple[str, ...]:
    """A key's ``scopes``, validated: deduplicated and sorted.

    ``catalog`` is the platform's declared scope names (built-ins are added
    here). ``resource:*`` is accepted when some known scope has that resource.

    Raises ``errors.BadRequest`` (400 validation_error) naming the entry
    (``scopes[2]``) for a value that is not a scope name, is unknown, or when
    there are more than ``MAX_SCOPES``.
    """
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise _bad("scopes", "must be an array of scope names.", 'send e.g. ["keys:read"].')
    if len(values) > MAX_SCOPES:
        raise _bad(
            "scopes",
            f"has {len(values)} entries; a key holds at most {MAX_SCOPES}.",
            "use a wildcard such as 'messages:*' for every scope of a resource.",
        )
    known = set(catalog) | BUILTIN_SCOPES.keys()
    resources = {scope_resource(name) for name in known}
    out: set[str] = set()
    for index, value in enumerate(values):
        if not isinstance(value, str) or not (is_scope_name(value) or _is_wildcard(value)):
            raise _bad(
                f"scopes[{index}]",
                "is not a scope name.",
                "scope names are 'resource:action' in lowercase, such as 'messages:send', "
                "or 'resource:*' for every scope of a resource.",
            )
        if _is_wildcard(value):
            if scope_resource(value) not in resources:
                raise _bad(
                    f"scopes[{index}]",
                    f"'{value}' names no resource of the scope catalog.",
                    f"known resources: {_some(resources)}; declare scopes with PUT /admin/scopes.",
                )
        elif value not in known:
            raise _bad(
                f"scopes[{index}]",
                f"'{value}' is not a scope of this platform.",
                f"known scopes: {_some(known)}; the operator declares scopes with "
                "PUT /admin/scopes (or keyhouse scopes set).",
            )
        out.add(value)
    return tuple(sorted(out))


def _zone_free(value: str) -> str | None:
    """``value`` (an address or CIDR with a ``%zone``) without its zone, in
    ipaddress's canonical text, or None when what remains is not one: the only
    form of it an error or a reason may show."""
    address, _, rest = value.partition("%")
    _, slash, prefix = rest.partition("/")
    try:
        if slash:
            return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def shown_address(ip: str) -> str:
    """An ``ip`` as a refusal's reason may show it: as given when it is an address
    without a zone (the request's schema checked that it parses), else its
    address part without the zone, or ``"the ip given"``. Never the zone: it
    is any text the caller chose (``ipaddress`` takes ``%`` and anything after)."""
    if "%" not in ip:
        return ip
    bare = _zone_free(ip)
    return "the ip given" if bare is None else f"{bare} (with a zone id, which is not an address)"


def _parse_network(value: object, index: int) -> Network:
    where = f"restrictions.ipAllowlist[{index}]"
    if not isinstance(value, str) or len(value) > 64:
        raise _bad(where, "is not a CIDR.", "write e.g. '203.0.113.0/24' or '2001:db8::/32'.")
    if "%" in value:
        # ipaddress takes "fe80::1%eth0/128" and keeps the zone in the network's
        # text: stored and shown as written, and meaningless across hosts.
        bare = _zone_free(value)
        raise _bad(
            where,
            "has an IPv6 zone id (%...), which an allowlist cannot hold.",
            f"write the network without it, '{bare}'."
            if bare is not None
            else "write the network without it, e.g. '2001:db8::/32'.",
        )
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise _bad(
                where, "is not a CIDR.", "write e.g. '203.0.113.0/24' or '2001:db8::/32'."
            ) from None
        address = value.partition("/")[0]
        raise _bad(
            where,
            f"'{value}' has host bits set.",
            f"write the network, '{loose}', or '{address}/{loose.max_prefixlen}' if you "
            "meant the one address.",
        ) from None
    if isinstance(network, IPv6Network) and network.subnet_of(_MAPPED):
        mapped = network.network_address.ipv4_mapped
        prefix = network.prefixlen - 96
        raise _bad(
            where,
            f"'{value}' is an IPv4-mapped IPv6 network.",
            f"write it as IPv4: '{mapped}/{prefix}'; IPv4 clients are checked as IPv4.",
        )
    return network


def _parse_origin(value: object, index: int) -> str:
    where = f"restrictions.allowedOrigins[{index}]"
    fix = (
        "write an origin as a browser sends it: 'https://app.example.com' (scheme, host, "
        "optional port, no path), or 'https://*.example.com' for its subdomains."
    )
    if not isinstance(value, str) or len(value) > 300:
        raise _bad(where, "is not an origin.", fix)
    normalized = _normalize_origin(value.lower())
    if normalized is None:
        raise _bad(where, "is not an origin.", fix)
    host = normalized.partition("://")[2].partition(":")[0]
    if host.startswith("*.") and host.count(".") < 2:
        raise _bad(
            where,
            f"'{value}' allows every host of a top-level domain.",
            "name at least two labels after the wildcard, as in 'https://*.example.com'.",
        )
    return normalized


def _normalize_origin(value: str) -> str | None:
    """``scheme://host[:port]`` with the default port dropped, or None if it is not one."""
    match = _ORIGIN.fullmatch(value)
    if match is None:
        return None
    scheme, host, port = match["scheme"], match["host"], match["port"]
    if len(host) > 253:
        return None
    if port is not None:
        number = int(port)
        if not 0 < number < 65536:
            return None
        if number != _DEFAULT_PORTS[scheme]:
            return f"{scheme}://{host}:{number}"
    return f"{scheme}://{host}"


def _list_member(data: Mapping[str, Any], name: str, limit: int, example: str) -> list[Any] | None:
    value = data.get(name)
    if value is None:
        return None
    where = f"restrictions.{name}"
    if not isinstance(value, list):
        raise _bad(where, "must be an array.", f"send e.g. {example}.")
    if not value:
        raise _bad(
            where,
            "is empty: nothing could use the key.",
            f"leave {name} out for no restriction, or list at least one entry.",
        )
    if len(value) > limit:
        raise _bad(where, f"has {len(value)} entries; at most {limit}.", f"list at most {limit}.")
    return value


def parse_restrictions(
    data: Mapping[str, Any], *, key_type: str, attribute_catalog: Collection[str]
) -> Restrictions | None:
    """A key's ``restrictions`` object, validated; None when it restricts nothing.

    Members (each optional): ``ipAllowlist`` (<= ``MAX_CIDRS`` CIDRs),
    ``allowedOrigins`` (<= ``MAX_ORIGINS``, public keys only), ``attributes``
    (names from ``attribute_catalog``, each <= ``MAX_ATTRIBUTE_VALUES`` strings
    of 1-256 characters). Duplicates are dropped; lists are sorted.

    Raises ``errors.BadRequest`` (400 validation_error) whose message names the
    field (``restrictions.ipAllowlist[3]``) and whose fix says what to send.
    """
    if not isinstance(data, Mapping):
        raise _bad(
            "restrictions",
            "must be an object.",
            'send e.g. {"ipAllowlist": ["203.0.113.0/24"]}.',
        )
    unknown = sorted(str(name) for name in data if name not in _MEMBERS)
    if unknown:
        shown = unknown[0] if len(unknown[0]) <= 40 else unknown[0][:40] + "..."
        raise _bad(
            "restrictions",
            f"has an unknown member '{shown}'.",
            "it takes ipAllowlist, allowedOrigins and attributes.",
        )

    ips: tuple[Network, ...] | None = None
    values = _list_member(data, "ipAllowlist", MAX_CIDRS, '["203.0.113.0/24"]')
    if values is not None:
        parsed = {_parse_network(value, index) for index, value in enumerate(values)}
        ips = tuple(sorted(parsed, key=_network_order))

    origins: tuple[str, ...] | None = None
    values = _list_member(data, "allowedOrigins", MAX_ORIGINS, '["https://app.example.com"]')
    if values is not None:
        if key_type != "public":
            raise _bad(
                "restrictions.allowedOrigins",
                "is for public keys only.",
                "create a public key (keyType 'public') for browsers; restrict a secret key "
                "with ipAllowlist instead, and never send it from a browser.",
            )
        origins = tuple(sorted({_parse_origin(value, index) for index, value in enumerate(values)}))

    attributes = _parse_attributes(data.get("attributes"), attribute_catalog)
    restrictions = Restrictions(ips, origins, attributes)
    return restrictions if restrictions.to_json() else None


_MEMBERS = frozenset({"ipAllowlist", "allowedOrigins", "attributes"})


def _network_order(network: Network) -> tuple[int, int, int]:
    return (network.version, int(network.network_address), network.prefixlen)


def _parse_attributes(
    value: object, catalog: Collection[str]
) -> tuple[tuple[str, frozenset[str]], ...] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _bad(
            "restrictions.attributes",
            "must be an object of arrays.",
            'send e.g. {"senderDomain": ["acme.com"]}.',
        )
    if not value:
        raise _bad(
            "restrictions.attributes",
            "is empty.",
            "leave attributes out for no restriction, or restrict at least one attribute.",
        )
    out: list[tuple[str, frozenset[str]]] = []
    for name, values in value.items():
        if not isinstance(name, str) or not is_attribute_name(name):
            raise _bad(
                "restrictions.attributes",
                "has a name that is not an attribute name.",
                "attribute names are camelCase identifiers such as 'senderDomain'.",
            )
        where = f"restrictions.attributes.{name}"
        if name not in catalog:
            declared = _some(catalog) if catalog else "none"
            raise _bad(
                where,
                "is not an attribute of this platform.",
                f"declared attributes: {declared}; the operator declares them with "
                "PUT /admin/scopes (its 'attributes').",
            )
        if not isinstance(values, list) or not values:
            raise _bad(
                where,
                "must be a non-empty array of strings.",
                f'send e.g. "{name}": ["acme.com"]; leave {name} out for no restriction.',
            )
        if len(values) > MAX_ATTRIBUTE_VALUES:
            raise _bad(
                where,
                f"has {len(values)} values; at most {MAX_ATTRIBUTE_VALUES}.",
                f"list at most {MAX_ATTRIBUTE_VALUES} values.",
            )
        for index, item in enumerate(values):
            if not isinstance(item, str) or not 0 < len(item) <= MAX_ATTRIBUTE_VALUE_LENGTH:
                raise _bad(
                    f"{where}[{index}]",
                    f"must be a string of 1-{MAX_ATTRIBUTE_VALUE_LENGTH} characters.",
                    f'send e.g. "{name}": ["acme.com"].',
                )
        out.append((name, frozenset(values)))
    return tuple(sorted(out))


# --- decisions on the verify path ---------------------------------------------


def grants(granted: tuple[str, ...] | None, required: str) -> bool:
    """Whether scopes ``granted`` (None: unrestricted) include ``required``.

    ``resource:*`` in ``granted`` grants every ``resource:...``. A ``required``
    that is not a scope name is granted only by ``None`` or by itself.
    """
    if granted is None or required in granted:
        return True
    resource, colon, _ = required.partition(":")
    return bool(colon) and bool(resource) and f"{resource}:*" in granted


def missing_scopes(granted: tuple[str, ...] | None, required: Iterable[str]) -> list[str]:
    """The ``required`` scopes ``granted`` does not include, in order, once each."""
    if granted is None:
        return []
    out: list[str] = []
    for name in required:
        if name not in out and not grants(granted, name):
            out.append(name)
    return out


def _address(ip: str) -> tuple[int, int] | None:
    """(version, address as int); an IPv4-mapped IPv6 address as its IPv4 one.

    inet_pton, not ipaddress.ip_address: ~0.3 us instead of ~2 us, on the
    verify path. Both refuse what is not an address in its standard text
    (leading zeros included); inet_pton also refuses an IPv6 zone ("%eth0"),
    which then fails closed. tests/keys/test_restrictions.py checks the answers
    against ipaddress.
    """
    try:
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, ip), "big")
    except (OSError, ValueError):  # ValueError: an embedded NUL
        pass
    try:
        value = int.from_bytes(socket.inet_pton(socket.AF_INET6, ip), "big")
    except (OSError, ValueError):
        return None
    if value >> 32 == 0xFFFF:  # ::ffff:a.b.c.d
        return 4, value & 0xFFFFFFFF
    return 6, value


def ip_allowed(r: Restrictions | None, ip: str | None) -> bool:
    """Whether ``ip`` is in the key's allowlist: True without an allowlist; False
    (fail closed) with one when ``ip`` is None or not an address. An IPv4-mapped
    IPv6 address is checked as its IPv4 address."""
    if r is None or r.ip_allowlist is None:
        return True
    if ip is None or len(ip) > 64:
        return False
    address = _address(ip)
    if address is None:
        return False
    version, value = address
    return any(v == version and value & mask == net for v, net, mask in r._ip_ranges)


def _origin_matches(pattern: str, origin: str) -> bool:
    if "://*." not in pattern:
        return pattern == origin
    scheme, _, rest = pattern.partition("://*.")
    suffix_host, colon, port = rest.partition(":")
    o_scheme, _, o_rest = origin.partition("://")
    o_host, o_colon, o_port = o_rest.partition(":")
    return (
        o_scheme == scheme
        and (colon, port) == (o_colon, o_port)
        and o_host.endswith("." + suffix_host)
        and not o_host.startswith("*.")
    )


def origin_allowed(r: Restrictions | None, origin: str | None) -> bool:
    """Whether ``origin`` (a request's ``Origin``) is allowed: True without
    ``allowedOrigins``; False (fail closed) with them when ``origin`` is None,
    ``"null"`` or not an origin."""
    if r is None or r.allowed_origins is None:
        return True
    if origin is None or len(origin) > 300:
        return False
    normalized = _normalize_origin(origin.lower())
    if normalized is None or "*" in normalized:
        return False
    return any(_origin_matches(pattern, normalized) for pattern in r.allowed_origins)


def attribute_refusal(r: Restrictions | None, attributes: Mapping[str, str]) -> str | None:
    """The name of the first attribute (by name) the key restricts whose value in
    ``attributes`` is outside its list, or is missing (fail closed); None when
    every restricted attribute is allowed. Attributes the key does not restrict
    are allowed whatever their value."""
    if r is None or r.attributes is None:
        return None
    for name, allowed in r.attributes:
        value = attributes.get(name)
        if value is None or value not in allowed:
            return name
    return None


# --- escalation -------------------------------------------------------------


def _scope_within(child: str, parent: tuple[str, ...]) -> bool:
    if _is_wildcard(child):
        # Only the same wildcard covers a wildcard: holding every messages:
        # scope today does not cover the ones the catalog declares tomorrow.
        return child in parent
    return grants(parent, child)


def _network_within(child: Network, parents: Iterable[Network]) -> bool:
    # The same test as ipaddress's subnet_of, on ints (that one is typed per
    # version, and the property test checks this one against it).
    start = int(child.network_address)
    for parent in parents:
        if (
            child.version == parent.version
            and child.prefixlen >= parent.prefixlen
            and start & int(parent.netmask) == int(parent.network_address)
        ):
            return True
    return False


def _origin_within(child: str, parents: Iterable[str]) -> bool:
    for parent in parents:
        if child == parent:
            return True
        if "://*." in parent:
            # A wildcard child is inside a parent wildcard whose suffix its own
            # suffix ends with: every host it matches, the parent matches.
            probe = child.replace("://*.", "://x.", 1) if "://*." in child else child
            if _origin_matches(parent, probe):
                return True
    return False


def escalation(
    child_scopes: tuple[str, ...] | None,
    child_r: Restrictions | None,
    parent_scopes: tuple[str, ...] | None,
    parent_r: Restrictions | None,
) -> str | None:
    """None when a key with ``child_*`` can do no more than one with ``parent_*``;
    otherwise a sentence saying what is wider (for a 403's message).

    Scopes: each child scope granted by the parent's (a child wildcard only by
    the same wildcard; parent None: anything). Every restriction the parent
    has, the child has at least as narrow: each CIDR inside one of the
    parent's, each origin matched by one of the parent's, each attribute the
    parent restricts restricted to a subset of its values.
    """
    if parent_scopes is not None:
        if child_scopes is None:
            return "The key would have every scope; the key making it is limited to some scopes."
        wider = [name for name in child_scopes if not _scope_within(name, parent_scopes)]
        if wider:
            return f"The key would have scopes the key making it does not have: {_some(wider)}."
    parent_ips = parent_r.ip_allowlist if parent_r is not None else None
    child_ips = child_r.ip_allowlist if child_r is not None else None
    if parent_ips is not None:
        if child_ips is None:
            return "The key would work from any address; the key making it has an IP allowlist."
        outside = [str(n) for n in child_ips if not _network_within(n, parent_ips)]
        if outside:
            return (
                "The key's ipAllowlist reaches outside the allowlist of the key making it: "
                f"{_some(outside, 5)}."
            )
    parent_origins = parent_r.allowed_origins if parent_r is not None else None
    child_origins = child_r.allowed_origins if child_r is not None else None
    if parent_origins is not None:
        if child_origins is None:
            return "The key would work from any origin; the key making it has allowedOrigins."
        outside = [o for o in child_origins if not _origin_within(o, parent_origins)]
        if outside:
            return (
                "The key's allowedOrigins reach outside those of the key making it: "
                f"{_some(outside, 5)}."
            )
    parent_attributes = parent_r.attributes if parent_r is not None else None
    if parent_attributes is not None:
        child_attributes = dict(child_r.attributes or ()) if child_r is not None else {}
        for name, allowed in parent_attributes:
            values = child_attributes.get(name)
            if values is None:
                return f"The key would allow any {name}; the key making it restricts {name}."
            extra = sorted(values - allowed)
            if extra:
                return (
                    f"The key would allow {name} values the key making it does not: "
                    f"{_some(extra, 5)}."
                )
    return None
