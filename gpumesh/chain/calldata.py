"""The arguments of the escrow's settle calls, built from ``Settlement`` values.

``JobEscrow.settleBatch(address[] payees, Settlement[] settlements)`` (and ``settleJob`` for one
job) names every provider it pays once, in a payee list by strictly increasing address, and each
payout's provider by its index in that list; a job's payouts go by increasing index. The escrow
checks each payee once per call and, in a batch, sums its payouts into one balance write and one
``Credited`` event. Payouts here name providers by address; ``settle_args`` builds the list and
the indices. A provider with an invoice for the call (``gpumesh.chain.claims``: one signature over
all its payouts there, in call order, as ``invoice_lines`` lists them) is paid by lines; any other
by payouts under its per-job claims.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gpumesh.chain.claims import Line, compact
from gpumesh.chain.models import Settlement
from gpumesh.errors import InvalidArgument


def _address(raw: object) -> str:
    from eth_utils import to_checksum_address

    raw = getattr(raw, "address", raw)
    try:
        return to_checksum_address(raw)
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(f"not an address: {raw!r} ({exc})", field="provider") from None


def settle_args(settlements: Sequence[Settlement], invoices: Mapping[str, bytes] | None = None,
                ) -> tuple[list[str], list[tuple], list[tuple]]:
    """``(payees, invoices, jobs)`` for ``settleBatch`` (one job of ``jobs`` is ``settleJob``'s
    second argument, without invoices): the payees by increasing address (as numbers); each
    invoiced payee as ``(payee index, its line count, r, vs)``; each job as ``(key, [(payee index,
    amount, claimed, r, vs), ...], [(payee index, amount), ...])``, payouts and lines by increasing
    index, signatures in EIP-2098 form. ``invoices`` maps a provider's address (any case) to its
    signature of ``invoice_lines(settlements, provider)``. A provider named twice in one job keeps
    both payouts, which the escrow refuses (``PayoutsNotSorted``)."""
    signed = {_address(a): bytes(sig) for a, sig in (invoices or {}).items()}
    providers = [[_address(p.provider) for p in s.payouts] for s in settlements]
    payees = sorted({a for job in providers for a in job}, key=lambda a: int(a, 16))
    index = {a: i for i, a in enumerate(payees)}
    counts = dict.fromkeys(signed, 0)
    jobs = []
    for s, addresses in zip(settlements, providers):
        payouts, lines = [], []
        for address, p in zip(addresses, s.payouts):
            if address in signed:
                counts[address] += 1
                lines.append((index[address], int(p.amount)))
            else:
                r, vs = compact(p.signature)
                payouts.append((index[address], int(p.amount), int(p.claimed), r, vs))
        payouts.sort(key=lambda row: row[0])
        lines.sort(key=lambda row: row[0])
        jobs.append((bytes(s.key), payouts, lines))
    rows = [(index[a], counts[a], *compact(signed[a])) for a in sorted(signed, key=index.get) if counts[a]]
    unknown = sorted(a for a in signed if not counts[a])
    if unknown:
        raise InvalidArgument(f"an invoice for {unknown[0]}, whom no payout names", field="invoices")
    return payees, rows, jobs


def invoice_lines(settlements: Sequence[Settlement], provider: str) -> list[Line]:
    """``provider``'s lines in a ``settleBatch`` of ``settlements``: ``(job key, amount)`` for each
    of its payouts, in call order (what its invoice signs)."""
    address = _address(provider)
    return [(bytes(s.key), int(p.amount)) for s in settlements for p in s.payouts if _address(p.provider) == address]
