"""Independence keys (operator, network, stake funder) and stake-aware standing. Pure."""

from __future__ import annotations

from dataclasses import replace

import pytest

from coordinator.models import GpuSpec, ProviderRecord, ProviderTier
from coordinator.standing import standing
from coordinator.verification import hardware as hw
from coordinator.verification.independence import independence_keys, network_of


@pytest.mark.parametrize(("peer", "net"), [
    ("ipv4:203.0.113.7:50123", "203.0.113.0/24"),
    ("ipv4:203.0.113.250:1", "203.0.113.0/24"),
    ("ipv6:[2001:db8:1234:5678::1]:443", "2001:db8:1234::/48"),
    ("ipv6:[::ffff:198.51.100.9]:9", "198.51.100.0/24"),  # IPv4-mapped: the IPv4 network
    ("ipv6:[::1]:5", "::/48"),
    ("ipv6:%5B2001:db8:1:2::3%5D:443", "2001:db8:1::/48"),  # as gRPC writes it
    ("unix:/tmp/sock", ""), ("", ""), ("ipv4:not-an-ip:1", ""),
])
def test_the_network_of_a_peer(peer, net):
    assert network_of(peer) == net


def test_prefixes_are_settings():
    assert network_of("ipv4:203.0.113.7:1", v4_prefix=16) == "203.0.0.0/16"


def test_keys_tie_identities_by_operator_network_and_funder():
    a = independence_keys("0xOpA", "203.0.113.0/24", "0xFunder")
    assert a == ("0xopa", "net:203.0.113.0/24", "funder:0xfunder")
    b = independence_keys("0xopb", "198.51.100.0/24", "0xfunder")
    assert set(a) & set(b) == {"funder:0xfunder"}  # one wallet funded both: not independent
    assert independence_keys("0xopc") == ("0xopc",)


def _record(**kw) -> ProviderRecord:
    return replace(ProviderRecord("p", "0x" + "1" * 40, "p", "{}", (GpuSpec("H100", 80_000),), 8, 64_000, 10,
                                  ProviderTier.OPEN, 1, "bwrap", True,
                                  hardware_checks=hw.trusted(["H100"], 0.0)), **kw)


def test_a_provider_slashed_below_the_minimum_stake_is_not_eligible():
    kw = {"now": 0.0, "half_life_s": 1e9, "max_invalid_rate": 0.1}
    assert standing(_record(stake=100), min_stake=100, **kw).eligible
    assert not standing(_record(stake=99), min_stake=100, **kw).eligible
    assert not standing(_record(stake=0), min_stake=1, **kw).eligible
    assert standing(_record(stake=0), min_stake=0, **kw).eligible  # no stake required
    assert standing(_record(stake=None), min_stake=100, **kw).eligible  # not read (no registry)
    assert standing(_record(stake=0, tier=ProviderTier.CENTRALIZED), min_stake=100, **kw).eligible
    assert _record(network="203.0.113.0/24", funder="0xf").independence_keys == (
        "0x" + "1" * 40, "net:203.0.113.0/24", "funder:0xf")
