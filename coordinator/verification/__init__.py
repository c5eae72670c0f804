"""Spot-checked redundant execution: when to replicate a task (``policy``) and how to compare the
results (``compare``)."""

from coordinator.verification.policy import ProviderTrack, ReplicationPolicy, p_floor

__all__ = ["ProviderTrack", "ReplicationPolicy", "p_floor"]
