"""Low-level kernels: the building blocks the estimators, and the distributed and GPU
layers, call per shard.

Each kernel takes its buffers exactly as given: a scipy.sparse CSR matrix whose ``data`` is
float32 or float64 and whose ``indptr``/``indices`` are both int32 or both int64, and
C-contiguous factor arrays of the same float dtype. Nothing is converted or copied; a
buffer of the wrong type, shape or layout raises ``TypeError`` or ``ValueError`` naming the
argument, an index out of range raises ``IndexError``, and all of this happens before any
work starts. Every kernel releases the GIL while it runs.
"""

from __future__ import annotations

import numpy as np

from recore import _core

__all__ = [
    "als_half_step",
    "als_loss",
    "gram_chunk_bounds",
    "gram_fold",
    "gram_matrix",
    "gram_partials",
    "sgd_bpr_epoch",
    "sgd_bpr_triples",
    "sgd_rmse",
    "sgd_squared_epoch",
]


def gram_matrix(factors: np.ndarray, *, num_threads: int = 0) -> np.ndarray:
    """Return ``factors.T @ factors``.

    Parameters
    ----------
    factors : ndarray of shape (n, f), float32 or float64, C-contiguous
    num_threads : int, default 0
        Threads to use; 0 means all available. The result is bitwise identical for any
        value.

    Returns
    -------
    ndarray of shape (f, f), the dtype of ``factors``
    """
    return _core.gram_matrix(factors, num_threads=num_threads)


def gram_chunk_bounds(n_rows: int, factors: int) -> np.ndarray:
    """Row bounds of the chunks :func:`gram_matrix` sums separately.

    :func:`gram_matrix` cuts the rows of an ``(n_rows, factors)`` matrix into a fixed number
    of contiguous chunks (one per 512 rows, at most 64, or 16 for more than 256 factors),
    sums each chunk's Gram matrix in the factors' dtype, and adds the chunks' sums in
    float64 in chunk order. Chunk ``c`` holds rows ``bounds[c]:bounds[c + 1]``. The
    partition depends on the shape alone, so code holding the rows in pieces (the shards of
    :mod:`recore.distributed`) can cut them on these bounds and get the same Gram matrix,
    bit for bit, from :func:`gram_partials` and :func:`gram_fold`.

    Returns
    -------
    ndarray of int64, shape (chunks + 1,), from 0 to ``n_rows``
    """
    return _core.gram_chunk_bounds(n_rows, factors)


def gram_partials(factors: np.ndarray, chunk_bounds, *, num_threads: int = 0) -> np.ndarray:
    """Return the Gram matrix of each chunk of rows of ``factors``, summed as
    :func:`gram_matrix` sums its own chunks.

    Parameters
    ----------
    factors : ndarray of shape (n, f), float32 or float64, C-contiguous
    chunk_bounds : sequence of int, length chunks + 1
        Row bounds within ``factors``, non-decreasing within ``[0, n]``: chunk ``c`` is rows
        ``chunk_bounds[c]:chunk_bounds[c + 1]``.
    num_threads : int, default 0
        Threads to use (one chunk per thread at a time); the result is bitwise identical for
        any value.

    Returns
    -------
    ndarray of shape (chunks, f, f), the dtype of ``factors``
        ``partials[c] = factors[b[c]:b[c + 1]].T @ factors[b[c]:b[c + 1]]``, accumulated in
        the dtype of ``factors`` from the chunk's first row on. With the bounds of
        :func:`gram_chunk_bounds`, ``gram_fold(gram_partials(factors, bounds))`` is
        ``gram_matrix(factors)`` bit for bit; and so is the fold of the partials of pieces of
        ``factors`` cut on those bounds, stacked in row order.
    """
    bounds = np.asarray(chunk_bounds)
    if bounds.dtype.kind not in "iu":
        if bounds.size:
            raise TypeError(f"chunk_bounds must hold integers, got dtype {bounds.dtype}")
        bounds = np.empty(bounds.shape, np.int64)  # numpy makes [] float64
    return _core.gram_partials(factors, np.ascontiguousarray(bounds, dtype=np.int64), num_threads=num_threads)


def gram_fold(partials: np.ndarray) -> np.ndarray:
    """Return the sum of the chunks' Gram matrices ``partials`` (chunks, f, f), added in
    float64 in chunk order and rounded once to their dtype: the last step of
    :func:`gram_matrix` (see :func:`gram_partials`). The upper triangle of each partial is
    read; the result is symmetric."""
    return _core.gram_fold(partials)


def als_half_step(
    user_items,
    fixed_factors: np.ndarray,
    fixed_gram: np.ndarray | None,
    target_factors: np.ndarray,
    *,
    regularization: float,
    alpha: float = 1.0,
    feedback: str = "implicit",
    confidence: str = "linear",
    solver: str = "cg",
    cg_steps: int = 3,
    weighted_regularization: bool = False,
    num_threads: int = 0,
) -> None:
    """Solve every row of ``target_factors`` in place, ``fixed_factors`` held fixed.

    Row ``u`` of ``user_items`` (n_rows x n_cols) holds the entries that row ``u`` of
    ``target_factors`` (n_rows x f) is fitted to; ``fixed_factors`` (n_cols x f) has one row
    per column. To update item factors, pass the item-user matrix (the transpose).

    Implicit feedback: observed entries have preference 1 and confidence ``c``; all others
    preference 0 and confidence 1. Each row solves
    ``(YtY + Yu^T (Cu - I) Yu + regularization I) x = Yu^T Cu 1``.
    Explicit feedback: least squares over observed entries only,
    ``(Yu^T Yu + lambda_u I) x = Yu^T r_u`` where ``lambda_u`` is ``regularization``, or
    ``regularization * len(row)`` with ``weighted_regularization``.
    Rows without entries become zero.

    Parameters
    ----------
    user_items : scipy.sparse CSR matrix or array (n_rows, n_cols)
    fixed_factors : ndarray (n_cols, f)
    fixed_gram : ndarray (f, f) or None
        ``fixed_factors.T @ fixed_factors`` (see :func:`gram_matrix`); required for implicit
        feedback, ignored for explicit feedback.
    target_factors : ndarray (n_rows, f), writeable
        Updated in place. The conjugate-gradient solver starts from its current values.
    regularization : float >= 0
    alpha : float >= 0
        Confidence scale. ``confidence="linear"``: ``c = 1 + alpha * value``;
        ``confidence="scaled"``: ``c = alpha * value``.
    feedback : {"implicit", "explicit"}
    confidence : {"linear", "scaled"}
    solver : {"cg", "cholesky"}
    cg_steps : int >= 1
        Conjugate-gradient steps per row.
    weighted_regularization : bool
    num_threads : int >= 0
        0 means all available; results are bitwise identical for any value.
    """
    _core.als_solve(
        user_items,
        fixed_factors,
        fixed_gram,
        target_factors,
        regularization=regularization,
        alpha=alpha,
        feedback=feedback,
        confidence=confidence,
        solver=solver,
        cg_steps=cg_steps,
        weighted_regularization=weighted_regularization,
        num_threads=num_threads,
    )


def als_loss(
    user_items,
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    *,
    regularization: float,
    alpha: float = 1.0,
    feedback: str = "implicit",
    confidence: str = "linear",
    weighted_regularization: bool = False,
    num_threads: int = 0,
) -> float:
    """Return the full ALS training objective, without forming a dense matrix.

    Implicit feedback: ``sum over all (u, i) of c_ui (p_ui - x_u . y_i)^2`` plus
    ``regularization * (sum |x_u|^2 + sum |y_i|^2)``, with ``p = 1, c`` from ``alpha`` and
    ``confidence`` on observed entries and ``p = 0, c = 1`` elsewhere.
    Explicit feedback: ``sum over observed (r_ui - x_u . y_i)^2`` plus
    ``regularization * (sum w_u |x_u|^2 + sum w_i |y_i|^2)``, ``w = 1`` or the row's /
    column's count with ``weighted_regularization``.

    The sum is accumulated in double precision and is identical for any ``num_threads``.
    """
    return _core.als_loss(
        user_items,
        user_factors,
        item_factors,
        regularization=regularization,
        alpha=alpha,
        feedback=feedback,
        confidence=confidence,
        weighted_regularization=weighted_regularization,
        num_threads=num_threads,
    )


def sgd_squared_epoch(
    users, items, values, block_starts, block_order, blocks, user_factors, item_factors, factors, *,
    user_biases=None, item_biases=None, global_mean=0.0, user_rate_sums=None, item_rate_sums=None,
    learning_rate, regularization, bias_regularization=0.0, num_threads=0, slow_factors=0, slow_only=False,
) -> float:  # fmt: skip
    """One epoch of squared-loss SGD over ratings grouped in a ``blocks x blocks`` grid.

    Block ``b`` (user band ``b // blocks``, item band ``b % blocks``) holds the ratings at
    ``[block_starts[b], block_starts[b + 1])`` of ``users`` / ``items`` (int32) and ``values``
    (float32); every rating of a block must have its user in the block's user band and its
    item in its item band (the caller's grid), which is what lets threads update without
    locks. Threads take blocks in ``block_order``. Factor matrices are float32, padded to a
    multiple of 16 columns with zeros beyond ``factors``; biases and the adaptive schedule's
    rate sums are optional float32 vectors, updated in place. Returns the sum of squared
    errors of the predictions made just before each update. With ``slow_factors`` (a
    multiple of 16 below ``factors``) the rate sums hold two values per row, for the first
    ``slow_factors`` dimensions and for the rest, and ``slow_only`` updates the first part
    only. See :class:`recore.SGD`.
    """
    return _core.sgd_squared_epoch(
        users, items, values, block_starts, block_order, blocks, user_factors, item_factors, factors,
        user_biases, item_biases, global_mean, user_rate_sums, item_rate_sums,
        learning_rate, regularization, bias_regularization, num_threads, slow_factors, slow_only,
    )  # fmt: skip


def sgd_bpr_triples(
    users, positives, negatives, user_factors, item_factors, factors, *, item_biases=None, user_rate_sums=None,
    item_rate_sums=None, learning_rate, regularization, bias_regularization=0.0,
) -> int:  # fmt: skip
    """BPR updates for the given (user, positive, negative) int32 triples, in order, on one
    thread; returns how many were ranked right (x > 0) before their update."""
    return _core.sgd_bpr_triples(
        users, positives, negatives, user_factors, item_factors, factors, item_biases, user_rate_sums,
        item_rate_sums, learning_rate, regularization, bias_regularization,
    )  # fmt: skip


def sgd_bpr_epoch(
    indptr, indices, samples, user_factors, item_factors, factors, *, seed=0, popularity_negatives=False,
    item_biases=None, user_rate_sums=None, item_rate_sums=None, learning_rate, regularization,
    bias_regularization=0.0, num_threads=0,
) -> float:  # fmt: skip
    """One Hogwild epoch of BPR over ``samples`` triples drawn from the positives of a CSR
    structure (``indptr`` int64, ``indices`` int32 sorted within rows); returns the sampled
    AUC before the updates."""
    return _core.sgd_bpr_epoch(
        indptr, indices, samples, popularity_negatives, seed, user_factors, item_factors, factors, item_biases,
        user_rate_sums, item_rate_sums, learning_rate, regularization, bias_regularization, num_threads,
    )  # fmt: skip


def sgd_rmse(
    users, items, values, user_factors, item_factors, factors, *, user_biases=None, item_biases=None,
    global_mean=0.0, num_threads=0,
) -> float:  # fmt: skip
    """RMSE of ``global_mean + b_u + b_i + p_u . q_i`` over the given ratings (padded factors)."""
    return _core.sgd_rmse(
        users, items, values, user_factors, item_factors, factors, user_biases, item_biases, global_mean, num_threads
    )
