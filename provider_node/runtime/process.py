"""Plain subprocess runtime: a clean environment and a time limit, but NO isolation."""

from __future__ import annotations

from provider_node.runtime.base import RunResult, RunSpec, base_env, run_process


class ProcessRuntime:
    name = "process"
    isolated = False

    async def run(self, spec: RunSpec) -> RunResult:
        return await run_process(list(spec.argv), spec, base_env(spec), spec.workdir)
