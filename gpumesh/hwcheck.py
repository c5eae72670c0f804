"""The hardware check's arithmetic, shared by the provider (which runs it on the device it claims)
and the coordinator (which re-derives a few rows to check the provider's commitment).

The work is a seeded chain of matrix products on small integers:

    S     rows x 64, entries in [-2, 2]      seeded per device (``seed_a``)
    B0    64 x n,  B  n x n                  seeded per check  (``seed_b``)
    X0    = (S @ B0) mod 5 - 2
    X_r+1 = (X_r @ B) mod 5 - 2              for r < rounds - 1
    Y     = X_last @ B
    d_i   = sum_j mix32((Y_ij mod 2^32) xor col_j)  mod 2^32          (row i's digest)

Every entry, product and partial sum is an integer of magnitude below 2^24, so float32 (and TF32:
inputs in [-2, 2] are exact in its 10-bit mantissa) products with float32 accumulation are exact in
any summation order: a GPU's digests equal numpy's bit for bit. The ``mod`` between products makes
the chain non-linear, so no row is had cheaper than by computing it (``B`` cannot be powered up).

The provider commits to all digests (a SHA-256 Merkle root over leaves of ``leaf_rows`` of them)
before it learns which rows are opened; the coordinator recomputes the opened rows. A provider that
computed only a fraction ``f`` of the rows passes ``k`` opened rows with probability ``f**k`` (each
other row is a 32-bit guess): with ``k = 32``, doing half the work passes with probability 2^-32.

The functions work on numpy arrays and on torch tensors alike (``Backend`` makes the arrays).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

M32 = 0xFFFFFFFF
S_COLS = 64  # the seed matrix's width
LEAF_ROWS = 1024  # digests per Merkle leaf


@dataclass(frozen=True)
class Sizing:
    """The shape of one check: the work is ``flops`` multiply-adds x 2."""

    n: int
    rows: int
    rounds: int
    leaf_rows: int = LEAF_ROWS

    @property
    def flops(self) -> float:
        return 2.0 * self.rows * self.n * (S_COLS + self.n * self.rounds)

    @property
    def leaves(self) -> int:
        return -(-self.rows // self.leaf_rows)


class Backend(Protocol):
    """Makes and converts arrays: numpy here, torch on the provider's device."""

    def arange(self, start: int, stop: int) -> Any: ...
    def f32(self, x: Any) -> Any: ...
    def i64(self, x: Any) -> Any: ...
    def rowsum(self, x: Any) -> Any: ...


class NumpyBackend:
    def arange(self, start: int, stop: int) -> np.ndarray:
        return np.arange(start, stop, dtype=np.int64)

    def f32(self, x: np.ndarray) -> np.ndarray:
        return x.astype(np.float32)

    def i64(self, x: np.ndarray) -> np.ndarray:
        return x.astype(np.int64)

    def rowsum(self, x: np.ndarray) -> np.ndarray:
        return x.sum(axis=1)


NUMPY = NumpyBackend()


def mix32(x):
    """A 32-bit integer mixer (int64 arithmetic: every product stays below 2^63)."""
    x = x & M32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & M32
    x = x ^ (x >> 15)
    x = (x * 0x5BD1E995) & M32
    return x ^ (x >> 16)


def entries(seed: int, i, j):
    """Entries in [-2, 2] (int64) for row indices ``i`` (a column) and column indices ``j`` (a row)."""
    h = mix32((mix32(i ^ (seed & M32)) + j * 0x9E3779B1) & M32)
    return h % 5 - 2


def matrices(bk: Backend, seed_b: int, n: int):
    """(B0, B, column keys) of a check."""
    j = bk.arange(0, n)[None, :]
    b0 = bk.f32(entries(seed_b ^ 0x5A5A5A5A, bk.arange(0, S_COLS)[:, None], j))
    b = bk.f32(entries(seed_b, bk.arange(0, n)[:, None], j))
    cols = mix32(bk.arange(0, n) ^ ((seed_b ^ 0xC3C3C3C3) & M32))
    return b0, b, cols


def digests(bk: Backend, seed_a: int, rounds: int, b0, b, cols, rows) -> Any:
    """Digests (int64, each below 2^32) of the rows whose indices are ``rows`` (a 1-D index array)."""
    s = bk.f32(entries(seed_a, rows[:, None], bk.arange(0, S_COLS)[None, :]))
    x = (s @ b0) % 5 - 2
    for _ in range(rounds - 1):
        x = (x @ b) % 5 - 2
    y = bk.i64(x @ b) & M32
    return bk.rowsum(mix32(y ^ cols[None, :])) & M32


def reference(seed_a: int, seed_b: int, sizing: Sizing, rows: Sequence[int]) -> list[int]:
    """The digests of some rows, computed here (the coordinator's side of the check)."""
    b0, b, cols = matrices(NUMPY, seed_b, sizing.n)
    return [int(d) for d in digests(NUMPY, seed_a, sizing.rounds, b0, b, cols, np.asarray(rows, dtype=np.int64))]


# ---- the commitment -------------------------------------------------------------------------------


def leaf_bytes(all_digests: np.ndarray, leaf: int, leaf_rows: int = LEAF_ROWS) -> bytes:
    return all_digests[leaf * leaf_rows:(leaf + 1) * leaf_rows].astype("<u4").tobytes()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """Every level of the tree over leaf hashes, leaves first (an odd last node is carried up)."""
    if not leaves:
        raise ValueError("no leaves")
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        cur = levels[-1]
        levels.append([_node(cur[k], cur[k + 1]) if k + 1 < len(cur) else cur[k] for k in range(0, len(cur), 2)])
    return levels


def merkle_path(levels: list[list[bytes]], index: int) -> list[bytes]:
    """The sibling hashes from a leaf up to the root (levels where it has none are skipped)."""
    path = []
    for level in levels[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        index //= 2
    return path


def merkle_verify(root: bytes, leaf: bytes, index: int, count: int, path: Sequence[bytes]) -> bool:
    """Whether ``leaf`` (a leaf hash) is leaf ``index`` of the ``count``-leaf tree with this root."""
    if not 0 <= index < count:
        return False
    node, steps = leaf, iter(path)
    width = count
    while width > 1:
        sibling = index ^ 1
        if sibling < width:
            nxt = next(steps, None)
            if nxt is None:
                return False
            node = _node(node, nxt) if index % 2 == 0 else _node(nxt, node)
        index //= 2
        width = -(-width // 2)
    return next(steps, None) is None and node == root


def commit(all_digests: np.ndarray, leaf_rows: int = LEAF_ROWS) -> tuple[bytes, list[list[bytes]]]:
    """The Merkle root over the digests, and the tree's levels (to open leaves later)."""
    count = -(-len(all_digests) // leaf_rows)
    levels = merkle_levels([leaf_hash(leaf_bytes(all_digests, k, leaf_rows)) for k in range(count)])
    return levels[-1][0], levels


def verify_opening(seed_a: int, seed_b: int, sizing: Sizing, root: bytes, rows: Sequence[int],
                   leaves: Sequence[tuple[int, bytes, Sequence[bytes]]]) -> str:
    """Check opened leaves against the commitment and the opened rows against this machine's own
    arithmetic. Returns "" when right, else what is wrong."""
    given = {int(index): (bytes(data), list(path)) for index, data, path in leaves}
    count = sizing.leaves
    expected = reference(seed_a, seed_b, sizing, rows)
    for row, want in zip(rows, expected):
        leaf = row // sizing.leaf_rows
        if leaf not in given:
            return f"leaf {leaf} (row {row}) not opened"
        data, path = given[leaf]
        size = min(sizing.leaf_rows, sizing.rows - leaf * sizing.leaf_rows)
        if len(data) != 4 * size:
            return f"leaf {leaf} has {len(data)} bytes, not {4 * size}"
        if not merkle_verify(root, leaf_hash(data), leaf, count, path):
            return f"leaf {leaf} is not in the committed tree"
        got = int.from_bytes(data[4 * (row % sizing.leaf_rows):4 * (row % sizing.leaf_rows) + 4], "little")
        if got != want:
            return f"row {row}: wrong result"
    return ""
