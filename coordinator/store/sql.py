"""The Store port over SQL, shared by the SQLite and PostgreSQL adapters.

One mixin per aggregate, each in its own module, over ``SqlBase`` (``sqlcore``: the connection
an adapter gives and the in-transaction steps several writes share):

    jobs        jobs and their tasks: submit, read, finish, cancel, overdue
    leases      the queue, leases, failed and expired attempts
    results     results, what a check or referee decided, stale checks
    providers   registration, hardware checks, stake, trusted addresses
    settlement  escrowed jobs, slashes, payment claims
    earnings    one wallet's earnings
    auth        challenges, nonces, sessions
    grants      artifact grants, quotas, sealed data keys
    replicas    presence of providers across replicas, pending reasons
    views       the dashboard's read models
    api         the HTTP API's keys, models, files, batches, job events

Each public write is one transaction whose invariants assume it runs alone (SQLite's single
writer; PostgreSQL's SERIALIZABLE). An adapter that aborts a transaction to keep that promise
raises ``RetryTransaction``, and ``@_write`` runs the whole method again.
"""

from __future__ import annotations

from coordinator.store.api import ApiSql
from coordinator.store.auth import AuthSql
from coordinator.store.earnings import EarningsSql
from coordinator.store.grants import ArtifactGrantsSql
from coordinator.store.jobs import JobsSql
from coordinator.store.leases import LeasesSql
from coordinator.store.providers import ProvidersSql
from coordinator.store.replicas import ReplicasSql
from coordinator.store.results import ResultsSql
from coordinator.store.settlement import SettlementSql
from coordinator.store.txn import Conn, RetryTransaction
from coordinator.store.views import ViewsSql

__all__ = ["Conn", "RetryTransaction", "SqlStore"]


class SqlStore(JobsSql, LeasesSql, ResultsSql, ProvidersSql, SettlementSql, EarningsSql, AuthSql,
               ArtifactGrantsSql, ReplicasSql, ViewsSql, ApiSql):
    """All of the Store port but the connection: adapters give ``_tx``, ``_read`` and ``close``."""
