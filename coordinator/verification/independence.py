"""Who counts as independent of whom: the keys that tie provider identities to one party. Pure.

Two identities are *not* independent when they share any key: the declared operator (an honest
operator's fleet), the network they connect from (a /24 for IPv4, a /48 for IPv6: one host, one
site or one hosting customer), or the address that funded their stake (one wallet behind several
identities). A check, a replica and a referee never go to a provider that shares a key with the
result it checks, so a Sybil ring must spread over networks and funding wallets, each of which
costs it, before its members can vouch for one another. Keys are strings, so an exclusion list
is a set; the operator key is the bare operator id (what exclusions held before networks and
funders were keys too).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import unquote

IPV4_PREFIX, IPV6_PREFIX = 24, 48


def network_of(peer: str, *, v4_prefix: int = IPV4_PREFIX, v6_prefix: int = IPV6_PREFIX) -> str:
    """The network of a gRPC peer string (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``), as a CIDR, or ``""``
    for a peer without an IP (a Unix socket, an in-process channel). IPv4-mapped IPv6 is IPv4."""
    kind, _, rest = unquote(peer).partition(":")  # gRPC writes ipv6:%5B::1%5D:port
    if kind not in ("ipv4", "ipv6"):
        return ""
    host = rest.rsplit(":", 1)[0].strip("[]") if kind == "ipv4" or rest.startswith("[") else rest
    host = host.split("%", 1)[0]  # an IPv6 zone
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = v4_prefix if ip.version == 4 else v6_prefix
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def independence_keys(operator_id: str, network: str = "", funder: str = "") -> tuple[str, ...]:
    """The keys of one identity: its operator id, and its network and stake funder when known."""
    keys = [operator_id.lower()]
    if network:
        keys.append(f"net:{network}")
    if funder:
        keys.append(f"funder:{funder.lower()}")
    return tuple(keys)
