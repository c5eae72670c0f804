"""The HTTP API's tables (mixed into ``SqlStore``): API keys (hashed) bound to wallets, served
models by name, and the OpenAI-style files and batches each owner holds.

Pages are keyset-ordered by ``(created_at, id)`` newest first, so a listing never scans.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from coordinator.store.sqlcore import SqlBase
from coordinator.store.txn import _write
from gpumesh.errors import AlreadyExists, NotFound, ResourceExhausted


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    wallet: str  # the address as its signed requests spell it
    name: str
    spend_cap: int | None
    spent: int
    created_at: float
    revoked_at: float | None = None


@dataclass(frozen=True)
class ModelEntry:
    name: str
    cid: str
    format: str
    size_bytes: int
    min_memory_mb: int
    owned_by: str
    created_at: float
    base: str = ""  # format "lora": the base model's CID


@dataclass(frozen=True)
class JobEvent:
    job_id: str
    seq: int
    created_at: float
    level: str  # info | warn | error
    type: str  # message | metrics
    message: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FileEntry:
    file_id: str
    owner: str
    purpose: str
    filename: str
    bytes: int
    cid: str
    created_at: float


@dataclass(frozen=True)
class BatchEntry:
    batch_id: str
    owner: str
    body: dict[str, Any] = field(default_factory=dict)
    job_id: str = ""
    created_at: float = 0.0


_KEY_COLS = "key_id, wallet, name, spend_cap, spent, created_at, revoked_at"
_FILE_COLS = "file_id, owner, purpose, filename, bytes, cid, created_at"
_ENTRY_COLS = "owner, body_json, job_id, created_at"  # after the id column
_BATCHES, _FINETUNES = ("api_batches", "batch_id"), ("api_finetunes", "ft_id")
_MODEL_COLS = "name, cid, format, size_bytes, min_memory_mb, owned_by, created_at, base"


def _key(r) -> ApiKey:
    return ApiKey(r[0], r[1], r[2], int(r[3]) if r[3] else None, int(r[4]), float(r[5]), r[6])


def _batch(r) -> BatchEntry:
    return BatchEntry(r[0], r[1], json.loads(r[2]), r[3], float(r[4]))


class ApiSql(SqlBase):
    """Keys, models, files and batches of the SQL store."""

    # ---- API keys ---------------------------------------------------------------------------

    @_write
    def put_api_key(self, key_hash: str, key: ApiKey) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO api_keys (key_hash, key_id, wallet, name, spend_cap, spent, created_at) "
                       "VALUES (?,?,?,?,?,?,?)",
                       (key_hash, key.key_id, key.wallet, key.name,
                        "" if key.spend_cap is None else str(key.spend_cap), "0", key.created_at))

    def api_key(self, key_hash: str) -> ApiKey | None:
        rows = self._read(f"SELECT {_KEY_COLS} FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (key_hash,))
        return _key(rows[0]) if rows else None

    def api_keys_of(self, wallet: str) -> list[ApiKey]:
        rows = self._read(f"SELECT {_KEY_COLS} FROM api_keys WHERE wallet = ? ORDER BY created_at", (wallet,))
        return [_key(r) for r in rows]

    @_write
    def revoke_api_key(self, key_id: str, wallet: str, *, now: float) -> bool:
        with self._tx() as db:
            cur = db.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND wallet = ? AND revoked_at IS NULL",
                             (now, key_id, wallet))
            return cur.rowcount > 0

    @_write
    def charge_api_key(self, key_id: str, amount: int) -> int:
        """Add ``amount`` to what the key has committed; ResourceExhausted past its cap. The total."""
        with self._tx() as db:
            row = db.execute("SELECT spend_cap, spent FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
            if row is None:
                raise NotFound(f"no API key {key_id}", field="key_id")
            total = int(row[1]) + amount
            if row[0] and total > int(row[0]):
                raise ResourceExhausted(f"this API key may commit {row[0]} base units; {row[1]} are committed and "
                                        f"this needs {amount} more", field="spend_cap")
            db.execute("UPDATE api_keys SET spent = ? WHERE key_id = ?", (str(max(total, 0)), key_id))
            return total

    # ---- models -----------------------------------------------------------------------------

    @_write
    def put_model(self, entry: ModelEntry, *, replace: bool = False) -> None:
        with self._tx() as db:
            if db.execute("SELECT 1 FROM models WHERE name = ?", (entry.name,)).fetchone() is not None:
                if not replace:
                    raise AlreadyExists(f"a model named {entry.name!r} is registered", field="name")
                db.execute("DELETE FROM models WHERE name = ?", (entry.name,))
            db.execute(f"INSERT INTO models ({_MODEL_COLS}) VALUES (?,?,?,?,?,?,?,?)",
                       (entry.name, entry.cid, entry.format, entry.size_bytes, entry.min_memory_mb, entry.owned_by,
                        entry.created_at, entry.base))

    def get_model(self, name: str) -> ModelEntry | None:
        rows = self._read(f"SELECT {_MODEL_COLS} FROM models WHERE name = ?", (name,))
        return ModelEntry(*rows[0]) if rows else None

    def models_by_cid(self, cid: str) -> list[ModelEntry]:
        return [ModelEntry(*r) for r in self._read(f"SELECT {_MODEL_COLS} FROM models WHERE cid = ?", (cid,))]

    def list_models(self) -> list[ModelEntry]:
        rows = self._read(f"SELECT {_MODEL_COLS} FROM models ORDER BY name")
        return [ModelEntry(*r) for r in rows]

    # ---- fine-tuning jobs and job events ----------------------------------------------------

    def put_finetune(self, entry: BatchEntry) -> None:
        """An OpenAI-style fine-tuning job (the batch entry's shape: id, owner, body, job)."""
        self._put_entry(_FINETUNES, entry)

    def update_finetune(self, ft_id: str, *, body: dict[str, Any], job_id: str | None = None) -> None:
        self._update_entry(_FINETUNES, ft_id, body, job_id)

    def get_finetune(self, ft_id: str, owner: str) -> BatchEntry:
        return self._get_entry(_FINETUNES, ft_id, owner, NotFound(f"No fine-tuning job found with id '{ft_id}'",
                                                                  field="fine_tuning_job_id"))

    def list_finetunes(self, owner: str, *, limit: int = 20, after: str = "") -> list[BatchEntry]:
        return self._list_entries(_FINETUNES, owner, limit, after)

    @_write
    def add_job_event(self, job_id: str, *, level: str, type: str, message: str, data: dict[str, Any] | None = None,
                      now: float) -> int:
        """Append an event to the job's log; its sequence number (1, 2, ...)."""
        with self._tx() as db:
            row = db.execute("SELECT MAX(seq) FROM job_events WHERE job_id = ?", (job_id,)).fetchone()
            seq = int(row[0] or 0) + 1
            db.execute("INSERT INTO job_events (job_id, seq, created_at, level, type, message, data_json) "
                       "VALUES (?,?,?,?,?,?,?)", (job_id, seq, now, level, type, message, json.dumps(data or {})))
            return seq

    def job_events(self, job_id: str, *, after: int = 0, limit: int = 100, before: int | None = None,
                   newest_first: bool = False) -> list[JobEvent]:
        """The job's events after sequence number ``after`` (and before ``before``), oldest first
        unless ``newest_first``."""
        rows = self._read("SELECT job_id, seq, created_at, level, type, message, data_json FROM job_events "
                          f"WHERE job_id = ? AND seq > ? AND seq < ? ORDER BY seq {'DESC' if newest_first else ''} "
                          "LIMIT ?", (job_id, after, 2**62 if before is None else before, limit))
        return [JobEvent(r[0], int(r[1]), float(r[2]), r[3], r[4], r[5], json.loads(r[6])) for r in rows]

    def has_job_event(self, job_id: str, type: str) -> bool:
        return bool(self._read("SELECT 1 FROM job_events WHERE job_id = ? AND type = ? LIMIT 1", (job_id, type)))

    # ---- files ------------------------------------------------------------------------------

    @_write
    def put_file(self, entry: FileEntry) -> None:
        with self._tx() as db:
            db.execute(f"INSERT INTO api_files ({_FILE_COLS}) VALUES (?,?,?,?,?,?,?) ON CONFLICT (file_id) DO NOTHING",
                       (entry.file_id, entry.owner.lower(), entry.purpose, entry.filename, entry.bytes, entry.cid,
                        entry.created_at))

    def get_file(self, file_id: str, owner: str) -> FileEntry:
        rows = self._read(f"SELECT {_FILE_COLS} FROM api_files WHERE file_id = ? AND owner = ? AND deleted = 0",
                          (file_id, owner.lower()))
        if not rows:
            raise NotFound(f"No such File object: {file_id}", field="file_id")
        return FileEntry(*rows[0])

    def list_files(self, owner: str, *, purpose: str = "", limit: int = 100, after: str = "") -> list[FileEntry]:
        where, args = ["deleted = 0"], []
        if purpose:
            where.append("purpose = ?")
            args.append(purpose)
        rows = self._owned_page("api_files", "file_id", _FILE_COLS, owner, where, args, limit=limit, after=after)
        return [FileEntry(*r) for r in rows]

    def _owned_page(self, table: str, id_col: str, cols: str, owner: str, where: list[str], args: list,
                    *, limit: int, after: str) -> list[tuple]:
        """``owner``'s rows of ``table`` matching ``where``, newest first, from after the row ``after``."""
        where, args = ["owner = ?", *where], [owner.lower(), *args]
        if after:
            mark = self._read(f"SELECT created_at FROM {table} WHERE {id_col} = ? AND owner = ?",
                              (after, owner.lower()))
            if mark:
                where.append(f"(created_at, {id_col}) < (?, ?)")
                args += [mark[0][0], after]
        return self._read(f"SELECT {cols} FROM {table} WHERE {' AND '.join(where)} "
                          f"ORDER BY created_at DESC, {id_col} DESC LIMIT ?", (*args, limit))

    @_write
    def delete_file(self, file_id: str, owner: str) -> bool:
        with self._tx() as db:
            cur = db.execute("UPDATE api_files SET deleted = 1 WHERE file_id = ? AND owner = ? AND deleted = 0",
                             (file_id, owner.lower()))
            return cur.rowcount > 0

    # ---- batches ----------------------------------------------------------------------------

    def put_batch(self, entry: BatchEntry) -> None:
        self._put_entry(_BATCHES, entry)

    def update_batch(self, batch_id: str, *, body: dict[str, Any], job_id: str | None = None) -> None:
        self._update_entry(_BATCHES, batch_id, body, job_id)

    def get_batch(self, batch_id: str, owner: str) -> BatchEntry:
        return self._get_entry(_BATCHES, batch_id, owner, NotFound(f"No such Batch object: {batch_id}",
                                                                   field="batch_id"))

    def list_batches(self, owner: str, *, limit: int = 20, after: str = "") -> list[BatchEntry]:
        return self._list_entries(_BATCHES, owner, limit, after)

    # batches and fine-tuning jobs: (id, owner, body, job) rows of a table each

    @_write
    def _put_entry(self, table: tuple[str, str], entry: BatchEntry) -> None:
        name, id_col = table
        with self._tx() as db:
            db.execute(f"INSERT INTO {name} ({id_col}, {_ENTRY_COLS}) VALUES (?,?,?,?,?)",
                       (entry.batch_id, entry.owner.lower(), json.dumps(entry.body), entry.job_id, entry.created_at))

    @_write
    def _update_entry(self, table: tuple[str, str], entry_id: str, body: dict[str, Any], job_id: str | None) -> None:
        name, id_col = table
        with self._tx() as db:
            if job_id is None:
                db.execute(f"UPDATE {name} SET body_json = ? WHERE {id_col} = ?", (json.dumps(body), entry_id))
            else:
                db.execute(f"UPDATE {name} SET body_json = ?, job_id = ? WHERE {id_col} = ?",
                           (json.dumps(body), job_id, entry_id))

    def _get_entry(self, table: tuple[str, str], entry_id: str, owner: str, missing: NotFound) -> BatchEntry:
        name, id_col = table
        rows = self._read(f"SELECT {id_col}, {_ENTRY_COLS} FROM {name} WHERE {id_col} = ? AND owner = ?",
                          (entry_id, owner.lower()))
        if not rows:
            raise missing
        return _batch(rows[0])

    def _list_entries(self, table: tuple[str, str], owner: str, limit: int, after: str) -> list[BatchEntry]:
        name, id_col = table
        rows = self._owned_page(name, id_col, f"{id_col}, {_ENTRY_COLS}", owner, [], [], limit=limit, after=after)
        return [_batch(r) for r in rows]

    def jobs_of(self, submitter: str, *, limit: int = 50, before: tuple[float, str] | None = None):
        """``submitter``'s jobs, newest first (keyset pages, as ``recent_jobs``)."""
        from coordinator.store.rows import JOB_COLS, job_row

        where, args = ["submitter = ?"], [submitter]
        if before is not None:
            where.append("(created_at, job_id) < (?, ?)")
            args += [before[0], before[1]]
        rows = self._read(f"SELECT {JOB_COLS} FROM jobs WHERE {' AND '.join(where)} "
                          "ORDER BY created_at DESC, job_id DESC LIMIT ?", (*args, limit))
        return [job_row(r) for r in rows]
