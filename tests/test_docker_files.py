"""Static checks of docker/ (no Docker engine needed): compose.yaml's commands against the real
``gpumesh`` click CLI, the wiring of the local network (chain files, health, GPU variant), the
Dockerfiles' shape (base images pinned by tag, non-root users, entrypoints, COPY sources that
exist and are let through the ignore files), and the coordinator's container health probe
against a real gRPC health server."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tomllib
from concurrent import futures
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path, PurePosixPath

import click
import pytest
import yaml
from click.testing import CliRunner

from gpumesh.cli.main import main as cli

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
IMAGES = ("coordinator", "provider", "worker-torch", "worker-vllm")
CORE_SERVICES = {"anvil", "deploy", "coordinator", "provider-a", "provider-b"}
PROVIDERS = ("provider-a", "provider-b")
WORKLOAD_MODULES = {f"provider_node.workloads.{m}" for m in ("inference", "rescore", "finetune")}
ROOT_USERS = {"root", "0"}


# ---- a small Dockerfile reader ----------------------------------------------------------------


@dataclass(frozen=True)
class Instr:
    cmd: str  # upper case
    args: str
    line: int

    def exec_form(self) -> list[str]:
        text = self.args.strip()
        return json.loads(text) if text.startswith("[") else shlex.split(text)


@dataclass(frozen=True)
class Dockerfile:
    path: Path
    text: str
    instrs: list[Instr]

    @property
    def global_args(self) -> dict[str, str]:
        out = {}
        for ins in self.instrs:
            if ins.cmd == "FROM":
                break
            if ins.cmd == "ARG":
                name, _, default = ins.args.partition("=")
                out[name.strip()] = default.strip().strip('"')
        return out

    def stages(self) -> list[list[Instr]]:
        stages: list[list[Instr]] = []
        for ins in self.instrs:
            if ins.cmd == "FROM":
                stages.append([])
            if stages:
                stages[-1].append(ins)
        return stages

    @property
    def final(self) -> list[Instr]:
        return self.stages()[-1]

    def last(self, cmd: str, stage: list[Instr] | None = None) -> Instr | None:
        found = [i for i in (stage if stage is not None else self.final) if i.cmd == cmd]
        return found[-1] if found else None

    def stage_args(self, stage: list[Instr]) -> dict[str, str]:
        out = {}
        for ins in stage:
            if ins.cmd == "ARG":
                name, _, default = ins.args.partition("=")
                out[name.strip()] = default.strip().strip('"')
        return out

    def env(self, stage: list[Instr] | None = None) -> dict[str, str]:
        out: dict[str, str] = {}
        for ins in stage if stage is not None else self.final:
            if ins.cmd == "ENV":
                for pair in shlex.split(ins.args):
                    key, _, value = pair.partition("=")
                    out[key] = value
        return out


def parse_dockerfile(path: Path) -> Dockerfile:
    """Instructions with their continuation lines joined; comment lines (also those inside a
    continuation, which Docker drops) skipped."""
    text = path.read_text()
    instrs: list[Instr] = []
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buf and not stripped:
            continue
        if stripped.startswith("#"):
            continue
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        cmd, _, args = buf.partition(" ")
        instrs.append(Instr(cmd.upper(), args.strip(), start))
        buf = ""
    assert not buf, f"{path.name}: dangling line continuation"
    return Dockerfile(path, text, instrs)


def copy_parts(ins: Instr) -> tuple[dict[str, str], list[str], str]:
    """(flags, sources, destination) of a COPY/ADD."""
    parts = ins.exec_form()
    flags = {}
    while parts and parts[0].startswith("--"):
        key, _, value = parts.pop(0)[2:].partition("=")
        flags[key] = value
    return flags, parts[:-1], parts[-1]


def expand(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), value)


@pytest.fixture(scope="module")
def dockerfiles() -> dict[str, Dockerfile]:
    return {name: parse_dockerfile(DOCKER / f"{name}.Dockerfile") for name in IMAGES}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


# ---- checking a gpumesh command line against the click CLI ----------------------------------


def _help(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, f"gpumesh {' '.join(path)} --help failed:\n{result.output}"
    return result.output


def check_gpumesh_argv(argv: list[str]) -> tuple[str, ...]:
    """Walk ``gpumesh ...`` down the click groups to its command, then check every option is
    one that command's ``--help`` lists (and, for choices, that the value is one listed);
    returns the subcommand path."""
    assert argv and argv[0] == "gpumesh", argv
    cmd: click.Command = cli
    path: list[str] = []
    rest = list(argv[1:])
    while isinstance(cmd, click.Group):
        assert rest, f"{argv}: stops at the group 'gpumesh {' '.join(path)}'"
        name = rest.pop(0)
        sub = cmd.commands.get(name)
        assert sub is not None, f"{argv}: no subcommand {name!r} under 'gpumesh {' '.join(path)}'"
        path.append(name)
        cmd = sub
    help_text = _help(tuple(path))
    listed = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", help_text))
    by_opt = {opt: p for p in cmd.params if isinstance(p, click.Option) for opt in (*p.opts, *p.secondary_opts)}
    positional = [p for p in cmd.params if isinstance(p, click.Argument)]
    i, n_args = 0, 0
    while i < len(rest):
        token = rest[i]
        if not token.startswith("-"):
            n_args += 1
            i += 1
            continue
        flag, eq, inline = token.partition("=")
        assert flag in listed, f"gpumesh {' '.join(path)}: {flag} is not in its --help"
        param = by_opt[flag]
        if param.is_flag or param.count:
            i += 1
            continue
        if eq:
            value, i = inline, i + 1
        else:
            assert i + 1 < len(rest), f"gpumesh {' '.join(path)}: {flag} needs a value"
            value, i = rest[i + 1], i + 2
        if isinstance(param.type, click.Choice):
            assert value in param.type.choices, f"{flag} {value!r}: not one of {param.type.choices}"
            assert value in help_text, f"{flag} {value!r} is not in --help"
    assert n_args <= len(positional), f"gpumesh {' '.join(path)}: unexpected arguments in {rest}"
    return tuple(path)


def options(argv: list[str]) -> dict[str, str]:
    """``--flag value`` pairs of an argv (flags without a value map to "")."""
    out, i = {}, 0
    while i < len(argv):
        if argv[i].startswith("-"):
            has_value = i + 1 < len(argv) and not argv[i + 1].startswith("-")
            out[argv[i]] = argv[i + 1] if has_value else ""
            i += 2 if has_value else 1
        else:
            i += 1
    return out


def as_list(value) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def dockerfile_of(service: dict) -> Path:
    build = service["build"]
    context = (COMPOSE_FILE.parent / build.get("context", ".")).resolve()
    return context / build.get("dockerfile", "Dockerfile")


def service_argv(service: dict) -> list[str]:
    """What the container runs: the compose entrypoint (or the image's ENTRYPOINT) + command
    (or the image's CMD)."""
    if "entrypoint" in service:
        entry = as_list(service["entrypoint"])
        cmd = as_list(service.get("command"))
    else:
        df = parse_dockerfile(dockerfile_of(service))
        entry = df.last("ENTRYPOINT").exec_form()
        cmd = as_list(service["command"]) if "command" in service else df.last("CMD").exec_form()
    return entry + cmd


def mounts(service: dict) -> dict[str, tuple[str, bool]]:
    """container path -> (volume name or host path, read-only) of a service's short-form volumes."""
    out = {}
    for spec in service.get("volumes", []):
        source, target, *mode = spec.split(":")
        out[target] = (source, "ro" in mode)
    return out


def mount_of(service: dict, path: str) -> tuple[str, str] | None:
    """(volume, mount point) under which ``path`` lies in ``service``."""
    for target, (source, _) in mounts(service).items():
        if PurePosixPath(path).is_relative_to(target):
            return source, target
    return None


# ---- compose.yaml -------------------------------------------------------------------------------


def test_compose_has_the_five_services_and_an_optional_gpu_provider(services):
    assert CORE_SERVICES <= set(services)
    default = {name for name, s in services.items() if not s.get("profiles")}
    assert default == CORE_SERVICES  # `up` without a profile starts exactly these
    gpu = [name for name, s in services.items() if "gpu" in s.get("profiles", [])]
    assert gpu == ["provider-gpu"]


@pytest.mark.parametrize("name", sorted(CORE_SERVICES - {"anvil"}) + ["provider-gpu"])
def test_every_gpumesh_command_in_compose_exists_with_its_flags(services, name):
    argv = service_argv(services[name])
    path = check_gpumesh_argv(argv)
    expected = {"deploy": ("chain", "deploy"), "coordinator": ("coordinator", "serve")}.get(name, ("provider", "run"))
    assert path == expected


def test_anvil_is_the_foundry_image_at_the_repo_s_anvil_version_listening_on_all_interfaces(services):
    anvil = services["anvil"]
    image, _, tag = anvil["image"].partition(":")
    assert image == "ghcr.io/foundry-rs/foundry"
    npm_version = json.loads((REPO / "contracts/package.json").read_text())["devDependencies"]["@foundry-rs/anvil"]
    assert tag == f"v{npm_version}"
    argv = service_argv(anvil)
    assert argv[0] == "anvil"
    opts = options(argv)
    assert opts["--host"] == "0.0.0.0"
    assert opts.get("--port", "8545") == "8545"
    assert "test" in anvil["healthcheck"]


def test_deploy_writes_the_files_the_coordinator_reads_on_a_shared_volume(compose, services, tmp_path, monkeypatch):
    deploy, coord = services["deploy"], services["coordinator"]
    d_opts = options(service_argv(deploy))
    c_opts = options(service_argv(coord))
    assert deploy.get("restart") == "no"
    assert deploy["depends_on"]["anvil"]["condition"] == "service_healthy"
    assert coord["depends_on"]["deploy"]["condition"] == "service_completed_successfully"
    # the deployer talks to the chain the coordinator settles on, the anvil service
    assert d_opts["--rpc"] == c_opts["--chain-url"] == "http://anvil:8545"
    # --out is a named volume, mounted in the coordinator too, where its chain files are read
    out = d_opts["--out"]
    volume, point = mount_of(deploy, out + "/x")
    assert volume in (compose.get("volumes") or {}), f"--out {out} is not on a named volume"
    for flag in ("--deployment", "--chain-key-file"):
        c_volume, c_point = mount_of(coord, c_opts[flag])
        assert c_volume == volume, f"coordinator's {flag} is not on the deployer's volume"
    # ... and the names are the ones `gpumesh chain deploy` really writes (deploy_dev, run
    # here with the chain calls stubbed out)
    import gpumesh.chain
    from gpumesh.chain import Deployment
    from gpumesh.cli import chain_cmd

    class FakeClient:
        @classmethod
        def deploy(cls, web3, admin):
            return Deployment(chain_id=31337, token="0x" + "1" * 40, registry="0x" + "2" * 40, escrow="0x" + "3" * 40)

    # set in the module's namespace: getattr would first import the real (lazy) web3 client
    monkeypatch.setitem(vars(gpumesh.chain), "ChainClient", FakeClient)
    monkeypatch.setitem(vars(gpumesh.chain), "json_rpc_web3", lambda url: None)
    chain_cmd.deploy_dev("http://unused", tmp_path)
    written = {p.name for p in tmp_path.iterdir()}
    for flag in ("--deployment", "--chain-key-file"):
        rel = PurePosixPath(c_opts[flag]).relative_to(mount_of(coord, c_opts[flag])[1])
        rel_to_out = PurePosixPath(point, rel).relative_to(out)
        assert str(rel_to_out) in written, f"{flag} {c_opts[flag]}: deploy writes only {written}"
    # coordinator.key is written 0600: only the same user (the same image) can read it
    assert deploy["image"] == coord["image"]


def test_named_volumes_are_declared_and_each_provider_has_its_own(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for source, _ in mounts(service).values():
            if not source.startswith((".", "/", "~")):
                assert source in declared, f"{name}: volume {source!r} is not declared"
    data = {}
    for name in (*PROVIDERS, "provider-gpu"):
        argv = service_argv(services[name])
        data_dir = options(argv)["--data-dir"]
        volume, _ = mount_of(services[name], data_dir + "/keys/wallet.key")
        data[name] = volume
    assert len(set(data.values())) == len(data), f"providers share a data volume (their wallet): {data}"
    names = [options(service_argv(services[n]))["--name"] for n in data]
    assert len(set(names)) == len(names)


def test_providers_wait_for_a_healthy_coordinator_and_run_workloads_in_the_sandbox(services):
    coord = services["coordinator"]
    assert coord["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
    listen_port = options(service_argv(coord))["--listen"].rsplit(":", 1)[1]
    for name in (*PROVIDERS, "provider-gpu"):
        provider = services[name]
        assert provider["depends_on"]["coordinator"]["condition"] == "service_healthy"
        opts = options(service_argv(provider))
        target = opts.get("-c") or opts["--coordinator"]
        assert target == f"coordinator:{listen_port}"
        assert opts["--runtime"] == "auto" and "--unisolated" not in service_argv(provider)
        # bwrap's user namespaces inside the container: Docker's default profiles refuse them.
        assert {"seccomp=unconfined", "apparmor=unconfined"} <= set(provider["security_opt"])
        assert not provider.get("privileged") and not provider.get("cap_add")


def test_coordinator_healthcheck_runs_the_probe_the_image_ships(services, dockerfiles):
    df = dockerfiles["coordinator"]
    probe_dest = {dest: srcs for flags, srcs, dest in map(copy_parts, (i for i in df.final if i.cmd == "COPY"))
                  if "from" not in flags}
    image_hc = df.last("HEALTHCHECK")
    assert image_hc is not None
    image_test = Instr("CMD", image_hc.args.split("CMD", 1)[1], image_hc.line).exec_form()
    compose_test = services["coordinator"]["healthcheck"]["test"][1:]
    for test in (image_test, compose_test):
        script = next(a for a in test if a.endswith(".py"))
        assert probe_dest.get(script) == ["docker/healthcheck.py"], f"{script} is not what the image COPYs"
    assert "50051" in {p.split("/")[0] for i in df.final if i.cmd == "EXPOSE" for p in i.args.split()}
    listen = options(service_argv(services["coordinator"]))["--listen"]
    assert compose_test[-1].endswith(":" + listen.rsplit(":", 1)[1])


def test_gpu_variant_reserves_gpus_and_builds_cuda_torch(services):
    gpu = services["provider-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d.get("capabilities", []) for d in devices)
    assert gpu["image"] != services["provider-a"]["image"]  # not the CPU image under the same tag
    args = gpu["build"]["args"]
    assert args["TORCH_INDEX_URL"] == "" and args["EXTRAS"] != "cpu"
    declared = parse_dockerfile(dockerfile_of(gpu)).stage_args(parse_dockerfile(dockerfile_of(gpu)).stages()[0])
    assert set(args) <= set(declared), "build args the Dockerfile does not declare"


def test_builds_use_the_repository_root_as_context(services):
    for name, service in services.items():
        if "build" in service:
            assert (COMPOSE_FILE.parent / service["build"]["context"]).resolve() == REPO, name
            assert dockerfile_of(service).is_file(), name


# ---- the Dockerfiles ------------------------------------------------------------------------


@pytest.mark.parametrize("name", IMAGES)
def test_dockerfile_bases_are_pinned_by_tag_with_a_place_for_the_digest(dockerfiles, name):
    df = dockerfiles[name]
    froms = [i for i in df.instrs if i.cmd == "FROM"]
    assert len(froms) >= 2, "expected a multi-stage build"
    stages: set[str] = set()
    for ins in froms:
        parts = ins.args.split()
        ref = expand(parts[0], df.global_args)
        if ref not in stages:
            assert "$" not in ref, f"FROM {parts[0]}: unresolved"
            last = ref.rsplit("/", 1)[-1]
            assert ":" in last, f"{ref}: no tag"
            assert last.split(":", 1)[1].split("@")[0] not in ("latest", ""), f"{ref}: floating tag"
        if len(parts) == 3 and parts[1].upper() == "AS":
            stages.add(parts[2])
    assert re.search(r"^# pin: @sha256:", df.text, re.M), "no `# pin: @sha256:...` marker"
    for ins in df.instrs:
        if ins.cmd == "COPY":
            flags, _, _ = copy_parts(ins)
            if "from" in flags:
                assert flags["from"] in stages, f"COPY --from={flags['from']}: no such stage"


@pytest.mark.parametrize("name", IMAGES)
def test_dockerfile_runs_as_a_non_root_user_it_creates(dockerfiles, name):
    df = dockerfiles[name]
    user = df.last("USER")
    assert user is not None, "final stage has no USER"
    uid, _, gid = user.args.partition(":")
    assert uid not in ROOT_USERS and gid not in ROOT_USERS
    runs = " ".join(i.args for i in df.final if i.cmd == "RUN")
    assert re.search(rf"useradd\b.*--uid {re.escape(uid)}\b", runs), f"USER {uid} is not created in the final stage"
    # nothing after USER switches back to root
    after = df.final[df.final.index(user):]
    assert not [i for i in after if i.cmd == "RUN"], "RUN after USER"


@pytest.mark.parametrize("name", ["coordinator", "provider"])
def test_service_images_enter_gpumesh_with_a_valid_default_command(dockerfiles, name):
    df = dockerfiles[name]
    entry, cmd = df.last("ENTRYPOINT").exec_form(), df.last("CMD").exec_form()
    assert entry == ["gpumesh"]
    path = check_gpumesh_argv(entry + cmd)
    assert path == {"coordinator": ("coordinator", "serve"), "provider": ("provider", "run")}[name]


@pytest.mark.parametrize("name", ["worker-torch", "worker-vllm"])
def test_worker_images_run_a_workload_module_offline_with_home_on_the_workdir(dockerfiles, name):
    df = dockerfiles[name]
    entry, cmd = df.last("ENTRYPOINT").exec_form(), df.last("CMD").exec_form()
    assert entry == ["python", "-m"]
    assert cmd[0] in WORKLOAD_MODULES and find_spec(cmd[0]) is not None
    from provider_node.executor import WORKLOADS

    assert cmd[0] in WORKLOADS.values()
    env = df.env()
    workdir = df.last("WORKDIR").args
    assert env["HOME"] == env["TMPDIR"] == workdir  # a tmpfs there makes a read-only root work
    assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == "1"
    assert "--network none" in df.text and "--read-only" in df.text  # documented how it runs


@pytest.mark.parametrize("name", IMAGES)
def test_copy_sources_exist_and_symlinks_in_them_resolve_inside_what_is_copied(dockerfiles, name):
    df = dockerfiles[name]
    sources: list[Path] = []
    for ins in df.instrs:
        if ins.cmd in ("COPY", "ADD"):
            flags, srcs, _ = copy_parts(ins)
            if "from" in flags:
                continue
            for src in srcs:
                assert src not in (".", "./", "*"), "COPY of the whole context"
                path = REPO / src
                assert path.exists(), f"COPY {src}: not in the repository"
                sources.append(path)
    assert any(p.name == "pyproject.toml" for p in sources)
    for src in sources:
        if src.is_symlink():
            links = [src]
        else:
            links = [p for p in src.rglob("*") if p.is_symlink()] if src.is_dir() else []
        for link in links:
            target = link.resolve()
            assert any(target.is_relative_to(s.resolve()) for s in sources), \
                f"{link.relative_to(REPO)} -> {os.readlink(link)} points outside what is COPYed"


@pytest.mark.parametrize("name", ["coordinator", "provider", "worker-torch"])
def test_cpu_torch_version_matches_the_cpu_extra(dockerfiles, name):
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins = [d for d in pyproject["project"]["optional-dependencies"]["cpu"] if d.startswith("torch")]
    assert len(pins) == 1 and "==" in pins[0]
    df = dockerfiles[name]
    build = df.stages()[0]
    assert df.stage_args(build)["TORCH_VERSION"] == pins[0].split("==")[1]
    assert df.stage_args(build)["EXTRAS"] == "cpu"


def test_vllm_image_installs_the_gpu_extra(dockerfiles):
    df = dockerfiles["worker-vllm"]
    assert df.stage_args(df.stages()[0])["EXTRAS"] == "gpu"
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert any(d.startswith("vllm") for d in pyproject["project"]["optional-dependencies"]["gpu"])
    assert df.global_args["CUDA_IMAGE"].startswith("nvidia/cuda:")
    assert all(i.args.split()[0] == "${CUDA_IMAGE}" for i in df.instrs if i.cmd == "FROM")


# ---- the ignore files ---------------------------------------------------------------------------


def _ignore_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def excluded(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path (or a directory above it) decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    result = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = os.path.normpath(raw[1:] if negate else raw).lstrip("/")
        rx = _ignore_regex(pattern)
        if any(rx.fullmatch(p) for p in prefixes):
            result = not negate
    return result


def _patterns(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_ignore_matcher_follows_docker_semantics():
    assert excluded(["*"], "a/b") and not excluded(["*", "!a"], "a/b")
    assert excluded(["*", "!a", "**/__pycache__"], "a/x/__pycache__/m.pyc")
    assert not excluded(["*", "!a/b"], "a/b/c") and excluded(["*", "!a/b"], "a/c")


@pytest.mark.parametrize("name", IMAGES)
def test_each_dockerfile_has_an_ignore_file_that_lets_its_copy_sources_in(dockerfiles, name):
    ignore = DOCKER / f"{name}.Dockerfile.dockerignore"
    assert ignore.is_file()
    assert ignore.read_text() == (DOCKER / "coordinator.Dockerfile.dockerignore").read_text()
    patterns = _patterns(ignore)
    for ins in dockerfiles[name].instrs:
        if ins.cmd in ("COPY", "ADD"):
            flags, srcs, _ = copy_parts(ins)
            if "from" in flags:
                continue
            for src in srcs:
                path = REPO / src
                files = [path] if path.is_file() else [
                    p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
                assert files, src
                for f in files:
                    rel = f.relative_to(REPO).as_posix()
                    assert not excluded(patterns, rel), f"{rel} (COPY {src}) is excluded by {ignore.name}"
    for junk in (".git/HEAD", "contracts/node_modules/x", "tests/test_e2e.py", "gpumesh/__pycache__/x.cpython-311.pyc",
                 "gpumesh.egg-info/PKG-INFO", ".venv/bin/python"):
        assert excluded(patterns, junk), f"{junk} would be sent to the builder"


# ---- the health probe ------------------------------------------------------------------------


def _probe(target: str) -> subprocess.CompletedProcess:
    # Run as the image runs it: a script path (so its own directory is first on sys.path).
    return subprocess.run([sys.executable, str(DOCKER / "healthcheck.py"), target], capture_output=True, text=True,
                          timeout=30, env=dict(os.environ, GPUMESH_HEALTH_TIMEOUT="2"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_health_probe_fails_when_nothing_listens():
    done = _probe(f"127.0.0.1:{_free_port()}")
    assert done.returncode == 1, done
    assert "UNAVAILABLE" in done.stderr or "DEADLINE_EXCEEDED" in done.stderr


def test_health_probe_passes_only_while_the_server_says_serving():
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        done = _probe(f"127.0.0.1:{port}")
        assert done.returncode == 0, done
        assert "SERVING" in done.stdout
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        done = _probe(f"127.0.0.1:{port}")
        assert done.returncode == 1 and "NOT_SERVING" in done.stderr, done
    finally:
        server.stop(0)
