"""Provider authentication: one-time signed challenges and opaque session tokens."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from typing import Callable

from coordinator.config import CoordinatorSettings
from coordinator.models import GpuSpec, ProviderRecord, ProviderTier
from coordinator.store.base import Store
from coordinator.verification.hardware import trusted
from gpumesh.amounts import parse_amount
from gpumesh.errors import FailedPrecondition, InvalidArgument, PermissionDenied, Unauthenticated
from gpumesh.identity import challenge_text, normalize_address, verify_signature
from gpumesh.signing import registration_text
from gpumesh.v1 import common_pb2, provider_pb2
from google.protobuf import json_format

MAX_SLOTS = 256
MAX_GPUS = 64
MAX_CPUS = 1 << 16
MAX_MEMORY_MB = 1 << 32  # 4 PiB of host memory
MAX_GPU_MEMORY_MB = 1 << 24  # 16 TiB on one GPU

MAX_CACHED_MODELS = 10_000  # model CIDs a provider may report


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ProviderAuth:
    def __init__(self, store: Store, settings: CoordinatorSettings, clock: Callable[[], float],
                 stake_of: Callable[[str], int] | None = None,
                 is_registered: Callable[[str], bool] | None = None,
                 funder_of: Callable[[str], str] | None = None) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.stake_of = stake_of  # active stake in the ProviderRegistry (settling coordinators)
        self.funder_of = funder_of  # who first sent it payment tokens (settling coordinators)
        self.is_registered = is_registered  # in the ProviderRegistry: the escrow pays no one else

    def issue_challenge(self, address: str) -> tuple[str, float]:
        address = normalize_address(address)
        now = self.clock()
        text = challenge_text(address, secrets.token_hex(16), int(now))
        expires = now + self.settings.challenge_ttl_s
        self.store.put_challenge(address=address, text=text, expires_at=expires)
        return text, expires

    def register(self, req: provider_pb2.RegisterRequest, peer: str = "") -> tuple[ProviderRecord, str, float]:
        """Check the signed challenge (used once), upsert the provider, mint a session token.
        ``peer``: the gRPC peer it registered from (its network is an independence key)."""
        address = normalize_address(req.address)
        _validate_offer(req)
        price = parse_amount(req.price_per_hour, field="price_per_hour")  # before the challenge is spent
        if len(req.sealing_public_key) != 32:
            raise InvalidArgument("a 32-byte X25519 public key is required (sealed inputs are wrapped to it)",
                                  field="sealing_public_key")
        verify_signature(registration_text(req), req.signature, address)
        now = self.clock()
        if not self.store.take_challenge(address=address, text=req.challenge, now=now):
            raise Unauthenticated("challenge unknown, expired or already used; request a new one")
        tier = (
            ProviderTier.CENTRALIZED
            if req.tier == common_pb2.PROVIDER_TIER_CENTRALIZED
            else ProviderTier.OPEN
        )
        if tier is ProviderTier.CENTRALIZED:
            self._check_trusted(address, now)
        self._check_registered(address)
        stake = self._check_stake(address, tier)
        record = self.store.upsert_provider(
            ProviderRecord(
                provider_id="prov_" + uuid.uuid4().hex[:16],
                address=address,
                name=req.name or address[:10],
                hardware_json=json_format.MessageToJson(req.hardware, indent=None),
                gpus=tuple(GpuSpec(g.name, g.memory_total_mb) for g in req.hardware.gpus),
                cpu_count=req.hardware.cpu_count,
                memory_total_mb=req.hardware.memory_total_mb,
                price_per_hour=price,
                tier=tier,
                slots=req.slots or 1,
                runtime=req.runtime or "unknown",
                isolated=req.isolated,
                cached_models=tuple(req.cached_model_cids),
                registered_at=now,
                last_seen=now,
                operator=req.operator.lower(),
                sealing_key=req.sealing_public_key.hex(),
                network=self._network(peer),
                funder=self._funder(address),
                stake=stake,
                # the operator's own capacity, or checks off: claims trusted; else None (checked
                # in its session; earlier checks of the same claimed GPUs stand until then)
                hardware_checks=(trusted([g.name for g in req.hardware.gpus], now)
                                 if tier is ProviderTier.CENTRALIZED or not self.settings.hardware_checks else None),
            )
        )
        token = secrets.token_urlsafe(32)
        expires = now + self.settings.session_ttl_s
        self.store.put_session(token_hash=token_hash(token), provider_id=record.provider_id, expires_at=expires)
        return record, token, expires

    def _check_trusted(self, address: str, now: float) -> None:
        """Centralized capacity is trusted (no spot-checks, referees), so only the operator's own
        wallets may claim it: the configured list, or nodes trusted in the store (the fallback
        launcher trusts each node it launches)."""
        if address.lower() in {a.lower() for a in self.settings.centralized_addresses}:
            return
        if self.store.is_trusted(address, now=now):
            return
        raise PermissionDenied(
            f"{address} is not one of this coordinator's centralized nodes; register as tier open, or have "
            f"the operator run `gpumesh coordinator trust {address}`", field="tier")

    def _check_registered(self, address: str) -> None:
        """A settling coordinator takes work only from providers it can pay: the escrow pays
        registered addresses alone (centralized nodes included)."""
        if self.is_registered is not None and not self.is_registered(address):
            raise FailedPrecondition(
                f"{address} is not registered in this coordinator's ProviderRegistry, so the escrow cannot pay it: "
                "run `gpumesh provider register` (it needs a little gas), then start again", field="address")

    def _check_stake(self, address: str, tier: ProviderTier) -> int | None:
        """Open-market providers need slashable stake to take work (centralized ones are trusted).
        Returns the active stake read (None without a registry)."""
        if self.stake_of is None:
            return None
        active = self.stake_of(address)
        if self.settings.required_stake == 0 or tier is ProviderTier.CENTRALIZED:
            return active
        if active < self.settings.required_stake:
            raise FailedPrecondition(
                f"{address} has {active} staked in the ProviderRegistry; at least {self.settings.required_stake} "
                "is needed to take work (stake, then register again)", field="stake")
        return active

    def _network(self, peer: str) -> str:
        from coordinator.verification.independence import network_of

        if not self.settings.independent_networks:
            return ""
        return network_of(peer, v4_prefix=self.settings.network_prefix_v4, v6_prefix=self.settings.network_prefix_v6)

    def _funder(self, address: str) -> str:
        """Who funded it, unless that is itself or a public funder (an exchange, a faucet)."""
        if self.funder_of is None:
            return ""
        funder = self.funder_of(address).lower()
        public = {a.lower() for a in self.settings.public_funders}
        return "" if funder in public or funder == address.lower() else funder

    def authenticate(self, metadata: tuple[tuple[str, str], ...] | None) -> ProviderRecord:
        """Resolve the ``authorization: Bearer <token>`` metadata to a provider."""
        header = dict(metadata or ()).get("authorization", "")
        if not header.startswith("Bearer "):
            raise Unauthenticated("missing 'authorization: Bearer <session token>' metadata; call Register first")
        provider_id = self.store.session_provider(token_hash(header[7:]), now=self.clock())
        if provider_id is None:
            raise Unauthenticated("session token unknown or expired; register again")
        return self.store.get_provider(provider_id)


def _validate_offer(req: provider_pb2.RegisterRequest) -> None:
    if req.slots > MAX_SLOTS:
        raise InvalidArgument(f"at most {MAX_SLOTS} slots", field="slots")
    if len(req.name) > 128:
        raise InvalidArgument("at most 128 characters", field="name")
    if len(req.operator) > 128:
        raise InvalidArgument("at most 128 characters", field="operator")
    if len(req.cached_model_cids) > MAX_CACHED_MODELS:
        raise InvalidArgument("too many cached models", field="cached_model_cids")
    hw = req.hardware
    for field, value, most in (("cpu_count", hw.cpu_count, MAX_CPUS), ("memory_total_mb", hw.memory_total_mb, MAX_MEMORY_MB)):
        if value > most:
            raise InvalidArgument(f"{value} is more than any host has (at most {most})", field=f"hardware.{field}")
    if len(hw.gpus) > MAX_GPUS:
        raise InvalidArgument(f"at most {MAX_GPUS} GPUs per provider", field="hardware.gpus")
    for i, gpu in enumerate(hw.gpus):
        if not gpu.name:
            raise InvalidArgument("GPU name is empty", field=f"hardware.gpus[{i}].name")
        if gpu.memory_total_mb > MAX_GPU_MEMORY_MB:
            raise InvalidArgument(f"{gpu.memory_total_mb} MiB is more than any GPU has (at most {MAX_GPU_MEMORY_MB})",
                                  field=f"hardware.gpus[{i}].memory_total_mb")
