"""Spot-checked redundant execution: when to replicate a task, and how to compare results."""

from coordinator.verification.policy import ProviderTrack, ReplicationPolicy, p_floor

__all__ = ["ProviderTrack", "ReplicationPolicy", "p_floor"]
