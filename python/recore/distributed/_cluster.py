"""The cluster side shared by distributed ALS and top-k: finding the client, placing shards on
workers, recognising a lost worker, and the functions that run on the workers."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recore import kernels
from recore._validation import check_int
from recore.backends import cpu as _cpu
from recore.topk import topk


class WorkerLostError(RuntimeError):
    """A worker was lost and the distributed computation could not recover.

    Raised by :meth:`recore.distributed.ALS.fit` when workers are lost more often than its
    ``max_recoveries`` allows, and by :func:`recore.distributed.recommend_all` at the first
    loss; no partial result is kept.
    """


def resolve_client(client):
    """The given Dask client, or the current one; ValueError when there is none."""
    try:
        from dask.distributed import Client, default_client
    except ImportError as missing:  # pragma: no cover - exercised only without the extra
        raise ImportError("recore.distributed needs dask.distributed: pip install 'recore[distributed]'") from missing
    if client is None:
        try:
            return default_client()
        except ValueError:
            raise ValueError("no Dask client: pass client= or create one (dask.distributed.Client)") from None
    if not isinstance(client, Client):
        raise TypeError(f"client must be a dask.distributed.Client, got {type(client).__name__}")
    return client


def live_workers(client) -> list[str]:
    """Addresses of the workers now connected, sorted so that placement is reproducible.

    Asked of the scheduler directly (``Client.nthreads``): ``Client.scheduler_info()`` returns
    a cached record that the client's own periodic refresh rewrites without the workers, and a
    read that lands after such a refresh sees an empty cluster."""
    workers = sorted(client.nthreads())
    if not workers:
        raise RuntimeError("the Dask cluster has no workers")
    return workers


def check_num_shards(num_shards, n_workers: int) -> int:
    """``num_shards`` checked, or one shard per worker when None."""
    if num_shards is None:
        return n_workers
    return check_int(num_shards, "num_shards", 1)


def balanced_bounds(indptr: np.ndarray, num_shards: int) -> np.ndarray:
    """Row boundaries of ``num_shards`` contiguous shards holding about equal numbers of
    entries (the solve time of a row grows with its entries), from CSR row pointers."""
    n_rows = len(indptr) - 1
    total = int(indptr[-1])
    if total == 0:
        cuts = np.linspace(0, n_rows, num_shards + 1)
        return np.round(cuts).astype(np.int64)
    targets = np.arange(1, num_shards) * (total / num_shards)
    inner = np.searchsorted(indptr, targets, side="left").astype(np.int64)
    return np.concatenate(([0], np.clip(inner, 0, n_rows), [n_rows])).astype(np.int64)


def gram_aligned_bounds(indptr: np.ndarray, num_shards: int, chunk_bounds: np.ndarray) -> np.ndarray:
    """Row boundaries of contiguous shards made of whole chunks (rows
    ``chunk_bounds[c]:chunk_bounds[c + 1]``), holding about equal numbers of entries: each cut
    is the chunk boundary nearest, in entries, to the entry-balanced cut.

    There are ``min(num_shards, chunks)`` shards and none is without rows (every chunk has
    rows when there are any), so a matrix of fewer chunks than ``num_shards`` gets fewer
    shards rather than empty ones.
    """
    chunk_bounds = np.asarray(chunk_bounds, dtype=np.int64)
    chunks = len(chunk_bounds) - 1
    shards = min(num_shards, chunks)
    # Entries before each chunk boundary; rows when there are no entries at all.
    weight = np.asarray(indptr, dtype=np.int64)[chunk_bounds]
    if weight[-1] == 0:
        weight = chunk_bounds
    total = int(weight[-1])
    cuts = [0]
    for shard in range(1, shards):
        target = shard * total / shards
        above = int(np.searchsorted(weight, target, side="left"))
        nearest = above if above == 0 or weight[above] - target < target - weight[above - 1] else above - 1
        # At least one chunk for this shard and for each of those still to come.
        cuts.append(min(max(nearest, cuts[-1] + 1), chunks - (shards - shard)))
    cuts.append(chunks)
    return chunk_bounds[cuts]


def chunks_within(chunk_bounds: np.ndarray, begin: int, end: int) -> np.ndarray:
    """The chunk bounds inside rows ``begin:end`` (themselves chunk bounds), counted from ``begin``."""
    inside = chunk_bounds[(chunk_bounds >= begin) & (chunk_bounds <= end)]
    if len(inside) == 0 or inside[0] != begin or inside[-1] != end:
        raise RuntimeError(f"shard rows {begin}:{end} do not start and end on Gram chunk bounds")
    return inside - begin


def even_bounds(n: int, num_shards: int) -> np.ndarray:
    """Boundaries of ``num_shards`` contiguous ranges of ``0..n`` as equal as possible."""
    return (np.arange(num_shards + 1, dtype=np.int64) * n) // num_shards


def lost_worker_errors() -> tuple[type[BaseException], ...]:
    """The exceptions by which Dask reports that a worker (and the data it held) is gone."""
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker

    # OSError and TimeoutError: a transfer to or from a worker that has just died.
    errors = [FutureCancelledError, CommClosedError, KilledWorker, OSError, TimeoutError]
    try:
        from asyncio import CancelledError

        errors.append(CancelledError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def is_lost(future) -> bool:
    """Whether a future's data is gone (its worker died and it has no lineage to rebuild it)."""
    return future.status in ("lost", "cancelled", "error")


# -- functions that run on the workers ----------------------------------------------------------


def on_gpu(array) -> bool:
    """Whether ``array`` lives in GPU memory (cupy, or any CUDA array interface)."""
    return hasattr(array, "__cuda_array_interface__")


def _check_host(*arrays) -> None:
    # Device follows the data: a GPU array would need recore's CUDA kernels, which this build
    # does not have. Saying so beats a silent copy to the host.
    if any(on_gpu(array) for array in arrays):
        raise RuntimeError(
            "a worker received GPU arrays, but recore's CUDA engine is not available in this build: "
            "give the workers numpy data (or install a recore build with CUDA kernels)"
        )


def _aligned(value):
    """``value`` with every array aligned to its element type. Arrays that arrive through
    Dask's serialization can sit at any byte offset in a message frame, and the engine reads
    them as typed memory; a misaligned one is copied (an aligned one is used as it is)."""
    if value is None:
        return None
    if sp.issparse(value):
        parts = [_aligned(getattr(value, name)) for name in ("data", "indices", "indptr")]
        if all(part is getattr(value, name) for part, name in zip(parts, ("data", "indices", "indptr"))):
            return value
        return type(value)(tuple(parts), shape=value.shape)
    if isinstance(value, np.ndarray) and not value.flags.aligned:
        return value.copy()
    return value


def _on_host(*arrays):
    """The arrays, checked to be host memory (see _check_host) and aligned (see _aligned)."""
    _check_host(*(array for array in arrays if array is not None))
    return tuple(_aligned(array) for array in arrays)


def worker_threads(num_threads: int) -> int:
    """``num_threads``, or this worker's own thread count for 0 (so that two workers sharing a
    machine do not both claim every core)."""
    if num_threads:
        return num_threads
    try:
        from distributed import get_worker

        worker = get_worker()
    except ValueError:  # not on a worker: the engine's default, every core
        return 0
    state = getattr(worker, "state", worker)
    return int(getattr(state, "nthreads", 0) or 0)


def solve_shard(rows, fixed, gram, target, options: dict):
    """One shard's part of an ALS half-step: its rows of the target factors solved against
    the broadcast fixed factors, by recore's own kernel. Returns new factors: a task's inputs
    are shared, and a retried task must start from the same ones."""
    rows, fixed, gram, target = _on_host(rows, fixed, gram, target)
    updated = np.array(target, copy=True, order="C")
    options = dict(options, num_threads=worker_threads(options["num_threads"]))
    kernels.als_half_step(rows, fixed, gram, updated, **options)
    return updated


def gram_partials(factors, chunk_bounds, num_threads: int):
    """The Gram matrices of the chunks this shard's factors cover (``chunk_bounds`` counted
    from the shard's first row), as :func:`recore.kernels.gram_matrix` sums them; the
    driver folds every shard's in order."""
    factors, chunk_bounds = _on_host(factors, chunk_bounds)
    return kernels.gram_partials(factors, chunk_bounds, num_threads=worker_threads(num_threads))


def shard_loss(rows, user_factors, item_factors, options: dict) -> float:
    """The objective's terms of one user shard's rows: their entries and their users'
    penalties (the items' penalties are summed over the item shards, see
    :func:`shard_regularization`)."""
    rows, user_factors, item_factors = _on_host(rows, user_factors, item_factors)
    options = dict(options, num_threads=worker_threads(options["num_threads"]))
    return kernels.als_loss(rows, user_factors, item_factors, item_regularization=False, **options)


def shard_regularization(rows, factors, options: dict) -> float:
    """The penalties of one shard's rows in the objective: each row's count of entries is its
    length in the shard (which holds whole rows), the other side's size its column count."""
    rows, factors = _on_host(rows, factors)
    counts = np.diff(np.asarray(rows.indptr, dtype=np.int64))
    return kernels.als_regularization(factors, counts, rows.shape[1], **options)


def shard_topk(queries, items, exclude, first_query: int, first_item: int, k: int, num_threads: int):
    """Top-k of a query batch among one item shard, with the shard's exclusions for those
    queries, ids returned as catalog ids."""
    queries, items, exclude = _on_host(queries, items, exclude)
    if not _cpu.all_finite(queries):  # a dask array's blocks are first seen here
        raise ValueError("user_factors contains NaN or infinity")
    rows = None
    if exclude is not None:
        rows = exclude[first_query : first_query + queries.shape[0]]
    ids, scores = topk(queries, items, k, exclude=rows, num_threads=worker_threads(num_threads), check_finite=False)
    ids = ids.astype(np.int64, copy=False)
    return np.where(ids >= 0, ids + first_item, -1), scores
