"""The egress policy: which addresses Herald delivers to.

Anyone who may create a PublishingTarget chooses where the workers POST, so by default the
workers refuse addresses no target should need: link-local ones (169.254.0.0/16,
fe80::/10), where clouds serve instance metadata and credentials, the metadata services'
other addresses, and loopback (the worker's own host) unless it is allowed explicitly.
``HERALD_EGRESS_DENY`` adds networks (internal ranges, say); ``HERALD_EGRESS_ALLOW`` makes
exceptions. The most specific network that matches decides; an allowed network of the same
size as a built-in one wins over it.

The worker checks every address a host *resolves to*, when it connects (so a DNS answer
that changes after the target was accepted does not get past it); the operator,
``herald targets apply`` and ``herald worker --targets`` check a URL whose host is a
literal address when the target is registered, in every spelling a resolver accepts
(``0xa9fea9fe``, ``2852039166``, ``0251.0376.0251.0376``, ``169.254.43518``,
``[::ffff:169.254.169.254]``), so the mistake shows at apply time.

Pure code: no I/O, no HTTP client (the worker's connector applies it).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_SETTING = "HERALD_EGRESS_ALLOW"
DENY_SETTING = "HERALD_EGRESS_DENY"
LOOPBACK_SETTING = "HERALD_EGRESS_ALLOW_LOOPBACK"
ALLOW_VALUE = "worker.egress.allow"
DENY_VALUE = "worker.egress.deny"
LOOPBACK_VALUE = "worker.egress.allowLoopback"


@dataclasses.dataclass(frozen=True)
class Rule:
    network: Network
    what: str
    """What the network is, for messages: "link-local", "loopback", ..."""
    builtin: bool = True


def _rules(what: str, *cidrs: str) -> tuple[Rule, ...]:
    return tuple(Rule(ipaddress.ip_network(c), what) for c in cidrs)


METADATA = (
    _rules("a cloud metadata service (AWS, GCP, Azure, OpenStack, ...)", "169.254.169.254/32")
    + _rules("the AWS metadata service over IPv6", "fd00:ec2::254/128")
    + _rules("the Alibaba Cloud metadata service", "100.100.100.200/32")
    + _rules("the Oracle Cloud metadata service", "192.0.0.192/32")
)
LINK_LOCAL = _rules("link-local", "169.254.0.0/16", "fe80::/10")
LOOPBACK = _rules("loopback (the worker's own host)", "127.0.0.0/8", "::1/128") + _rules(
    "the unspecified address (connects to the worker's own host)", "0.0.0.0/8", "::/128"
)

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_V4_COMPATIBLE = ipaddress.ip_network("::/96")


def parse_networks(text: str | None) -> tuple[Network, ...]:
    """CIDRs separated by commas or whitespace (a bare address is a /32 or /128)."""
    networks = []
    for item in re.split(r"[\s,]+", text or ""):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(
                f"{item!r} is not a network (use CIDRs such as 10.0.0.0/8 or fd00::/8, "
                "separated by commas)"
            ) from None
    return tuple(networks)


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for: IPv4-mapped (::ffff:a.b.c.d),
    IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::a.b.c.d) or 6to4 (2002:AABB:CCDD::)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (address in _V4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _ipv4_part(text: str) -> int | None:
    """One part of an IPv4 address as inet_aton reads it: 0x hex, 0 octal, or decimal."""
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", text):
        return int(text[2:], 16)
    if re.fullmatch(r"0[0-7]+", text):
        return int(text, 8)
    if re.fullmatch(r"0|[1-9][0-9]*", text):
        return int(text)
    return None


def literal_address(host: str) -> Address | None:
    """The address a URL host names literally, in any spelling a resolver (inet_aton)
    accepts, or None when the host is a name. ``host`` is as urlsplit gives it (IPv6
    without brackets)."""
    host = host.strip("[]")
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return None
    parts = host.removesuffix(".").split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = [_ipv4_part(p) for p in parts]
    if any(v is None for v in values):
        return None
    numbers = [v for v in values if v is not None]
    *leading, last = numbers
    if any(v > 0xFF for v in leading) or last >= 1 << (8 * (5 - len(numbers))):
        return None
    value = last
    for i, v in enumerate(leading):
        value |= v << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


@dataclasses.dataclass(frozen=True)
class EgressPolicy:
    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()
    allow_loopback: bool = False

    def __post_init__(self) -> None:
        both = sorted(set(self.allow) & set(self.deny), key=str)
        if both:
            raise ValueError(
                f"{ALLOW_SETTING} and {DENY_SETTING} both list {both[0]}: keep it in one"
            )

    @property
    def rules(self) -> tuple[Rule, ...]:
        builtin = METADATA + LINK_LOCAL + (() if self.allow_loopback else LOOPBACK)
        return builtin + tuple(Rule(n, f"listed in {DENY_SETTING}", False) for n in self.deny)

    def describe(self) -> str:
        """The policy in one line, for logs."""
        denied = ", ".join(str(r.network) for r in self.rules)
        allowed = ", ".join(str(n) for n in self.allow) or "none"
        return f"denied: {denied}; allowed exceptions: {allowed}"

    def _refusal(self, address: Address) -> Rule | None:
        deny = max(
            (r for r in self.rules if address in r.network),
            key=lambda r: r.network.prefixlen,
            default=None,
        )
        if deny is None:
            return None
        allowed = max(
            (n.prefixlen for n in self.allow if address in n),
            default=-1,
        )
        return None if allowed >= deny.network.prefixlen else deny

    def check(self, address: str | Address) -> str | None:
        """Why the policy refuses ``address`` (a sentence naming the rule and the setting
        that changes it), or None when it may be delivered to. An IPv6 address standing
        for an IPv4 one is refused when either is."""
        if isinstance(address, str):
            address = ipaddress.ip_address(address.split("%", 1)[0])
        forms: list[Address] = [address]
        if isinstance(address, ipaddress.IPv6Address) and (v4 := embedded_ipv4(address)):
            forms.append(v4)
        for form in forms:
            rule = self._refusal(form)
            if rule is None:
                continue
            shown = str(form) if form == address else f"{address} (that is {form})"
            if not rule.builtin:
                fix = f"remove it from {DENY_SETTING} (chart value {DENY_VALUE})"
            elif rule in LOOPBACK:
                fix = f"set {LOOPBACK_SETTING}=true (chart value {LOOPBACK_VALUE})"
            else:
                fix = f"add {form} to {ALLOW_SETTING} (chart value {ALLOW_VALUE})"
            return (
                f"the egress policy refuses {shown}: {rule.network} is {rule.what}; to "
                f"deliver there, {fix}"
            )
        return None

    def url_problem(self, url: str | None) -> str | None:
        """Why the policy refuses ``url``'s host when it is a literal address, or None
        (a host name is checked when the worker resolves it)."""
        if not url:
            return None
        try:
            host = urlsplit(url).hostname
        except ValueError:
            return None
        address = literal_address(host) if host else None
        return None if address is None else self.check(address)


def policy(
    allow: Iterable[Network] = (), deny: Iterable[Network] = (), *, allow_loopback: bool = False
) -> EgressPolicy:
    return EgressPolicy(tuple(allow), tuple(deny), allow_loopback)
