"""keys/restrictions.py: properties (hypothesis) of scopes, allowlists, origins and
the no-escalation rule, and the 400s of bad input.

The properties compare keyhouse's own arithmetic with Python's ``ipaddress``
(``subnet_of``, ``in``) and with a model of what a scope set means: the
concrete scopes it grants over a universe that includes a scope the catalog
has not declared yet (a ``resource:*`` grants that one too).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from keyhouse import errors
from keyhouse.keys.restrictions import (
    BUILTIN_SCOPES,
    MAX_CIDRS,
    MAX_SCOPES,
    Restrictions,
    attribute_refusal,
    escalation,
    grants,
    ip_allowed,
    is_scope_name,
    missing_scopes,
    origin_allowed,
    parse_restrictions,
    parse_scopes,
    shown_address,
)

Network = IPv4Network | IPv6Network

# --- strategies -------------------------------------------------------------

RESOURCES = ("messages", "domains", "keys")
ACTIONS = ("send", "read", "write")
CONCRETE = [f"{r}:{a}" for r in RESOURCES for a in ACTIONS]
WILDCARDS = [f"{r}:*" for r in RESOURCES]
# What a scope set means: the concrete scopes it grants, over the catalog's
# scopes and one per resource the catalog does not declare yet.
UNIVERSE = [*CONCRETE, *(f"{r}:future" for r in RESOURCES)]

scope_sets = st.lists(st.sampled_from(CONCRETE + WILDCARDS), max_size=8, unique=True).map(tuple)
maybe_scope_sets = st.none() | scope_sets


def _v4(prefix_min: int = 0) -> st.SearchStrategy[IPv4Network]:
    # Half the networks inside 10.0.0.0/16, so that containment happens often.
    address = st.integers(0, 2**32 - 1) | st.integers(0x0A000000, 0x0A00FFFF)
    return st.builds(
        lambda a, p: IPv4Network((a, p), strict=False), address, st.integers(prefix_min, 32)
    )


def _v6() -> st.SearchStrategy[IPv6Network]:
    base = 0x20010DB8 << 96
    address = st.integers(0, 2**128 - 1) | st.integers(base, base + 2**40)
    return st.builds(lambda a, p: IPv6Network((a, p), strict=False), address, st.integers(0, 128))


networks: st.SearchStrategy[Network] = _v4() | _v6()
network_lists = st.lists(networks, min_size=1, max_size=10).map(tuple)


def _allowlist(nets: Sequence[Network]) -> Restrictions:
    return Restrictions(ip_allowlist=tuple(nets))


def _probe_addresses(nets: Sequence[Network]) -> list[str]:
    """Addresses at and just outside each network's bounds: where an off-by-one lives."""
    out: list[str] = []
    for net in nets:
        top = 2**net.max_prefixlen - 1
        for value in (
            int(net.network_address),
            int(net.broadcast_address),
            int(net.network_address) - 1,
            int(net.broadcast_address) + 1,
        ):
            if 0 <= value <= top:
                out.append(
                    str(ipaddress.ip_address(value) if net.version == 4 else IPv6Address(value))
                )
    return out


# --- CIDR containment ---------------------------------------------------------


class TestCidrContainment:
    @given(child=networks, parents=network_lists)
    def test_escalation_agrees_with_subnet_of(
        self, child: Network, parents: tuple[Network, ...]
    ) -> None:
        within = any(
            child.version == parent.version and child.subnet_of(parent)  # type: ignore[arg-type]
            for parent in parents
        )
        verdict = escalation(None, _allowlist([child]), None, _allowlist(parents))
        assert (verdict is None) == within

    @given(nets=network_lists, extra=st.integers(0, 2**32 - 1))
    def test_ip_allowed_agrees_with_membership(self, nets: tuple[Network, ...], extra: int) -> None:
        r = _allowlist(nets)
        for text in [*_probe_addresses(nets), str(IPv4Address(extra))]:
            address = ipaddress.ip_address(text)
            expected = any(address in net for net in nets)
            assert ip_allowed(r, text) == expected, text

    @given(net=_v4(), host=st.integers(0, 2**32 - 1))
    @example(net=IPv4Network("203.0.113.0/24"), host=int(IPv4Address("203.0.113.5")))
    def test_ipv4_mapped_ipv6_is_checked_as_its_ipv4(self, net: IPv4Network, host: int) -> None:
        """``::ffff:203.0.113.5`` is what a dual-stack socket reports for an IPv4
        client: checked as IPv6, it would fail an IPv4 allowlist, or pass an IPv6
        one (``::/0``) that was never meant to admit IPv4 clients."""
        address = IPv4Address(host)
        mapped = f"::ffff:{address}"
        r = _allowlist([net])
        assert ip_allowed(r, mapped) == ip_allowed(r, str(address)) == (address in net)
        everything_v6 = _allowlist([IPv6Network("::/0")])
        assert ip_allowed(everything_v6, mapped) is False
        assert ip_allowed(everything_v6, "2001:db8::1") is True

    @given(
        text=st.ip_addresses().flatmap(
            lambda a: st.sampled_from([str(a), a.exploded, str(a).upper()])
        )
        | st.text(alphabet="0123456789abcdefABCDEF:.%x ", max_size=45)
    )
    def test_address_text_is_read_as_ipaddress_reads_it(self, text: str) -> None:
        """keyhouse parses with inet_pton (fast); ipaddress is the reference. An
        IPv6 zone ("%eth0") is refused, failing closed."""
        everything = _allowlist([IPv4Network("0.0.0.0/0"), IPv6Network("::/0")])
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            address = None
        readable = address is not None and "%" not in text
        assert ip_allowed(everything, text) == readable
        if readable and isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            v4 = _allowlist([IPv4Network("0.0.0.0/0")])
            assert ip_allowed(v4, text)

    def test_fail_closed_without_a_usable_address(self) -> None:
        r = _allowlist([IPv4Network("203.0.113.0/24")])
        for ip in (None, "", "not-an-ip", "203.0.113", "203.0.113.5/32", "x" * 1000):
            assert ip_allowed(r, ip) is False, ip
        assert ip_allowed(None, None) is True
        assert ip_allowed(Restrictions(), None) is True

    @given(child_nets=network_lists, parent_nets=network_lists)
    def test_no_escalation_means_no_address_more(
        self, child_nets: tuple[Network, ...], parent_nets: tuple[Network, ...]
    ) -> None:
        child, parent = _allowlist(child_nets), _allowlist(parent_nets)
        if escalation(None, child, None, parent) is None:
            for text in _probe_addresses(child_nets):
                assert not ip_allowed(child, text) or ip_allowed(parent, text), text

    @given(nets=network_lists)
    def test_parsed_allowlists_round_trip_through_storage(self, nets: tuple[Network, ...]) -> None:
        r = parse_restrictions(
            {"ipAllowlist": [str(n) for n in nets]}, key_type="secret", attribute_catalog=()
        )
        assert r is not None
        assert r.ip_allowlist is not None
        assert set(r.ip_allowlist) == set(nets)
        assert Restrictions.from_json(r.to_json()) == r


# --- scopes -------------------------------------------------------------------


def _meaning(scopes: tuple[str, ...] | None) -> set[str]:
    return {name for name in UNIVERSE if grants(scopes, name)}


class TestScopes:
    @given(
        granted=scope_sets, required=st.sampled_from(UNIVERSE + WILDCARDS) | st.text(max_size=20)
    )
    def test_grants_never_grants_a_scope_not_given(
        self, granted: tuple[str, ...], required: str
    ) -> None:
        resource = required.partition(":")[0]
        given_directly = required in granted
        given_by_wildcard = ":" in required and f"{resource}:*" in granted
        assert grants(granted, required) == (given_directly or given_by_wildcard)

    @given(granted=scope_sets, required=st.lists(st.sampled_from(UNIVERSE + WILDCARDS), max_size=6))
    def test_missing_scopes_is_what_grants_refuses(
        self, granted: tuple[str, ...], required: list[str]
    ) -> None:
        missing = missing_scopes(granted, required)
        assert missing == list(dict.fromkeys(r for r in required if not grants(granted, r)))
        assert missing_scopes(None, required) == []

    def test_a_wildcard_stays_within_its_resource(self) -> None:
        assert grants(("messages:*",), "messages:send")
        assert not grants(("messages:*",), "messagesx:send")
        assert not grants(("messages:*",), "domains:read")
        assert not grants(("messages:send",), "messages:*")
        assert not grants((), "messages:send")
        assert grants(None, "anything:at-all")

    @given(child=maybe_scope_sets, parent=maybe_scope_sets)
    def test_escalation_is_the_subset_rule(
        self, child: tuple[str, ...] | None, parent: tuple[str, ...] | None
    ) -> None:
        verdict = escalation(child, None, parent, None)
        if parent is None:
            assert verdict is None
        elif child is None:
            assert verdict is not None
        else:
            # Within the parent: every scope the child grants, including ones
            # the catalog declares later (the "future" scope of each resource).
            assert (verdict is None) == (_meaning(child) <= _meaning(parent))

    @given(values=st.lists(st.sampled_from(CONCRETE + WILDCARDS), max_size=10))
    def test_parse_scopes_dedups_and_sorts(self, values: list[str]) -> None:
        parsed = parse_scopes(values, CONCRETE)
        assert parsed == tuple(sorted(set(values)))

    @given(name=st.text(max_size=30))
    def test_unknown_or_malformed_scopes_are_refused(self, name: str) -> None:
        assume(name not in CONCRETE and name not in BUILTIN_SCOPES and name not in WILDCARDS)
        assume(name not in ("keys:*", "environments:*", "events:*", "account:*"))
        with pytest.raises(errors.BadRequest) as caught:
            parse_scopes(["messages:send", name], CONCRETE)
        assert "scopes[1]" in caught.value.message
        assert caught.value.fix is not None
        assert "scopes[1]" in caught.value.fix

    def test_catalog_names_are_never_wildcards(self) -> None:
        assert is_scope_name("messages:send")
        for name in ("messages:*", "*", "Messages:send", "messages", "messages:send:now", ""):
            assert not is_scope_name(name), name

    def test_builtin_scopes_and_their_wildcards_need_no_catalog(self) -> None:
        assert parse_scopes(["keys:*", "account:read"], ()) == ("account:read", "keys:*")
        assert parse_scopes([], ()) == ()


# --- origins --------------------------------------------------------------------

labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)


def _origins(*patterns: str) -> Restrictions:
    r = parse_restrictions(
        {"allowedOrigins": list(patterns)}, key_type="public", attribute_catalog=()
    )
    assert r is not None
    return r


class TestOrigins:
    """``https://*.example.com`` matches one or more labels before ``example.com``
    (as Google's API key website restrictions do), never the apex itself."""

    @given(sub=st.lists(labels, min_size=1, max_size=3))
    def test_wildcard_matches_one_or_more_labels(self, sub: list[str]) -> None:
        r = _origins("https://*.example.com")
        host = ".".join(sub)
        assert origin_allowed(r, f"https://{host}.example.com")
        assert origin_allowed(r, f"HTTPS://{host.upper()}.EXAMPLE.COM:443")
        assert not origin_allowed(r, f"http://{host}.example.com")
        assert not origin_allowed(r, f"https://{host}.example.com:8443")
        assert not origin_allowed(r, f"https://{host}example.com")
        assert not origin_allowed(r, f"https://{host}.example.com.evil.test")

    def test_wildcard_never_matches_the_apex_or_lookalikes(self) -> None:
        r = _origins("https://*.example.com")
        for origin in (
            "https://example.com",
            "https://evil-example.com",
            "https://example.com.evil.test",
            "https://*.example.com",
            "null",
            "",
            None,
        ):
            assert not origin_allowed(r, origin), origin

    def test_exact_origins_with_ports(self) -> None:
        r = _origins("http://localhost:3000", "https://app.example.com:443")
        assert r.allowed_origins == ("http://localhost:3000", "https://app.example.com")
        assert origin_allowed(r, "http://localhost:3000")
        assert origin_allowed(r, "https://app.example.com")
        assert not origin_allowed(r, "http://localhost:3001")
        assert not origin_allowed(r, "https://app.example.com/path")
        assert origin_allowed(None, None)
        assert origin_allowed(Restrictions(), None)

    @pytest.mark.parametrize(
        ("child", "parent", "within"),
        [
            ("https://a.example.com", "https://*.example.com", True),
            ("https://*.a.example.com", "https://*.example.com", True),
            ("https://*.example.com", "https://*.example.com", True),
            ("https://*.example.com", "https://*.a.example.com", False),
            ("https://*.example.com", "https://a.example.com", False),
            ("https://example.com", "https://*.example.com", False),
            ("http://a.example.com", "https://*.example.com", False),
        ],
    )
    def test_escalation_of_origins(self, child: str, parent: str, within: bool) -> None:
        assert (escalation(None, _origins(child), None, _origins(parent)) is None) == within


# --- attributes -------------------------------------------------------------------

values = st.sampled_from(["acme.com", "beta.io", "corp.net", "x"])
attribute_maps = st.dictionaries(
    st.sampled_from(["senderDomain", "channel"]), st.frozensets(values, min_size=1), max_size=2
)


def _attributes(data: dict[str, frozenset[str]]) -> Restrictions | None:
    if not data:
        return None
    return Restrictions(attributes=tuple(sorted(data.items())))


class TestAttributes:
    def test_refusal_names_the_attribute_outside_its_list(self) -> None:
        r = _attributes({"senderDomain": frozenset({"acme.com"})})
        assert attribute_refusal(r, {"senderDomain": "acme.com"}) is None
        assert attribute_refusal(r, {"senderDomain": "acme.com", "channel": "sms"}) is None
        assert attribute_refusal(r, {"senderDomain": "evil.com"}) == "senderDomain"
        assert attribute_refusal(r, {"senderDomain": "ACME.COM"}) == "senderDomain"
        # Fail closed: the platform did not say which domain.
        assert attribute_refusal(r, {}) == "senderDomain"
        assert attribute_refusal(None, {"senderDomain": "evil.com"}) is None

    @given(
        child=attribute_maps,
        parent=attribute_maps,
        sent=st.dictionaries(st.sampled_from(["senderDomain", "channel"]), values),
    )
    def test_no_escalation_means_no_value_more(
        self,
        child: dict[str, frozenset[str]],
        parent: dict[str, frozenset[str]],
        sent: dict[str, str],
    ) -> None:
        verdict = escalation(None, _attributes(child), None, _attributes(parent))
        subset = all(name in child and child[name] <= allowed for name, allowed in parent.items())
        assert (verdict is None) == subset
        if verdict is None and attribute_refusal(_attributes(child), sent) is None:
            assert attribute_refusal(_attributes(parent), sent) is None


# --- the 400s ---------------------------------------------------------------------


def _refusal(data: Any, key_type: str = "secret") -> errors.BadRequest:
    with pytest.raises(errors.BadRequest) as caught:
        parse_restrictions(data, key_type=key_type, attribute_catalog=("senderDomain",))
    error = caught.value
    assert error.status_code == 400
    assert error.code == "validation_error"
    assert error.fix is not None
    return error


class TestParseErrors:
    @pytest.mark.parametrize(
        ("data", "key_type", "field"),
        [
            ({"ipAllowlist": ["203.0.113.5/24"]}, "secret", "restrictions.ipAllowlist[0]"),
            ({"ipAllowlist": ["10.0.0.0/8", "300.1.1.1"]}, "secret", "restrictions.ipAllowlist[1]"),
            ({"ipAllowlist": [42]}, "secret", "restrictions.ipAllowlist[0]"),
            ({"ipAllowlist": ["::ffff:203.0.113.0/120"]}, "secret", "restrictions.ipAllowlist[0]"),
            ({"ipAllowlist": []}, "secret", "restrictions.ipAllowlist"),
            ({"ipAllowlist": "10.0.0.0/8"}, "secret", "restrictions.ipAllowlist"),
            (
                {"ipAllowlist": [f"10.0.{i // 256}.{i % 256}/32" for i in range(MAX_CIDRS + 1)]},
                "secret",
                "restrictions.ipAllowlist",
            ),
            (
                {"allowedOrigins": ["https://app.example.com"]},
                "secret",
                "restrictions.allowedOrigins",
            ),
            (
                {"allowedOrigins": ["https://app.example.com/"]},
                "public",
                "restrictions.allowedOrigins[0]",
            ),
            ({"allowedOrigins": ["ftp://example.com"]}, "public", "restrictions.allowedOrigins[0]"),
            ({"allowedOrigins": ["https://*.com"]}, "public", "restrictions.allowedOrigins[0]"),
            (
                {"allowedOrigins": ["https://a.*.example.com"]},
                "public",
                "restrictions.allowedOrigins[0]",
            ),
            ({"attributes": {"channel": ["email"]}}, "secret", "restrictions.attributes.channel"),
            (
                {"attributes": {"senderDomain": []}},
                "secret",
                "restrictions.attributes.senderDomain",
            ),
            (
                {"attributes": {"senderDomain": [""]}},
                "secret",
                "restrictions.attributes.senderDomain[0]",
            ),
            ({"attributes": {"sender-domain": ["a"]}}, "secret", "restrictions.attributes"),
            ({"attributes": {}}, "secret", "restrictions.attributes"),
            ({"ipallowlist": ["10.0.0.0/8"]}, "secret", "restrictions"),
        ],
    )
    def test_message_and_fix_name_the_field(self, data: Any, key_type: str, field: str) -> None:
        error = _refusal(data, key_type)
        assert error.message.startswith(field + " "), error.message
        assert error.fix is not None
        assert error.fix.startswith(field + ":"), error.fix

    def test_host_bits_fix_names_the_network(self) -> None:
        error = _refusal({"ipAllowlist": ["203.0.113.5/24"]})
        assert error.fix is not None
        assert "203.0.113.0/24" in error.fix
        assert "203.0.113.5/32" in error.fix

    def test_a_pasted_key_is_never_echoed(self) -> None:
        key = "sk_" + "A1b2C3d4" * 6 + "x"
        for data in (
            {"ipAllowlist": [key]},
            {"allowedOrigins": [key]},
            {"attributes": {key: ["a"]}},
            {key: 1},
        ):
            error = _refusal(data, "public")
            assert key not in error.message
            assert key not in (error.fix or "")
        with pytest.raises(errors.BadRequest) as caught:
            parse_scopes([key], ())
        assert key not in caught.value.message
        assert key not in (caught.value.fix or "")

    def test_too_many_scopes(self) -> None:
        with pytest.raises(errors.BadRequest) as caught:
            parse_scopes(["keys:read"] * (MAX_SCOPES + 1), ())
        assert caught.value.message.startswith("scopes ")

    def test_nothing_to_restrict_is_none(self) -> None:
        assert parse_restrictions({}, key_type="secret", attribute_catalog=()) is None
        assert (
            parse_restrictions(
                {"ipAllowlist": None, "attributes": None}, key_type="secret", attribute_catalog=()
            )
            is None
        )
        assert Restrictions.from_json(None) is None
        assert Restrictions.from_json({}) is None


# --- IPv6 zone ids (review r15) ---------------------------------------------

# What ipaddress takes after "%": any text without another "%" (a newline, a
# quote, a pasted key). None of it may be stored or shown.
zones = st.text(min_size=1, max_size=30).filter(lambda z: "%" not in z and "/" not in z)


class TestZoneIds:
    @given(
        net=_v6(),
        zone=zones,
        host=st.integers(0, 2**128 - 1),
    )
    @example(net=IPv6Network("fe80::1/128"), zone="eth0", host=0)
    @example(net=IPv6Network("2001:db8::/32"), zone="zz", host=0)
    def test_an_allowlist_with_a_zone_is_400_without_the_zone(
        self, net: IPv6Network, zone: str, host: int
    ) -> None:
        where = "restrictions.ipAllowlist[0]"
        for text, bare in (
            (f"{net.network_address}%{zone}/{net.prefixlen}", str(net)),
            (f"{IPv6Address(host)}%{zone}", str(IPv6Address(host))),
        ):
            if len(text) > 64:
                continue
            with pytest.raises(errors.BadRequest) as caught:
                parse_restrictions({"ipAllowlist": [text]}, key_type="secret", attribute_catalog=())
            # Exactly these words: nothing of the zone comes back.
            assert caught.value.message == (
                f"{where} has an IPv6 zone id (%...), which an allowlist cannot hold."
            )
            assert caught.value.fix == f"{where}: write the network without it, '{bare}'."

    @given(address=st.ip_addresses(v=6), zone=zones)
    @example(address=IPv6Address("fe80::1"), zone="eth0")
    @example(address=IPv6Address("2001:db8::1"), zone="\n<script>")
    def test_an_ip_with_a_zone_is_not_an_address(self, address: IPv6Address, zone: str) -> None:
        ip = f"{address}%{zone}"
        everything = _allowlist([IPv4Network("0.0.0.0/0"), IPv6Network("::/0")])
        assert ip_allowed(everything, ip) is False
        shown = shown_address(ip)
        assert "%" not in shown
        assert len(shown) <= 100
        assert shown == f"{address} (with a zone id, which is not an address)"
