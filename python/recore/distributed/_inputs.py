"""Interactions on the cluster: row shards of the user-item CSR and of the item-user CSR, built
once per fit and kept on the workers.

From a scipy matrix the driver cuts the shards and scatters them (and keeps its copy to
scatter again if a worker is lost). From Dask collections of (user, item, value) triples, or
Parquet files read into one, the workers build the shards themselves: a first pass counts the
entries of every user and item (and checks the values), a second sends each shard the triples
of its rows; the driver never holds the interactions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse as sp

from recore import kernels
from recore._validation import as_user_items, check_int, transpose_csr
from recore.distributed._cluster import balanced_bounds, gram_aligned_bounds


def shard_bounds(indptr: np.ndarray, num_shards: int, gram_factors: int | None) -> np.ndarray:
    """Row bounds of a side's shards, cut at equal numbers of entries; with ``gram_factors``,
    only on the bounds of the chunks that :func:`recore.kernels.gram_matrix` sums factors of
    that width over, so that the workers' per-chunk pieces add up to the same Gram matrix."""
    if gram_factors is None:
        return balanced_bounds(indptr, num_shards)
    chunk_bounds = kernels.gram_chunk_bounds(len(indptr) - 1, gram_factors)
    return gram_aligned_bounds(indptr, num_shards, chunk_bounds)


@dataclass
class ShardedMatrix:
    """Row shards of one CSR matrix, on the cluster."""

    n_rows: int
    n_cols: int
    bounds: np.ndarray  # shard s holds rows bounds[s]:bounds[s + 1]
    futures: list
    # Makes the given shards again, each on the worker named for it: {shard: worker} -> {shard: future}
    rebuild: Callable[[dict], dict]

    @property
    def num_shards(self) -> int:
        return len(self.bounds) - 1


@dataclass
class DistributedInteractions:
    n_users: int
    n_items: int
    nnz: int
    largest: float  # the largest absolute value, for the overflow check
    user_items: ShardedMatrix
    item_users: ShardedMatrix


def is_dask_collection(value) -> bool:
    return hasattr(value, "__dask_graph__") and callable(value.__dask_graph__)


def is_parquet_source(value) -> bool:
    if isinstance(value, (str, os.PathLike)):
        return True
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(isinstance(item, (str, os.PathLike)) for item in value)
    )


def row_block(csr, begin: int, end: int):
    """Rows ``begin:end`` of a canonical CSR matrix as a canonical CSR of the same index
    dtype (scipy's slicing may narrow int64 indices)."""
    first, last = int(csr.indptr[begin]), int(csr.indptr[end])
    indptr = np.asarray(csr.indptr[begin : end + 1] - csr.indptr[begin], dtype=csr.indptr.dtype)
    block = sp.csr_matrix(
        (csr.data[first:last].copy(), csr.indices[first:last].copy(), indptr), shape=(end - begin, csr.shape[1])
    )
    block.indices = block.indices.astype(csr.indices.dtype, copy=False)
    block.indptr = block.indptr.astype(csr.indptr.dtype, copy=False)
    block.has_sorted_indices = True
    return block


# -- from a matrix on the driver ----------------------------------------------------------------


def _scattered(client, csr, bounds: np.ndarray) -> Callable[[dict], dict]:
    def rebuild(placement: dict) -> dict:
        return {
            shard: client.scatter(row_block(csr, bounds[shard], bounds[shard + 1]), workers=[worker], hash=False)
            for shard, worker in placement.items()
        }

    return rebuild


def from_matrix(
    client, matrix, dtype, *, implicit: bool, num_shards: int, placement, gram_factors: int | None = None
) -> DistributedInteractions:
    """Shards of a scipy matrix (or dense array), cut and scattered by the driver (on Gram
    chunk bounds with ``gram_factors``, see :func:`shard_bounds`)."""
    user_items = as_user_items(matrix, dtype, allow_negative=not implicit)
    item_users = transpose_csr(user_items)
    sides = []
    for csr in (user_items, item_users):
        bounds = shard_bounds(csr.indptr, num_shards, gram_factors)
        count = len(bounds) - 1
        rebuild = _scattered(client, csr, bounds)
        futures = rebuild(placement(count))
        shards = [futures[s] for s in range(count)]
        sides.append(ShardedMatrix(csr.shape[0], csr.shape[1], bounds, shards, rebuild))
    largest = float(np.abs(user_items.data).max()) if user_items.nnz else 0.0
    return DistributedInteractions(*user_items.shape, user_items.nnz, largest, *sides)


# -- from triples on the cluster ----------------------------------------------------------------


def triple_partitions(source, columns: tuple[str, str, str]):
    """The delayed partitions of (user, item, value) triples: data frames, or (n, 3) blocks of
    an array."""
    import dask.dataframe as dd

    if is_parquet_source(source):
        paths = [os.fspath(p) for p in source] if isinstance(source, (list, tuple)) else os.fspath(source)
        source = dd.read_parquet(paths, columns=list(columns))
    if isinstance(source, dd.DataFrame):
        missing = [name for name in columns if name not in source.columns]
        if missing:
            raise ValueError(
                f"user_items has no column {missing[0]!r} (columns: {list(source.columns)}); "
                "name the columns with user_column=, item_column=, value_column="
            )
        return list(source[list(columns)].to_delayed())
    import dask.array as da

    if isinstance(source, da.Array):
        if source.ndim != 2 or source.shape[1] != 3:
            raise ValueError(f"a dask array user_items must have shape (n, 3): user, item, value; got {source.shape}")
        if source.dtype.kind not in "biuf":
            raise TypeError(f"user_items must hold real numbers, got dtype {source.dtype}")
        return list(source.rechunk({1: 3}).to_delayed().ravel())
    raise TypeError(
        "user_items must be a scipy.sparse matrix, a 2-D numpy array, a dask DataFrame or (n, 3) dask array of "
        f"(user, item, value) triples, or Parquet path(s); got {type(source).__name__}"
    )


def _columns_of(part, columns) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if isinstance(part, np.ndarray):
        return part[:, 0], part[:, 1], part[:, 2]
    if hasattr(part, "__cuda_array_interface__") or type(part).__module__.startswith("cudf"):
        raise RuntimeError(
            "user_items partitions are on the GPU, but recore's CUDA engine is not available in this build: "
            "give the workers pandas or numpy partitions"
        )
    return tuple(part[name].to_numpy() for name in columns)


def _ids(values: np.ndarray, name: str) -> np.ndarray:
    if values.dtype.kind == "f":
        # Arrays of triples hold ids as floats: accepted when they are whole numbers.
        if values.size and not (np.isfinite(values).all() and (values == np.floor(values)).all()):
            raise TypeError(f"user_items {name} ids must be integers")
    elif values.dtype.kind not in "iu":
        raise TypeError(f"user_items {name} ids must be integers, got dtype {values.dtype}")
    ids = values.astype(np.int64)
    if ids.size and ids.min() < 0:
        raise IndexError(f"user_items has negative {name} ids")
    return ids


def partition_triples(part, columns, dtype):
    """(users, items, values) of one partition, checked: integer ids >= 0, finite values."""
    users, items, values = _columns_of(part, columns)
    users, items = _ids(np.asarray(users), "user"), _ids(np.asarray(items), "item")
    values = np.asarray(values)
    if values.dtype.kind not in "biuf":
        raise TypeError(f"user_items values must be real numbers, got dtype {values.dtype}")
    with np.errstate(over="ignore"):
        values = values.astype(dtype)
    if not np.isfinite(values).all():
        raise ValueError("user_items contains NaN or infinite values")
    return users, items, values


def partition_summary(part, columns, dtype, implicit: bool):
    """Entries per user and per item of one partition, and its largest absolute value."""
    users, items, values = partition_triples(part, columns, dtype)
    if implicit and values.size and values.min() < 0:
        raise ValueError("user_items must not contain negative values for implicit feedback")
    largest = float(np.abs(values).max()) if values.size else 0.0
    return np.bincount(users), np.bincount(items), largest


def partition_bucket(part, columns, dtype, by_items: bool, begin: int, end: int):
    """The triples of one partition whose row (user, or item with ``by_items``) lies in
    ``begin:end``, as (rows, columns, values)."""
    users, items, values = partition_triples(part, columns, dtype)
    rows, cols = (items, users) if by_items else (users, items)
    keep = (rows >= begin) & (rows < end)
    return rows[keep] - begin, cols[keep], values[keep]


def assemble_shard(n_rows: int, n_cols: int, dtype, *buckets):
    """A canonical CSR shard from its buckets of triples (duplicates summed)."""
    rows = np.concatenate([b[0] for b in buckets]) if buckets else np.empty(0, np.int64)
    cols = np.concatenate([b[1] for b in buckets]) if buckets else np.empty(0, np.int64)
    values = np.concatenate([b[2] for b in buckets]) if buckets else np.empty(0, dtype)
    coo = sp.coo_matrix((values, (rows, cols)), shape=(n_rows, n_cols))
    return as_user_items(coo, dtype)


def _entries(shard) -> int:
    return int(shard.nnz)


def _padded_sum(arrays, length: int) -> np.ndarray:
    total = np.zeros(length, np.int64)
    for counts in arrays:
        total[: len(counts)] += counts
    return total


def _check_shape(shape):
    if shape is None:
        return None
    if not (isinstance(shape, tuple) and len(shape) == 2):
        raise TypeError(f"shape must be a (n_users, n_items) tuple, got {shape!r}")
    return check_int(shape[0], "shape[0]", 0), check_int(shape[1], "shape[1]", 0)


def from_triples(
    client, source, dtype, *, implicit: bool, columns, shape, num_shards: int, placement,
    gram_factors: int | None = None,
) -> DistributedInteractions:  # fmt: skip
    """Shards built on the workers from a Dask collection (or Parquet files) of triples (on
    Gram chunk bounds with ``gram_factors``, see :func:`shard_bounds`)."""
    shape = _check_shape(shape)
    delayed_parts = triple_partitions(source, columns)
    parts = client.compute(delayed_parts)
    summaries = client.gather([client.submit(partition_summary, p, columns, dtype, implicit) for p in parts])
    seen_users = max((len(s[0]) for s in summaries), default=0)
    seen_items = max((len(s[1]) for s in summaries), default=0)
    n_users, n_items = shape if shape is not None else (seen_users, seen_items)
    if seen_users > n_users:
        raise IndexError(f"user_items has user ids >= {n_users} (shape[0])")
    if seen_items > n_items:
        raise IndexError(f"user_items has item ids >= {n_items} (shape[1])")
    user_counts = _padded_sum([s[0] for s in summaries], n_users)
    item_counts = _padded_sum([s[1] for s in summaries], n_items)
    largest = max((s[2] for s in summaries), default=0.0)

    def side(counts, n_rows, n_cols, by_items, parts):
        bounds = shard_bounds(np.concatenate(([0], np.cumsum(counts))), num_shards, gram_factors)
        count = len(bounds) - 1

        def build(placement_now: dict, partitions=None) -> dict:
            # On a rebuild the partitions are computed again from their graph.
            partitions = partitions if partitions is not None else client.compute(delayed_parts)
            built = {}
            for shard, worker in placement_now.items():
                begin, end = int(bounds[shard]), int(bounds[shard + 1])
                buckets = [
                    client.submit(partition_bucket, p, columns, dtype, by_items, begin, end, pure=False)
                    for p in partitions
                ]
                built[shard] = client.submit(
                    assemble_shard, end - begin, n_cols, dtype, *buckets, workers=[worker], pure=False
                )
            return built

        futures = build(placement(count), parts)
        return ShardedMatrix(n_rows, n_cols, bounds, [futures[s] for s in range(count)], build)

    user_items = side(user_counts, n_users, n_items, False, parts)
    item_users = side(item_counts, n_items, n_users, True, parts)
    # Waits for every shard, and raises a worker's exception (a bad value, say) here; only
    # the entry counts travel.
    client.gather([client.submit(_entries, shard, pure=False) for shard in user_items.futures + item_users.futures])
    del parts  # the triples are no longer needed once the shards exist
    return DistributedInteractions(n_users, n_items, int(user_counts.sum()), largest, user_items, item_users)
