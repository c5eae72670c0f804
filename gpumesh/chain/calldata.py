"""The arguments of the escrow's settle calls, built from ``Settlement`` values.

``JobEscrow.settleBatch(address[] payees, Settlement[] settlements)`` (and ``settleJob`` for one
job) names every provider it pays once, in a payee list by strictly increasing address, and each
payout's provider by its index in that list; a job's payouts go by increasing index. The escrow
checks each payee once per call and, in a batch, sums its payouts into one balance write and one
``Credited`` event. Payouts here name providers by address; ``settle_args`` builds the list and
the indices.
"""

from __future__ import annotations

from collections.abc import Sequence

from gpumesh.chain.claims import compact
from gpumesh.chain.models import Settlement
from gpumesh.errors import InvalidArgument


def _address(raw: object) -> str:
    from eth_utils import to_checksum_address

    raw = getattr(raw, "address", raw)
    try:
        return to_checksum_address(raw)
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(f"not an address: {raw!r} ({exc})", field="provider") from None


def settle_args(settlements: Sequence[Settlement]) -> tuple[list[str], list[tuple]]:
    """``(payees, [(key, [(payee index, amount, claimed, r, vs), ...]), ...])`` for ``settleBatch``
    (one settlement's ``[0]`` is ``settleJob``'s second argument): the payees by increasing address
    (as numbers), each job's payouts by increasing index, signatures in EIP-2098 form. A provider
    named twice in one job keeps both payouts, which the escrow refuses (``PayoutsNotSorted``)."""
    providers = [[_address(p.provider) for p in s.payouts] for s in settlements]
    payees = sorted({a for job in providers for a in job}, key=lambda a: int(a, 16))
    index = {a: i for i, a in enumerate(payees)}
    jobs = []
    for s, addresses in zip(settlements, providers):
        payouts = []
        for address, p in zip(addresses, s.payouts):
            r, vs = compact(p.signature)
            payouts.append((index[address], int(p.amount), int(p.claimed), r, vs))
        payouts.sort(key=lambda row: row[0])
        jobs.append((bytes(s.key), payouts))
    return payees, jobs
