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
