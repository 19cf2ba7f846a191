"""Exact top-k search over factor matrices.

:func:`topk` finds, for every query vector, the ``k`` item vectors with the largest scores
(dot product or cosine), in blocks that stay in cache: the full queries x items score matrix
is never formed, and each query's excluded items are skipped inside the search.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recore import _core
from recore._validation import _check_compressed, check_bool, check_choice, check_ids, check_int

__all__ = ["topk", "bfloat16_supported"]

_INT32_MAX = np.iinfo(np.int32).max


def bfloat16_supported() -> bool:
    """Whether ``precision="bfloat16"`` scores in bfloat16 on this machine.

    It needs a CPU with AVX512-BF16 and a kernel for it; where either is missing,
    ``precision="bfloat16"`` runs in float32, which gives the same results.
    """
    return False


def _factor_matrix(array, name: str) -> np.ndarray:
    """A float32 C-contiguous 2-D array, as given (never converted)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(array).__name__}")
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional, got {array.ndim} dimensions")
    if array.dtype != np.float32:
        raise TypeError(f"{name} must have dtype float32, got {array.dtype} (convert it with .astype(np.float32))")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
    return array


def normalized_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); a zero row stays zero, so that its cosine with
    any vector is 0."""
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64))
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return np.ascontiguousarray(vectors * scale[:, None].astype(np.float32), dtype=np.float32)


def as_exclusions(exclude, n_queries: int, n_items: int):
    """Per-query exclusions as a CSR matrix with sorted, unique indices (int32 or int64);
    every stored entry excludes its item, whatever its value. Not copied when already so."""
    if not sp.issparse(exclude):
        raise TypeError(f"exclude must be a scipy.sparse matrix, got {type(exclude).__name__}")
    if exclude.ndim != 2 or exclude.shape != (n_queries, n_items):
        raise ValueError(
            f"exclude must have one row per query and one column per item: shape "
            f"{(n_queries, n_items)}, got {exclude.shape}"
        )
    if exclude.format == "csr":
        _check_compressed(exclude, "exclude")
    csr = exclude if exclude.format == "csr" else exclude.tocsr()
    index_dtype = np.int64 if max(csr.nnz, n_items) > _INT32_MAX else np.int32
    if not (csr.has_canonical_format and csr.indices.dtype == index_dtype and csr.indptr.dtype == index_dtype):
        csr = sp.csr_matrix(
            (np.ones(csr.nnz, dtype=np.float32), csr.indices.copy(), csr.indptr.copy()), shape=csr.shape
        )
        csr.sum_duplicates()
        csr.indices = csr.indices.astype(index_dtype, copy=False)
        csr.indptr = csr.indptr.astype(index_dtype, copy=False)
    return csr


def _item_ids(ids, n_items: int, name: str) -> np.ndarray:
    array = check_ids(np.atleast_1d(np.asarray(ids)), n_items, name)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-dimensional list of item ids")
    return np.unique(array)


def denied_bits(ids: np.ndarray, n_items: int) -> np.ndarray:
    """A bitmap over the catalog, 64 items per uint64 word, bit ``i % 64`` of word ``i // 64``
    set for each id ``i``."""
    bits = np.zeros(((n_items + 63) // 64) * 64, dtype=bool)
    bits[ids] = True
    return np.packbits(bits.reshape(-1, 8), axis=1, bitorder="little").reshape(-1).view("<u8")


def topk(
    queries: np.ndarray,
    items: np.ndarray,
    k: int,
    *,
    metric: str = "dot",
    exclude=None,
    allow=None,
    deny=None,
    precision: str = "float32",
    num_threads: int = 0,
    check_finite: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best items for each query, best first.

    Parameters
    ----------
    queries : ndarray (n_queries, f) or (f,), float32, C-contiguous
        A 1-D query gives 1-D results.
    items : ndarray (n_items, f), float32, C-contiguous
    k : int >= 1
        Any size: with fewer than ``k`` candidates a row ends with id -1 and score -inf.
    metric : "dot" or "cosine"
        Cosine scores are dot products of unit-length rows, each computed once per call; a
        zero vector (query or item) has cosine 0 with everything.
    exclude : scipy.sparse matrix (n_queries, n_items), optional
        Row q lists the items query q must never get (for example a user's training
        items): every stored entry excludes its item, whatever its value.
    allow : array-like of item ids, optional
        Only these items are searched, for every query.
    deny : array-like of item ids, optional
        These items are never returned, for any query.
    precision : "float32" or "bfloat16"
        bfloat16 results are always identical to float32 results (see
        :func:`bfloat16_supported`).
    num_threads : int, default 0 (all cores)
    check_finite : bool, default True
        Reject NaN or infinity in ``queries`` and ``items`` (ValueError) before searching.
        This reads every item once more; a server that checked its factors when it loaded
        them can turn it off (a model's own methods do).

    Returns
    -------
    ids : ndarray (n_queries, k), int32 (int64 for catalogs of 2**31 items or more)
    scores : ndarray (n_queries, k), float32
        Sorted by score, descending; equal scores by id, ascending. Each score is the dot
        product summed in factor order in float32, the same whatever the batch or threads.
    """
    single = isinstance(queries, np.ndarray) and queries.ndim == 1
    if single:
        queries = queries[None, :]
    queries = _factor_matrix(queries, "queries")
    items = _factor_matrix(items, "items")
    k = check_int(k, "k", minimum=1)
    check_choice(metric, "metric", ("dot", "cosine"))
    check_choice(precision, "precision", ("float32", "bfloat16"))
    num_threads = check_int(num_threads, "num_threads", minimum=0)
    if queries.shape[1] != items.shape[1]:
        raise ValueError(
            f"queries and items must have the same number of factors, got {queries.shape[1]} and {items.shape[1]}"
        )
    n_items = items.shape[0]
    exclusions = None if exclude is None else as_exclusions(exclude, queries.shape[0], n_items)
    if metric == "cosine":
        queries, items = normalized_rows(queries), normalized_rows(items)
    item_ids = None
    if allow is not None:
        item_ids = _item_ids(allow, n_items, "allow")
        items = np.ascontiguousarray(items[item_ids])
    denied = None
    if deny is not None:
        denied_ids = _item_ids(deny, n_items, "deny")
        denied = denied_bits(denied_ids, n_items)
    ids, scores = _core.topk(
        queries,
        items,
        k,
        exclude=exclusions,
        denied=denied,
        item_ids=item_ids,
        catalog_size=n_items,
        wide_ids=n_items > _INT32_MAX,
        check_finite=check_bool(check_finite, "check_finite"),
        num_threads=num_threads,
    )
    return (ids[0], scores[0]) if single else (ids, scores)
