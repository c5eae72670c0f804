"""``gpumesh provider init``: one command from a fresh install to a provider ready to ``run``
(the steps are ``provider_node.onboarding``; this module prints them)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from gpumesh.cli.output import JSON_OPTION, emit_json

_STATUS = {"ok": "green", "missing": "red", "none": "yellow", "n/a": None}


@click.command("init")
@click.option("--coordinator", "-c", "target", envvar="GPUMESH_COORDINATOR", default="127.0.0.1:50051",
              show_default=True, help="Coordinator address (host:port): asked for the market's prices, written "
              "to the config.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), envvar="GPUMESH_PROVIDER_DATA_DIR",
              default=None, help="Wallet key, model cache, work [default: ~/.gpumesh/provider].")
@click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path), envvar="GPUMESH_PROVIDER_CONFIG",
              default=None, help="Write the config here [default: DATA_DIR/provider.toml, where `provider run` looks].")
@click.option("--price", type=click.IntRange(min=0), default=None,
              help="Price per hour, token base units [default: the market's median ask for this node's class].")
@click.option("--name", default=None, help="This node's name [default: the host name].")
@click.option("--slots", type=click.IntRange(1, 256), default=1, show_default=True, help="Tasks run at once.")
@click.option("--runtime", type=click.Choice(["auto", "bwrap", "docker"]), default="auto", show_default=True,
              help="auto: Docker with --docker-image (and, on a GPU host, the NVIDIA container toolkit), else "
              "the bubblewrap sandbox.")
@click.option("--docker-image", default="", help="The workload image for Docker, name@sha256:<digest> or "
              "sha256:<image id>.")
@click.option("--allow-missing-runtime", is_flag=True, help="Write the config even though no sandbox works here "
              "yet (`provider run` refuses to start until one does).")
@click.option("--force", is_flag=True, help="Overwrite an existing config file (the wallet is never overwritten).")
@JSON_OPTION
def provider_init(target, data_dir, config, price, name, slots, runtime, docker_image, allow_missing_runtime,
                  force, as_json) -> None:
    """Set this host up as a provider: make its wallet, check the runtimes (saying how to fix what
    is missing), preview the hardware check, suggest a price from the market, and write the config
    file that `gpumesh provider run` reads."""
    from provider_node import hwpreview
    from provider_node import onboarding as ob
    from provider_node.config import config_file_path, default_data_dir
    from provider_node.hardware import discover
    from provider_node.secret_files import load_wallet
    from gpumesh.identity import provider_key_path

    data = (data_dir or default_data_dir()).expanduser().absolute()
    path = config_file_path(config=config, data_dir=data).absolute()
    if path.exists() and not force:  # before anything else: nothing is changed
        raise click.ClickException(f"{path} exists; pass --force to overwrite it (it is kept as it is)")
    out = _Printer(as_json)

    key_file = provider_key_path(data)
    created = not key_file.exists() and not (data / "wallet.key").is_file()
    wallet = load_wallet(key_file, legacy=data / "wallet.key")  # made 0600 when missing, never overwritten
    out.section("wallet", {"address": wallet.address, "key_file": str(key_file), "created": created},
                f"{wallet.address} ({'new' if created else 'existing'} key: {key_file})")

    hardware = discover()
    gpus = [{"index": g.index, "name": g.name, "memory_mb": g.memory_total_mb, "driver": g.driver_version,
             "cuda": g.cuda_version} for g in hardware.gpus]
    out.section("hardware", {"gpus": gpus, "cpu_model": hardware.cpu_model, "cpu_count": hardware.cpu_count,
                             "memory_mb": hardware.memory_total_mb},
                *([f"GPU {g['index']}: {g['name']} ({g['memory_mb']} MiB)" for g in gpus] or [ob.CPU_ONLY]),
                f"CPU: {hardware.cpu_model}, {hardware.cpu_count} cores, {hardware.memory_total_mb} MiB memory")

    checks = ob.host_checks(hardware)
    out.section("checks", [c.as_dict() for c in checks], *(line for c in checks for line in _check_lines(c)))

    choice = ob.choose_runtime(runtime, hardware, checks, docker_image=docker_image, slots=slots)
    line = f"{choice.name}: {choice.detail}" if choice.name else click.style(choice.detail, fg="red")
    out.section("runtime", choice.as_dict(), line, *(f"note: {n}" for n in choice.notes))

    previews = hwpreview.preview_hardware(hardware)
    out.section("hardware_check", [p.as_dict() for p in previews],
                "(run here as a coordinator runs it, default check policy)", *(_preview_line(p) for p in previews))
    cls = hwpreview.node_class(previews)

    coordinator = ob.ask_coordinator(target)
    suggestion = ob.suggest_price(cls, coordinator, flag=price)
    out.section("coordinator", {"target": target, "reachable": coordinator.reachable, "error": coordinator.error,
                                "market_error": coordinator.market_error, "settles": coordinator.settles,
                                "min_stake": coordinator.min_stake},
                f"{target}: " + ("reachable" if coordinator.reachable else f"not reachable ({coordinator.error})"))
    out.section("price", suggestion.as_dict(), f"{suggestion.price_per_hour} per hour ({suggestion.note})")

    values = ob.config_values(coordinator=target, name=name or ob.default_name(), price_per_hour=suggestion.price_per_hour,
                              slots=slots, runtime=choice, data_dir=data)
    written = bool(choice.name) or allow_missing_runtime
    if written:
        ob.write_config(path, ob.render_config(values), force=force)
        out.section("config", {"path": str(path), "written": True, "values": values}, f"wrote {path}",
                    *(f"  {k} = {v}" for k, v in values.items()))
    else:
        out.section("config", {"path": str(path), "written": False, "values": values},
                    click.style("not written: no sandbox works here. Fix a check above and run init again, "
                                "or pass --allow-missing-runtime to write it anyway", fg="red"))

    plan = ob.next_steps(coordinator, data_dir=None if data_dir is None else data,
                         config=path if config is not None else None)
    out.section("next", {"commands": list(plan.commands), "notes": list(plan.notes)} if written else None,
                *((f"$ {c}" for c in plan.commands) if written else ()), *(f"note: {n}" for n in plan.notes))
    out.finish(ok=written)
    if not written:
        sys.exit(1)


def _check_lines(c) -> list[str]:
    status = click.style(f"{c.status:<7}", fg=_STATUS.get(c.status))
    fix = [f"{'':<8}fix: {c.fix}"] if c.status == "missing" and c.fix else []
    return [f"{status} {c.name}: {c.detail}", *fix]


def _preview_line(p) -> str:
    verdict = f"would verify as {p.verified}" if p.verified else click.style(f"would not verify ({p.note})", fg="red")
    measured = f"{p.tflops:.3g} TFLOPS in {p.seconds:.2f} s" if p.tflops else "not measured"
    return f"{p.name}: claimed {p.claimed}, {measured}, {verdict}"


class _Printer:
    """Lines as each step finishes, or one JSON object at the end (``--json``). Colours only on a
    terminal (click strips them otherwise)."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.report: dict[str, Any] = {}

    def section(self, key: str, value: Any, *lines: str) -> None:
        if value is not None:
            self.report[key] = value
        if self.as_json or not lines:
            return
        first, *rest = lines
        click.echo(f"{key.replace('_', ' ') + ':':<16}{first}")
        for line in rest:
            click.echo(f"{'':<16}{line}")

    def finish(self, *, ok: bool) -> None:
        if self.as_json:
            emit_json({"ok": ok, **self.report})
