"""A read-only web dashboard of one coordinator: providers, jobs, reputation, payouts."""

from coordinator.dashboard.app import Dashboard, parse_listen

__all__ = ["Dashboard", "parse_listen"]
