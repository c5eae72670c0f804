"""Several coordinator replicas on one PostgreSQL database: one elected leader runs the
scheduler and the background loops; every replica serves the API and its providers' streams."""

from coordinator.cluster.leader import AdvisoryLockLeadership, Leadership, SoloLeadership
from coordinator.cluster.relay import PgSignalRelay

__all__ = ["AdvisoryLockLeadership", "Leadership", "PgSignalRelay", "SoloLeadership"]
