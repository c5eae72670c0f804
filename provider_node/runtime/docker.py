"""Docker runtime (Docker SDK): each task runs in a fresh container of an image pinned by digest,
with no network, a read-only root, a size-limited tmpfs for scratch (HOME and TMPDIR), every
capability dropped, no-new-privileges, a non-root user, memory and pids limits, and the
requested GPUs as device requests (NVIDIA container toolkit). The task directory (inputs and
outputs) is the only writable host path; models are mounted read-only.

The image carries the workload environment (``docker/worker-torch.Dockerfile``), or, with
``host_env``, only the operating-system base while the host's Python environment is mounted
read-only at its own paths (how bubblewrap runs it; :func:`provider_node.runtime.rootfs`
builds such a base).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpumesh.errors import FailedPrecondition, InvalidArgument, Unavailable
from provider_node.runtime.base import GRACE_S, TAIL_BYTES, RunResult, RunSpec, base_env
from provider_node.runtime.hostenv import python_roots

log = logging.getLogger(__name__)

# ``sha256:<id>`` (a local image ID, itself a content hash) or ``name@sha256:<digest>``.
PINNED = re.compile(r"^(?:(?P<repo>[^@\s]+)@)?sha256:[0-9a-f]{64}$")
OWNER_LABEL = "io.gpumesh.owner"  # the work root of the daemon that started the container
TASK_LABEL = "io.gpumesh.task"
NOBODY = "65534:65534"
SCRATCH = "/tmp"
KILLED = -9  # RunResult's "killed by SIGKILL"


@dataclass(frozen=True)
class DockerOptions:
    image: str  # pinned: name@sha256:<digest> or sha256:<image id>
    host_env: bool = False  # mount the host's Python environment instead of using the image's
    python: str = "python"  # the image's interpreter (on its PATH); ignored with host_env
    user: str = NOBODY  # uid:gid, never root
    memory_mb: int = 8192  # cgroup memory limit (and swap: none beyond it) unless the task sets one
    pids_limit: int = 4096
    scratch_mb: int = 2048  # the tmpfs at /tmp, also the size of /dev/shm
    base_url: str = ""  # "" = DOCKER_HOST or the default socket
    gpu_driver: str = "nvidia"

    def __post_init__(self) -> None:
        if not PINNED.match(self.image):
            raise InvalidArgument(
                f"docker image {self.image!r} is not pinned: use name@sha256:<digest> or sha256:<image id>",
                field="docker_image",
            )
        uid, _, gid = self.user.partition(":")
        if not (uid.isdigit() and (gid.isdigit() or not gid)) or uid == "0" or gid == "0":
            raise InvalidArgument(f"docker user {self.user!r} must be a numeric non-root uid[:gid]",
                                  field="docker_user")
        for name in ("memory_mb", "pids_limit", "scratch_mb"):
            if getattr(self, name) <= 0:
                raise InvalidArgument(f"{name} must be positive", field=f"docker_{name}")


def _client(base_url: str) -> Any:
    import docker

    return docker.DockerClient(base_url=base_url) if base_url else docker.from_env()


class DockerRuntime:
    name = "docker"
    isolated = True

    def __init__(self, options: DockerOptions, *, client: Any = None) -> None:
        self.options = options
        self._client = client
        self._image_id: str | None = None

    @property
    def python(self) -> str:
        return sys.executable if self.options.host_env else self.options.python

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = _client(self.options.base_url)
        return self._client

    def image_id(self) -> str:
        """The local image the pin names, pulled by digest if absent; FailedPrecondition when
        it cannot be had or is not what the pin says."""
        if self._image_id is None:
            self._image_id = resolve_image(self.client, self.options.image)
        return self._image_id

    # -- container configuration (pure: unit-tested) ---------------------------------------

    def container_config(self, spec: RunSpec, image_id: str) -> dict[str, Any]:
        """Keyword arguments for ``containers.create`` running ``spec``."""
        from docker.types import DeviceRequest, LogConfig, Mount

        opts = self.options
        workdir = spec.workdir.resolve()
        ro = [p.resolve() for p in spec.ro_paths]
        if opts.host_env:
            ro += [p for p in python_roots(workdir) if p not in ro]
        mounts = [Mount(str(p), str(p), type="bind", read_only=True) for p in ro]
        mounts.append(Mount(str(workdir), str(workdir), type="bind", read_only=False))
        memory_mb = spec.memory_limit_mb or opts.memory_mb
        env = base_env(spec)
        env.pop("CUDA_VISIBLE_DEVICES", None)  # the container sees only its GPUs, numbered from 0
        env.update(HOME=SCRATCH, TMPDIR=SCRATCH)
        if not opts.host_env:
            env.pop("PATH")  # the image's own, and its own libraries
            env.pop("LD_LIBRARY_PATH", None)
        env.update(spec.env)
        config: dict[str, Any] = dict(
            image=image_id,
            command=list(spec.argv),
            user=opts.user,
            working_dir=str(workdir),
            environment=env,
            network_mode="none",
            read_only=True,
            tmpfs={SCRATCH: f"rw,exec,nosuid,nodev,size={opts.scratch_mb}m,mode=1777"},
            shm_size=f"{opts.scratch_mb}m",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            mem_limit=f"{memory_mb}m",
            memswap_limit=f"{memory_mb}m",
            pids_limit=opts.pids_limit,
            init=True,  # an init as PID 1 reaps and forwards signals
            mounts=mounts,
            labels={OWNER_LABEL: str(workdir.parent), TASK_LABEL: workdir.name},
            log_config=LogConfig(type="json-file", config={"max-size": "1m", "max-file": "1"}),
            detach=True,
        )
        if spec.gpus:
            config["device_requests"] = [DeviceRequest(
                driver=opts.gpu_driver, device_ids=[str(i) for i in spec.gpus], capabilities=[["gpu"]],
            )]
        return config

    # -- running ------------------------------------------------------------------------------

    async def run(self, spec: RunSpec) -> RunResult:
        """Create, start and wait for the task's container; kill it on timeout or cancellation;
        always remove it."""
        started = time.monotonic()
        container = await asyncio.to_thread(self._create, spec)
        try:
            timed_out = await asyncio.to_thread(self._start_and_wait, container, spec.timeout_s)
            return await asyncio.to_thread(self._result, container, timed_out, started, spec)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(_kill, container))
            raise
        finally:
            await asyncio.shield(asyncio.to_thread(_remove, container))

    def _create(self, spec: RunSpec) -> Any:
        import docker.errors

        _give_to(spec.workdir, self.options.user)
        try:
            return self.client.containers.create(**self.container_config(spec, self.image_id()))
        except docker.errors.DockerException as exc:
            raise Unavailable(f"docker could not create the task container: {exc}") from exc

    @staticmethod
    def _start_and_wait(container: Any, timeout_s: float) -> bool:
        """True when the container outlived ``timeout_s`` and was stopped (SIGTERM, then SIGKILL)."""
        import requests

        container.start()
        try:
            container.wait(timeout=timeout_s)
            return False
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            container.stop(timeout=int(GRACE_S))
            container.wait(timeout=60)
            return True

    def _result(self, container: Any, timed_out: bool, started: float, spec: RunSpec) -> RunResult:
        container.reload()
        state = container.attrs["State"]
        stdout = _tail(container.logs(stdout=True, stderr=False))
        stderr = _tail(container.logs(stdout=False, stderr=True))
        code = int(state.get("ExitCode", -1))
        if state.get("OOMKilled"):
            memory_mb = spec.memory_limit_mb or self.options.memory_mb
            stderr = _tail((stderr + f"\n[gpumesh] killed: out of memory (limit {memory_mb} MiB)\n").encode())
            code = KILLED
        elif timed_out:
            code = KILLED
        return RunResult(exit_code=code, duration_s=time.monotonic() - started, timed_out=timed_out,
                         stdout_tail=stdout, stderr_tail=stderr)

    def remove_stale(self, owner: Path) -> int:
        """Remove containers a previous run of the daemon with work root ``owner`` left behind."""
        stale = self.client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={owner.resolve()}"})
        for container in stale:
            _remove(container)
        if stale:
            log.warning("removed %d stale task container(s) of %s", len(stale), owner)
        return len(stale)

    def visible_paths(self, work_root: Path) -> list[Path]:
        """Host paths ``container_config`` mounts besides the task's directory and its model."""
        return python_roots(work_root.resolve()) if self.options.host_env else []

    def available(self) -> tuple[bool, str]:
        """Whether the Docker daemon answers and holds (or can pull) the pinned image."""
        try:
            self.client.ping()
        except Exception as exc:  # noqa: BLE001 - docker/requests raise many kinds
            return False, f"docker daemon unreachable: {exc}"
        try:
            self.image_id()
        except FailedPrecondition as exc:
            return False, str(exc)
        return True, ""


def resolve_image(client: Any, pinned: str) -> str:
    """The ID of the local image ``pinned`` names, pulling ``name@sha256:...`` when absent, and
    checking that what Docker holds really has that ID or digest."""
    import docker.errors

    match = PINNED.match(pinned)
    if match is None:
        raise InvalidArgument(f"docker image {pinned!r} is not pinned by digest", field="docker_image")
    try:
        image = client.images.get(pinned)
    except docker.errors.ImageNotFound:
        if not match["repo"]:
            raise FailedPrecondition(f"docker image {pinned} is not present locally", field="docker_image") from None
        try:
            log.info("pulling %s", pinned)
            image = client.images.pull(pinned)
        except docker.errors.APIError as exc:
            raise FailedPrecondition(f"cannot pull docker image {pinned}: {exc}", field="docker_image") from exc
    except docker.errors.APIError as exc:
        raise FailedPrecondition(f"docker image {pinned}: {exc}", field="docker_image") from exc
    digest = pinned.rsplit("@", 1)[-1]
    if image.id != digest and pinned not in image.attrs.get("RepoDigests", []):
        raise FailedPrecondition(f"docker image {image.id} does not match the pin {pinned}", field="docker_image")
    return image.id


def _give_to(workdir: Path, user: str) -> None:
    """Make the task directory the container user's (when the daemon is root and may)."""
    if os.geteuid() != 0:
        return
    uid, _, gid = user.partition(":")
    ids = int(uid), int(gid or uid)
    os.chown(workdir, *ids)
    for root, dirs, files in os.walk(workdir):
        for name in (*dirs, *files):
            os.chown(os.path.join(root, name), *ids, follow_symlinks=False)


def _tail(data: bytes, limit: int = TAIL_BYTES) -> str:
    return data[-limit:].decode(errors="replace")


def _quietly(action: Callable[[], Any]) -> None:
    import docker.errors

    try:
        action()
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        log.warning("docker: %s", exc)


def _kill(container: Any) -> None:
    _quietly(container.kill)


def _remove(container: Any) -> None:
    _quietly(lambda: container.remove(force=True))
