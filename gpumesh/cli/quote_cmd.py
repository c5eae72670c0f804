"""``gpumesh quote``: what a job file or a batch file would cost and when it would be done,
before any budget is escrowed (nothing is uploaded or submitted)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gpumesh.cli.output import JSON_OPTION
from gpumesh.errors import InvalidArgument
from gpumesh.inputsize import QUOTE_INPUT_CID


def _local_cid(path: Path) -> str:
    """The CID ``path`` would have once uploaded (Kubo's for the same bytes), computed locally."""
    from gpumesh.artifacts.unixfs import FileImporter

    importer = FileImporter(lambda _cid, _block: None)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            importer.update(chunk)
    return str(importer.finish())


def _what(path: Path, client):
    """``(spec, InputSize)`` of a job file (YAML) or an input file (JSONL: native or OpenAI Batch lines)."""
    from gpumesh.inputsize import measure
    from gpumesh.jobfile import load_job_file
    from gpumesh.jobspec import JobSpec

    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        spec = load_job_file(path, _local_cid, _local_cid)
        raw = yaml.safe_load(path.read_text()) or {}
        local = (path.parent / str(raw.get("input", ""))).expanduser()
        if not local.is_file():
            raise InvalidArgument("the job's input is not a local file: give --requests", field="input")
        return spec, measure(local, default_max_tokens=spec.inference.max_new_tokens)
    size = measure(path)
    if not size.models:
        raise InvalidArgument("native request lines name no model: quote a job file (YAML) instead", field="model")
    if len(size.models) > 1:
        raise InvalidArgument(f"lines name {len(size.models)} models ({', '.join(size.models[:3])}); a batch "
                              "runs one", field="model")
    spec = JobSpec(name="quote", model_cid=client.model_cid(size.models[0]), input_cid=QUOTE_INPUT_CID)
    return spec, size


def _duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


@click.command("quote")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--coordinator", "-c", "target", envvar="GPUMESH_COORDINATOR", default="127.0.0.1:50051",
              show_default=True, help="Coordinator address (host:port).")
@click.option("--deadline", default=None, help="When it must be done, from now: 3600, 90m, 1h, 24h, 2d. A later "
              "deadline lets the scheduler wait for cheaper verified capacity.")
@JSON_OPTION
def quote(file, target, deadline, as_json) -> None:
    """Quote a job file (YAML) or a batch file (JSONL): tokens, cost (low / expected / high), ETA,
    the GPU classes that would serve it, and whether centralized capacity would be needed
    (exits 1 when it cannot be served)."""
    from gpumesh.cli.output import console, emit_json, proto_doc
    from gpumesh.cli.tables import Column, print_table
    from gpumesh.cli.views import amount as _amount
    from gpumesh.client import Client
    from gpumesh.durations import parse_duration

    try:
        deadline_s = int(parse_duration(deadline, field="--deadline")) if deadline else 0
        with Client.connect(target) as client:
            spec, size = _what(file, client)
            q = client.quote(spec, requests=size.requests, prompt_tokens=size.prompt_tokens,
                             output_tokens=size.output_tokens, deadline_s=deadline_s)
    except InvalidArgument as exc:
        raise click.ClickException(f"{exc.field}: {exc.message}" if exc.field else exc.message) from None
    if as_json:
        emit_json(proto_doc(q))
        sys.exit(0 if q.servable else 1)
    click.echo(f"{q.requests:,} requests in {q.tasks:,} task(s): ~{q.prompt_tokens:,} prompt tokens, "
               f"at most {q.output_tokens:,} output tokens")
    if not q.servable:
        click.echo(f"cannot be served: {q.reason}")
        sys.exit(1)
    click.echo(f"cost: {_amount(q.cost_expected)} expected ({_amount(q.cost_low)} to {_amount(q.cost_high)}) "
               f"token base units, checks included (+{q.verification_share:.0%}); basis: {q.basis}")
    due = f"; deadline {_duration(q.deadline_s)}" if q.deadline_s else ""
    click.echo(f"done in: about {_duration(q.eta_s)}{due}")
    if q.fallback_needed:
        click.echo(f"centralized capacity needed: {q.fallback_reason}")
    columns = (Column("class", key=True), Column("tier", rank=3, wrap=False),
               Column("providers", rank=4, wrap=False, justify="right"),
               Column("ask/h", rank=6, wrap=False, justify="right"), Column("ETA", rank=8, wrap=False, justify="right"),
               Column("cost", rank=7, wrap=False, justify="right"), Column("", rank=9))
    rows = [(c.label, c.tier.lower(), c.providers, _amount(c.price_per_hour), _duration(c.eta_s), _amount(c.cost),
             "chosen" if c.chosen else ("" if c.meets_deadline else "misses deadline")) for c in q.classes]
    print_table(console(), columns, rows)
