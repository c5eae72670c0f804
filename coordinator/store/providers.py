"""Providers in the SQL store: registration, hardware checks, stake, liveness, and the operator's
trusted (centralized) addresses. A mixin of ``SqlStore``.
"""

from __future__ import annotations

import json
from typing import Sequence

from coordinator.models import ProviderRecord
from coordinator.store.rows import checks_json, provider_row
from coordinator.store.sqlcore import SqlBase
from coordinator.store.txn import _write
from coordinator.verification.hardware import DeviceCheck
from gpumesh.errors import NotFound


class ProvidersSql(SqlBase):
    """Mixed into ``SqlStore``."""

    @_write
    def upsert_provider(self, record: ProviderRecord) -> ProviderRecord:
        gpus = json.dumps([{"name": g.name, "memory_total_mb": g.memory_total_mb} for g in record.gpus])
        with self._tx() as db:
            db.execute(
                "INSERT INTO providers (provider_id, address, name, hardware_json, gpus_json, cpu_count, "
                "memory_total_mb, price_per_hour, tier, slots, runtime, isolated, cached_models_json, "
                "registered_at, last_seen, operator, sealing_key, network, funder, stake, hardware_checks) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(address) DO UPDATE SET name = excluded.name, "
                "hardware_json = excluded.hardware_json, gpus_json = excluded.gpus_json, "
                "cpu_count = excluded.cpu_count, memory_total_mb = excluded.memory_total_mb, "
                "price_per_hour = excluded.price_per_hour, tier = excluded.tier, slots = excluded.slots, "
                "runtime = excluded.runtime, isolated = excluded.isolated, "
                "cached_models_json = excluded.cached_models_json, last_seen = excluded.last_seen, "
                "operator = excluded.operator, sealing_key = excluded.sealing_key, network = excluded.network, "
                "funder = excluded.funder, stake = excluded.stake, "
                # checks of the same claimed GPUs stand until the next check; a new claim is unchecked
                "hardware_checks = COALESCE(excluded.hardware_checks, CASE WHEN providers.gpus_json = "
                "excluded.gpus_json THEN providers.hardware_checks END)",
                (record.provider_id, record.address, record.name, record.hardware_json, gpus,
                 record.cpu_count, record.memory_total_mb, str(record.price_per_hour), record.tier.value,
                 record.slots, record.runtime, int(record.isolated), json.dumps(list(record.cached_models)),
                 record.registered_at, record.last_seen, record.operator, record.sealing_key, record.network,
                 record.funder, "" if record.stake is None else str(record.stake),
                 checks_json(record.hardware_checks)),
            )
            row = db.execute(
                "SELECT * FROM providers WHERE address = ?", (record.address,)
            ).fetchone()
        return provider_row(row)

    @_write
    def set_provider_checks(self, provider_id: str, checks: Sequence[DeviceCheck]) -> None:
        with self._tx() as db:
            db.execute("UPDATE providers SET hardware_checks = ? WHERE provider_id = ?",
                       (checks_json(checks), provider_id))

    @_write
    def set_provider_stake(self, address: str, stake: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE providers SET stake = ? WHERE lower(address) = ?", (str(stake), address.lower()))

    def get_provider(self, provider_id: str) -> ProviderRecord:
        rows = self._read("SELECT * FROM providers WHERE provider_id = ?", (provider_id,))
        if not rows:
            raise NotFound(f"provider {provider_id!r} not found", field="provider_id")
        return provider_row(rows[0])

    def provider_by_address(self, address: str) -> ProviderRecord | None:
        rows = self._read("SELECT * FROM providers WHERE lower(address) = ?", (address.lower(),))
        return provider_row(rows[0]) if rows else None

    def list_providers(self) -> list[ProviderRecord]:
        return [provider_row(r) for r in self._read("SELECT * FROM providers ORDER BY registered_at")]

    @_write
    def touch_provider(self, provider_id: str, *, now: float) -> None:
        with self._tx() as db:
            db.execute("UPDATE providers SET last_seen = ? WHERE provider_id = ?", (now, provider_id))

    # ---- the operator's trusted (centralized) nodes ----------------------------------------------

    @_write
    def trust_address(self, address: str, *, note: str = "", expires_at: float | None = None) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO trusted (address, note, expires_at) VALUES (?,?,?) ON CONFLICT (address) DO UPDATE "
                       "SET note = excluded.note, expires_at = excluded.expires_at",
                       (address.lower(), note[:200], expires_at))

    @_write
    def distrust_address(self, address: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM trusted WHERE address = ?", (address.lower(),)).rowcount == 1

    def is_trusted(self, address: str, *, now: float) -> bool:
        return bool(self._read("SELECT 1 FROM trusted WHERE address = ? AND (expires_at IS NULL OR expires_at > ?)",
                               (address.lower(), now)))
