"""``gpumesh market``: what the market offers now (verified GPU classes online, free slots, asks,
throughput, the queue and the use of centralized capacity), as the dashboard's /market page."""

from __future__ import annotations

import click

from gpumesh.cli.output import JSON_OPTION


@click.command("market")
@click.option("--coordinator", "-c", "target", envvar="GPUMESH_COORDINATOR", default="127.0.0.1:50051",
              show_default=True, help="Coordinator address (host:port).")
@JSON_OPTION
def market(target, as_json) -> None:
    """The verified GPU classes online, fastest first: providers, free slots, asks (token base
    units per provider-hour), measured tokens/s, relative speed; then the queue."""
    from gpumesh.cli.output import console, emit_json, proto_doc
    from gpumesh.cli.views import market_table
    from gpumesh.client import Client

    with Client.connect(target) as client:
        view = client.market()
    if as_json:
        emit_json(proto_doc(view))  # with its history: a point a minute
    else:
        market_table(console(), view)
