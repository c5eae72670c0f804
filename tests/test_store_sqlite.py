import sqlite3

import pytest

from coordinator.models import JobState
from coordinator.store.sqlite import SqliteStore
from tests.store_contract import *  # noqa: F403  (the shared Store contract)
from tests.store_contract import lease_all, make_job, make_provider


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(tmp_path / "c.db")
    yield s
    s.close()


def test_state_survives_reopening_the_file(tmp_path):
    path = tmp_path / "c.db"
    s = SqliteStore(path)
    make_job(s, n=2)
    make_provider(s)
    lease_all(s)
    s.close()  # a crash leaves the same file: every transaction was committed
    s2 = SqliteStore(path)
    assert s2.get_job("job_1").state is JobState.RUNNING
    assert [t.state.value for t in s2.list_tasks("job_1")] == ["LEASED", "LEASED"]
    s2.close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_an_older_database_gains_the_new_columns(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE tasks (task_id TEXT PRIMARY KEY, job_id TEXT NOT NULL, idx INTEGER NOT NULL, state TEXT NOT NULL,
            input_cid TEXT NOT NULL, prompts INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
            provider_id TEXT NOT NULL DEFAULT '', lease_id TEXT NOT NULL DEFAULT '',
            lease_expires_at REAL NOT NULL DEFAULT 0, output_cid TEXT NOT NULL DEFAULT '',
            signature BLOB NOT NULL DEFAULT x'', metrics_json TEXT NOT NULL DEFAULT '',
            error TEXT NOT NULL DEFAULT '', leased_at REAL NOT NULL DEFAULT 0, submitted_at REAL NOT NULL DEFAULT 0,
            price_per_hour TEXT NOT NULL DEFAULT '0', queued_at REAL NOT NULL, updated_at REAL NOT NULL);
        CREATE INDEX tasks_job ON tasks(job_id, idx);
    """)
    db.close()
    s = SqliteStore(path)
    make_job(s, n=1)
    (task,) = s.list_tasks("job_1")
    assert task.role.value == "primary" and task.exclude == () and task.verdict == ""
    s.close()
