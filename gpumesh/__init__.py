"""gpumesh: a decentralized GPU compute marketplace (SDK, CLI and shared client code)."""

from gpumesh.client import Client, JobFailed, JobHandle, JobStatus
from gpumesh.errors import GpumeshError
from gpumesh.jobspec import InferenceParams, JobSpec, Requirements

__all__ = [
    "Client",
    "GpumeshError",
    "InferenceParams",
    "JobFailed",
    "JobHandle",
    "JobSpec",
    "JobStatus",
    "Requirements",
]
__version__ = "0.1.0"
