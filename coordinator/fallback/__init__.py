"""On-demand centralized capacity for tasks the open market cannot serve (DESIGN.md section 8).

``FallbackManager`` decides what to launch; a ``Provisioner`` (``SkyPilotProvisioner``, or
``NullProvisioner`` when none is configured) launches it. ``sky`` is imported only on launch.
"""

from __future__ import annotations

from coordinator.fallback.accelerators import GPU_CATALOG, candidates, choose_resources
from coordinator.fallback.base import (
    CapacityRequest,
    FallbackUnavailable,
    IllegalLaunchTransition,
    Launch,
    LaunchState,
    NoMatchingAccelerator,
    NullProvisioner,
    Provisioner,
)
from coordinator.fallback.manager import FallbackManager, Need
from coordinator.fallback.schema import task_yaml_problems, validate_task_yaml
from coordinator.fallback.skypilot import SkyPilotConfig, SkyPilotProvisioner

__all__ = [
    "GPU_CATALOG", "CapacityRequest", "FallbackManager", "FallbackUnavailable", "IllegalLaunchTransition", "Launch",
    "LaunchState", "Need", "NoMatchingAccelerator", "NullProvisioner", "Provisioner", "SkyPilotConfig",
    "SkyPilotProvisioner", "candidates", "choose_resources", "task_yaml_problems", "validate_task_yaml",
]
