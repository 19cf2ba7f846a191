"""SGD's training plan, independent of the engine it runs on: the grid of rating blocks, the
per-epoch block orders, the rank order of the rows while training, and the settings each
backend's epochs read."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class SgdSettings:
    """The hyperparameters an epoch reads, as the backends take them."""

    factors: int
    biases: bool
    learning_rate: float
    regularization: float
    bias_regularization: float
    slow_factors: int
    num_threads: int
    popularity_negatives: bool


@dataclass(frozen=True)
class RatingGrid:
    """The ratings in visiting order, as ranks: block ``b``'s ratings at
    ``[starts[b], starts[b + 1])``; ``user_rank[u]`` is user ``u``'s place in the shuffled order
    (see :func:`rating_grid`)."""

    blocks: int
    users: np.ndarray
    items: np.ndarray
    values: np.ndarray
    starts: np.ndarray
    user_rank: np.ndarray
    item_rank: np.ndarray


def padded(n: int, row_floats: int) -> int:
    """``n`` rounded up to a whole number of ``row_floats``: the stride of a factor row while
    training (the engine's ``SGD_ROW_FLOATS``, so the padding is never visible outside fit)."""
    return (n + row_floats - 1) // row_floats * row_floats


# Runs per block in the visiting order.
_RUNS = 4


def interleaved_runs(starts: np.ndarray, runs: int = _RUNS) -> np.ndarray:
    """The visiting order of a grid whose block ``b`` holds positions ``[starts[b], starts[b + 1])``.

    Each block's ratings (sorted by user, then item) are cut into ``runs`` consecutive runs
    of ``ceil(length / runs)`` ratings, and the runs are visited round-robin: run 0's first
    rating, run 1's first, ..., run 0's second, and so on. Each run still walks its users in
    order (their rows stay in cache), while consecutive updates mostly touch different users
    and items, so the processor can overlap them instead of waiting for one update's stores
    before the next can read. Returns ``perm`` with ``perm[visit] = position``.
    """
    perm = np.empty(starts[-1], dtype=np.int64)
    for first, last in zip(starts[:-1].tolist(), starts[1:].tolist()):
        length = last - first
        if length == 0:
            continue
        run_length = -(-length // runs)
        # The block's positions as a (runs, run_length) table padded with -1, read column by
        # column: each run's first rating, then each run's second, ...
        table = np.full(runs * run_length, -1, dtype=np.int64)
        table[:length] = np.arange(first, last)
        column_wise = table.reshape(runs, run_length).T.ravel()
        perm[first:last] = column_wise[column_wise >= 0]
    return perm


def block_order(rng: np.random.Generator, blocks: int, by_items: bool) -> np.ndarray:
    """One epoch's block order: the bands of one side in a random order, and for each the
    blocks of its row of the grid, the other side's bands in a fresh random order.

    Block ``b`` covers user band ``b // blocks`` and item band ``b % blocks``. Grouping by
    the side whose bands hold more bytes of factors (``by_items``: the item bands) keeps one
    band's rows in cache over ``blocks`` consecutive blocks, where a free order would load
    them again for every block.
    """
    outer = rng.permutation(blocks).astype(np.int64)
    inner = np.argsort(rng.random((blocks, blocks)), axis=1).astype(np.int64)
    if by_items:
        order = inner * blocks + outer[:, None]  # item band fixed along each row
    else:
        order = outer[:, None] * blocks + inner
    return order.ravel().astype(np.int32)


def ratings_by_block(matrix: sp.csr_matrix, user_rank: np.ndarray, item_rank: np.ndarray, blocks: int):
    """The ratings of a canonical CSR matrix as ranks, sorted by block, then user rank, then
    item rank: (users, items, values, starts), block ``b`` at ``[starts[b], starts[b + 1])``.

    Rather than sorting three keys, the rows are taken in rank order and each row's ranks
    sorted (scipy's per-row sort), which leaves the ratings in (user, item) rank order; a
    stable sort on the block alone (a radix sort for so few blocks) then groups them.
    """
    n_users, n_items = matrix.shape
    by_rank = matrix if _is_identity(user_rank) else matrix[np.argsort(user_rank)]
    # A copy of the values: sorting each row moves them, and they may be the caller's.
    values = by_rank.data.copy() if by_rank is matrix else by_rank.data
    ranked = sp.csr_matrix((values, item_rank[by_rank.indices], by_rank.indptr), shape=matrix.shape)
    if not _is_identity(item_rank):
        ranked.has_sorted_indices = False
        ranked.sort_indices()
    users = np.repeat(np.arange(n_users, dtype=np.int32), np.diff(ranked.indptr))
    items = ranked.indices.astype(np.int32, copy=False)
    user_band = users.astype(np.int64) * blocks // max(n_users, 1)
    item_band = items.astype(np.int64) * blocks // max(n_items, 1)
    block = user_band * blocks + item_band
    key_type = np.int16 if blocks * blocks <= np.iinfo(np.int16).max else np.int64
    order = np.argsort(block.astype(key_type), kind="stable")
    starts = np.zeros(blocks * blocks + 1, dtype=np.int64)
    np.cumsum(np.bincount(block, minlength=blocks * blocks), out=starts[1:])
    return users[order], items[order], ranked.data[order].astype(np.float32, copy=False), starts


def _is_identity(rank: np.ndarray) -> bool:
    return bool(np.array_equal(rank, np.arange(len(rank), dtype=rank.dtype)))


# Per-row training state: each array holds one row (or, for split rate sums, two values) per
# user or item.
_USER_ROWS = ("user_factors", "user_biases", "user_rate_sums")
_ITEM_ROWS = ("item_factors", "item_biases", "item_rate_sums")


def _rows_of(value: np.ndarray, n: int) -> np.ndarray:
    return value.reshape(n, value.size // n if n else 0)


def to_rank_order(state: dict, user_rank: np.ndarray, item_rank: np.ndarray) -> None:
    """Moves the per-row state into the grid's rank order (row ``rank[u]`` holds user ``u``'s),
    and records the ranks as ``state["ranks"]`` for :func:`in_id_order`."""
    for keys, rank in ((_USER_ROWS, user_rank), (_ITEM_ROWS, item_rank)):
        for key in keys:
            if state[key] is None:
                continue
            moved = np.empty_like(state[key])
            _rows_of(moved, len(rank))[rank] = _rows_of(state[key], len(rank))
            state[key] = moved
    state["ranks"] = (user_rank, item_rank)


def in_id_order(state: dict) -> dict:
    """The state with its per-row arrays back in the caller's id order."""
    if "ranks" not in state:
        return state
    user_rank, item_rank = state["ranks"]
    restored = dict(state)
    for keys, rank in ((_USER_ROWS, user_rank), (_ITEM_ROWS, item_rank)):
        for key in keys:
            if state[key] is not None:
                restored[key] = _rows_of(state[key], len(rank))[rank].reshape(state[key].shape)
    return restored




def rating_grid(matrix, rng: np.random.Generator, blocks: int) -> RatingGrid:
    """The grid of ``blocks`` x ``blocks`` blocks and the ratings in visiting order.

    Users and items are shuffled: ``user_rank[u]`` is user ``u``'s place in the shuffled order,
    and user band ``k`` holds the users ranked ``[k n / blocks, (k + 1) n / blocks)``. The ids
    returned are ranks, not the caller's ids: the CPU engine stores the factor rows in rank
    order while training, so that each band is one contiguous stretch of memory and a block,
    sorted by user rank then item rank, walks its rows forwards. With ``blocks=1`` the ranks
    are the ids themselves (one block needs no shuffle). Both engines train over the same grid.
    """
    n_users, n_items = matrix.shape
    if blocks == 1:
        user_rank, item_rank = np.arange(n_users, dtype=np.int32), np.arange(n_items, dtype=np.int32)
    else:
        user_rank, item_rank = rng.permutation(n_users).astype(np.int32), rng.permutation(n_items).astype(np.int32)
    users, items, values, starts = ratings_by_block(matrix, user_rank, item_rank, blocks)
    order = interleaved_runs(starts)
    return RatingGrid(blocks, users[order], items[order], values[order], starts, user_rank, item_rank)
