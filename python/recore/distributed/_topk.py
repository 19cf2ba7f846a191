"""Exact top-k for every user on a Dask cluster: item factors in shards, query batches
broadcast to them, recore's own search per shard, and a k-way merge on the driver."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recore._validation import check_int
from recore.backends import cpu as _cpu
from recore.distributed import _cluster
from recore.distributed._cluster import WorkerLostError
from recore._filters import as_exclusions

__all__ = ["merge_topk", "recommend_all"]

# Users per broadcast batch: 4096 x 64 float32 queries are 1 MiB, small against a shard's
# search time, and the results of a few batches in flight stay small on the workers.
_DEFAULT_BATCH = 4096
# Batches submitted ahead of the one being gathered.
_BATCHES_IN_FLIGHT = 4


def _check_matrix(array, name: str) -> None:
    """A 2-D array of real numbers (numpy or dask: both have ndim and dtype)."""
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional, got {array.ndim} dimensions")
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")


def _as_factors(array, name: str) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(array).__name__}")
    _check_matrix(array, name)
    factors = np.ascontiguousarray(array, dtype=np.float32)
    if not _cpu.all_finite(factors):
        raise ValueError(f"{name} contains NaN or infinity")
    return factors


def merge_topk(parts, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of several shards' top-k lists of the same queries.

    Parameters
    ----------
    parts : sequence of (ids, scores)
        One pair per shard, each of shape (n_queries, k_shard): catalog ids (int64, -1 for
        padding) and float32 scores.
    k : int >= 1
        Length of the merged lists.

    Returns
    -------
    ids : int64 ndarray (n_queries, k)
        Score descending, the lower id first among equal scores, padding (id -1) last.
    scores : float32 ndarray (n_queries, k)
        The scores of ``ids``; -inf for padding.
    """
    ids = np.concatenate([p[0] for p in parts], axis=1)
    scores = np.concatenate([p[1] for p in parts], axis=1)
    # Padding sorts after every real candidate, even one scoring -inf.
    id_key = np.where(ids < 0, np.iinfo(np.int64).max, ids)
    order = np.lexsort((id_key, -scores.astype(np.float64)), axis=1)[:, :k]
    ids = np.take_along_axis(ids, order, axis=1)
    scores = np.take_along_axis(scores, order, axis=1)
    if ids.shape[1] < k:  # fewer candidates than k in all shards together
        pad = k - ids.shape[1]
        ids = np.concatenate([ids, np.full((ids.shape[0], pad), -1, ids.dtype)], axis=1)
        scores = np.concatenate([scores, np.full((scores.shape[0], pad), -np.inf, np.float32)], axis=1)
    return ids, scores


def _exclusion_shards(user_items, n_users: int, n_items: int, bounds: np.ndarray) -> list:
    """Each item shard's columns of the exclusions, re-indexed from 0."""
    if user_items is None:
        return [None] * (len(bounds) - 1)
    if not sp.issparse(user_items):
        raise TypeError(f"user_items must be a scipy.sparse matrix, got {type(user_items).__name__}")
    if user_items.ndim != 2 or user_items.shape != (n_users, n_items):
        raise ValueError(f"user_items must have shape {(n_users, n_items)} (users x items), got {user_items.shape}")
    exclude = as_exclusions(user_items, n_users, n_items)
    return [
        as_exclusions(exclude[:, bounds[s] : bounds[s + 1]].tocsr(), n_users, int(bounds[s + 1] - bounds[s]))
        for s in range(len(bounds) - 1)
    ]


def _query_batches(user_factors, batch_size: int, client):
    """(first user, queries) per batch: numpy slices, or a dask array's blocks as futures."""
    if isinstance(user_factors, np.ndarray):
        n = user_factors.shape[0]
        starts = list(range(0, n, batch_size))
        # A last batch of one or two users would be searched by another kernel path; fold it
        # into the one before (the scores are the same either way, the work more even).
        if len(starts) > 1 and n - starts[-1] <= 2:
            starts.pop()
        ends = starts[1:] + [n]
        for first, end in zip(starts, ends):
            yield first, client.scatter(user_factors[first:end], broadcast=True, hash=False)
        return
    first = 0
    for block, rows in zip(user_factors.to_delayed().ravel(), user_factors.chunks[0]):
        yield first, client.compute(block)
        first += rows


def _check_user_factors(user_factors, width: int):
    if isinstance(user_factors, np.ndarray):
        factors = _as_factors(user_factors, "user_factors")
    else:
        import dask.array as da

        if not isinstance(user_factors, da.Array):
            raise TypeError(f"user_factors must be a numpy or dask array, got {type(user_factors).__name__}")
        _check_matrix(user_factors, "user_factors")
        # One block of columns per block of users; float32 C-contiguous blocks like the numpy path.
        factors = user_factors.rechunk({1: -1}).map_blocks(
            lambda block: np.ascontiguousarray(block, dtype=np.float32), dtype=np.float32
        )
    if factors.shape[1] != width:
        raise ValueError(f"user_factors has {factors.shape[1]} columns, item_factors {width}: they must have as many")
    return factors


def recommend_all(
    user_factors,
    item_factors,
    k: int = 10,
    *,
    user_items=None,
    client=None,
    num_shards: int | None = None,
    batch_size: int = _DEFAULT_BATCH,
    num_threads: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best items for every user, searched on a Dask cluster.

    The item factors are cut into ``num_shards`` contiguous shards, each kept on one worker
    with its columns of ``user_items``; batches of users are broadcast to every shard, each
    shard searches with :func:`recore.topk` (excluding the batch's items that fall in its
    range), and the driver merges the shards' lists. The result equals
    :meth:`recore.ALS.recommend_all` (and :func:`recore.topk` with the same exclusions) id
    for id and score for score: every score is the same dot product, and the merge keeps
    recore's order.

    Parameters
    ----------
    user_factors : ndarray or dask array (n_users, f)
        The queries. A dask array (for example the ``user_factors_`` of
        :class:`recore.distributed.ALS` fitted with ``output="dask"``) is searched a block
        of rows at a time, each block computed on the workers.
    item_factors : ndarray (n_items, f)
        Real numbers, searched as float32.
    k : int >= 1
        Rows with fewer candidates end with id -1 and score -inf.
    user_items : scipy.sparse matrix (n_users, n_items), optional
        Every stored item of a user's row is left out of that user's results.
    client : dask.distributed.Client, optional
        Defaults to the current client.
    num_shards : int, optional
        Item shards; one per worker by default.
    batch_size : int >= 1
        Users per broadcast batch (numpy ``user_factors``).
    num_threads : int >= 0
        Threads per worker; 0 uses the worker's own thread count.

    Returns
    -------
    ids : int32 ndarray (n_users, k)
        Item ids, best first (int64 for catalogs beyond int32).
    scores : float32 ndarray (n_users, k)
        Their scores, descending.

    Raises
    ------
    TypeError
        A factor matrix is not a numpy (or, for ``user_factors``, dask) array of real
        numbers, or ``user_items`` is not a scipy.sparse matrix.
    ValueError
        Shapes that do not fit together, or NaN or infinity in the factors.
    WorkerLostError
        A worker was lost during the search; no results are kept.
    """
    items = _as_factors(item_factors, "item_factors")
    queries = _check_user_factors(user_factors, items.shape[1])
    k = check_int(k, "k", 1)
    batch_size = check_int(batch_size, "batch_size", 1)
    num_threads = check_int(num_threads, "num_threads", 0)
    n_users, n_items = int(queries.shape[0]), items.shape[0]
    client = _cluster.resolve_client(client)
    workers = _cluster.live_workers(client)
    num_shards = min(_cluster.check_num_shards(num_shards, len(workers)), max(1, n_items))
    bounds = _cluster.even_bounds(n_items, num_shards)
    exclusions = _exclusion_shards(user_items, n_users, n_items, bounds)
    id_dtype = np.int64 if n_items > np.iinfo(np.int32).max else np.int32
    try:
        item_shards = [
            client.scatter(np.ascontiguousarray(items[bounds[s] : bounds[s + 1]]), workers=[workers[s % len(workers)]])
            for s in range(num_shards)
        ]
        exclusion_shards = [
            None if exclusions[s] is None else client.scatter(exclusions[s], workers=[workers[s % len(workers)]])
            for s in range(num_shards)
        ]
        results = _search(client, queries, item_shards, exclusion_shards, bounds, workers, k, batch_size, num_threads)
    except _cluster.lost_worker_errors() as error:
        message = f"a worker was lost during the distributed top-k; no results were kept: {error}"
        raise WorkerLostError(message) from error
    if not results:
        return np.empty((0, k), id_dtype), np.empty((0, k), np.float32)
    ids = np.concatenate([r[0] for r in results]).astype(id_dtype)
    scores = np.concatenate([r[1] for r in results])
    return ids, scores


def _search(client, queries, item_shards, exclusion_shards, bounds, workers, k, batch_size, num_threads):
    pending: list = []  # each batch's per-shard futures, oldest first
    results: list = []

    def finish_oldest():
        parts = client.gather(pending.pop(0))
        results.append(merge_topk(parts, k))

    for first, batch in _query_batches(queries, batch_size, client):
        pending.append(
            [
                client.submit(
                    _cluster.shard_topk,
                    batch,
                    item_shards[s],
                    exclusion_shards[s],
                    first,
                    int(bounds[s]),
                    k,
                    num_threads,
                    workers=[workers[s % len(workers)]],
                    allow_other_workers=True,
                    pure=False,
                )  # fmt: skip
                for s in range(len(item_shards))
            ]
        )
        if len(pending) > _BATCHES_IN_FLIGHT:
            finish_oldest()
    while pending:
        finish_oldest()
    return results
