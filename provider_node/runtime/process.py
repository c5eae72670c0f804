"""Plain subprocess runtime: a clean environment, a time limit and a process group, but NO
isolation: the workload can reach the network and every host file the daemon's user can."""

from __future__ import annotations

import sys
from pathlib import Path

from provider_node.runtime.base import RunResult, RunSpec, base_env, run_process


class ProcessRuntime:
    name = "process"
    isolated = False
    python = sys.executable

    async def run(self, spec: RunSpec) -> RunResult:
        return await run_process(spec.argv, spec, base_env(spec))

    def visible_paths(self, work_root: Path) -> list[Path]:
        return [Path("/")]  # everything the daemon's user can read
