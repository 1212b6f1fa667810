"""The egress policy (herald_delivery.egress): literal addresses in every spelling a resolver
accepts, the built-in refusals, allow and deny lists (the most specific network decides),
and the settings that configure them."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from herald_core.errors import SettingsError
from herald_delivery.egress import EgressPolicy, literal_address
from herald_delivery.settings import EgressSettings
from tests.helpers import settings_from

METADATA_V4 = ipaddress.ip_address("169.254.169.254")

# Every spelling of 169.254.169.254 a URL host can use.
METADATA_SPELLINGS = [
    "169.254.169.254",
    "169.254.169.254.",  # a trailing dot
    "0xa9fea9fe",  # one hex number
    "0XA9FEA9FE",
    "2852039166",  # one decimal number
    "025177524776",  # one octal number
    "0251.0376.0251.0376",  # octal parts
    "0xa9.0xfe.0xa9.0xfe",  # hex parts
    "0xa9.254.0251.254",  # mixed
    "169.254.43518",  # a.b.c, c 16 bits
    "169.16689662",  # a.b, b 24 bits
    "::ffff:169.254.169.254",  # IPv4-mapped IPv6
    "::ffff:a9fe:a9fe",
    "[::ffff:169.254.169.254]",
    "::169.254.169.254",  # IPv4-compatible
    "64:ff9b::a9fe:a9fe",  # NAT64
    "2002:a9fe:a9fe::1",  # 6to4
]


@pytest.mark.parametrize("host", METADATA_SPELLINGS)
def test_every_spelling_of_the_metadata_address_is_refused(host: str) -> None:
    address = literal_address(host)
    assert address is not None, host
    why = EgressPolicy().check(address)
    assert why is not None and "169.254.169.254" in why, (host, why)
    assert "metadata" in why and "HERALD_EGRESS_ALLOW" in why
    in_url = f"[{host}]" if ":" in host and not host.startswith("[") else host
    assert EgressPolicy().url_problem(f"http://{in_url}/latest/meta-data/") == why


@pytest.mark.parametrize(
    "host",
    [
        "169.254.169.254",
        "0xa9fea9fe",
        "2852039166",
        "025177524776",
        "0251.0376.0251.0376",
        "169.254.43518",
        "169.16689662",
        "127.1",
        "0x7f.1",
        "0",
        "10.0.0.7",
        "1.2.3.4",
    ],
)
def test_ipv4_spellings_read_as_the_resolver_reads_them(host: str) -> None:
    """The same address inet_aton (what getaddrinfo uses) gives."""
    assert literal_address(host) == ipaddress.IPv4Address(socket.inet_aton(host))


@pytest.mark.parametrize(
    "host",
    [
        "hooks.example.com",
        "localhost",
        "08.1.2.3",
        "1.2.3.4.5",
        "256.1.1.1",
        "1.16777216",
        "1..2.3",
        "0x",
        "a9fea9fe",
        "",
        "1.2.3.4a",
        "[::ffff:zz]",
    ],
)
def test_names_and_impossible_numbers_are_no_literal_address(host: str) -> None:
    assert literal_address(host) is None


@pytest.mark.parametrize(
    ("address", "what"),
    [
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fd00:ec2::254", "AWS metadata service over IPv6"),
        ("100.100.100.200", "Alibaba Cloud"),
        ("192.0.0.192", "Oracle Cloud"),
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
    ],
)
def test_built_in_refusals(address: str, what: str) -> None:
    why = EgressPolicy().check(address)
    assert why is not None and what in why, why
    fix = (
        "HERALD_EGRESS_ALLOW_LOOPBACK=true"
        if what in ("loopback", "unspecified")
        else ("HERALD_EGRESS_ALLOW")
    )
    assert fix in why


@pytest.mark.parametrize(
    "address", ["10.0.0.7", "192.168.1.1", "8.8.8.8", "2001:db8::1", "fd00::7", "100.100.100.201"]
)
def test_other_addresses_are_allowed_by_default(address: str) -> None:
    assert EgressPolicy().check(address) is None


def net(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


def test_the_most_specific_network_decides() -> None:
    policy = EgressPolicy(
        allow=net("169.254.10.0/24", "10.1.2.3/32"), deny=net("10.0.0.0/8", "fd00::/8")
    )
    assert policy.check("169.254.10.5") is None, "allowed inside the link-local range"
    assert policy.check("169.254.11.5") is not None
    assert "10.0.0.0/8 is listed in HERALD_EGRESS_DENY" in (policy.check("10.9.9.9") or "")
    assert policy.check("10.1.2.3") is None
    assert policy.check("::ffff:10.9.9.9") is not None, "the IPv4 an IPv6 address stands for"
    assert policy.check("fd00::7") is not None
    # Allowing a range never opens the metadata address inside it: it is more specific.
    broad = EgressPolicy(allow=net("169.254.0.0/16", "0.0.0.0/0"))
    assert broad.check("169.254.1.1") is None
    assert broad.check("169.254.169.254") is not None
    assert EgressPolicy(allow=net("169.254.169.254/32")).check("169.254.169.254") is None
    assert EgressPolicy(allow_loopback=True).check("127.0.0.1") is None
    assert EgressPolicy(allow_loopback=True).check("169.254.169.254") is not None


def test_an_allowed_ipv6_form_does_not_open_its_ipv4_address() -> None:
    policy = EgressPolicy(allow=net("::/0"))
    assert policy.check("::ffff:169.254.169.254") is not None


def test_settings_parse_lists_and_refuse_mistakes(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(
        EgressSettings,
        {
            "HERALD_EGRESS_ALLOW": "169.254.10.0/24, 10.1.2.3",
            "HERALD_EGRESS_DENY": "10.0.0.0/8 fd00::/8",
            "HERALD_EGRESS_ALLOW_LOOPBACK": "true",
        },
        monkeypatch,
    )
    policy = settings.policy()
    assert policy.allow == net("169.254.10.0/24", "10.1.2.3/32")
    assert policy.deny == net("10.0.0.0/8", "fd00::/8")
    assert policy.allow_loopback
    assert settings_from(EgressSettings, {}, monkeypatch).policy() == EgressPolicy()
    empty = {"HERALD_EGRESS_ALLOW": "", "HERALD_EGRESS_DENY": ""}  # as the chart renders none
    assert settings_from(EgressSettings, empty, monkeypatch).policy() == EgressPolicy()
    with pytest.raises(SettingsError) as caught:
        settings_from(EgressSettings, {"HERALD_EGRESS_DENY": "10.0.0.0/8,ten"}, monkeypatch)
    assert caught.value.lines == [
        "HERALD_EGRESS_DENY=10.0.0.0/8,ten: 'ten' is not a network (use CIDRs such as "
        "10.0.0.0/8 or fd00::/8, separated by commas)"
    ]
    with pytest.raises(SettingsError, match=r"both list 10\.0\.0\.0/8"):
        settings_from(
            EgressSettings,
            {"HERALD_EGRESS_DENY": "10.0.0.0/8", "HERALD_EGRESS_ALLOW": "10.0.0.0/8"},
            monkeypatch,
        )


def test_url_problem_only_judges_literal_hosts() -> None:
    policy = EgressPolicy()
    assert policy.url_problem("https://hooks.example.com/x") is None
    assert policy.url_problem("http://localhost:8080/") is None, "a name: checked at connect"
    assert policy.url_problem(None) is None
    assert policy.url_problem("http://[::1/") is None, "not a URL: parse_spec says so"
    assert policy.url_problem("http://user@127.0.0.1/") is not None
