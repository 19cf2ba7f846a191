"""The CPU backend: recore's compiled CPU engine (``recore._core``) as the estimators, the
search, the evaluation and the distributed layer call it. It is the only module besides the
CUDA backend that imports a compiled engine; :mod:`recore.kernels` is its public face.

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
from recore._validation import as_user_items, transpose_csr

name = "cpu"
xp = np

# Layout constants, as the engine defines them.
#: Batches of at most this many queries take the single-query path, which reads item panels.
SINGLE_QUERY_PATH_MAX: int = _core.SINGLE_QUERY_PATH_MAX
#: Items per panel of the single-query layout.
PANEL_ITEMS: int = _core.PANEL_ITEMS
#: SGD factor rows are stored with strides in multiples of this many floats.
SGD_ROW_FLOATS: int = _core.SGD_ROW_FLOATS
#: The slow dimensions of SGD's two-speed schedule (the kernels keep rows with this split in registers).
SGD_SLOW_FACTORS: int = _core.SGD_SLOW_FACTORS

#: Whether the engine was built with OpenMP (without it, every kernel runs on one thread).
openmp: bool = bool(getattr(_core, "openmp", False))

available_cpu_targets = _core.available_cpu_targets
cpu_target = _core.cpu_target
set_cpu_target = _core.set_cpu_target


def default_threads() -> int:
    """Threads a kernel uses when ``num_threads`` is 0."""
    return int(_core.default_threads())


def all_finite(array: np.ndarray) -> bool:
    """Whether a float32 C-contiguous 2-D array holds no NaN or infinity (read in parallel)."""
    return bool(_core.all_finite(array))


def check_als_options(*, feedback, confidence, solver, regularization, alpha, cg_steps, weighted_regularization,
                      num_threads, unobserved_weight=1.0, regularization_exponent=0.0, block_size=32,
                      subspace_sweeps=1) -> None:  # fmt: skip
    """ValueError naming the first invalid ALS option: the engines' one check."""
    _core.check_als_options(
        feedback=feedback, confidence=confidence, solver=solver, regularization=regularization, alpha=alpha,
        cg_steps=cg_steps, weighted_regularization=weighted_regularization, num_threads=num_threads,
        unobserved_weight=unobserved_weight, regularization_exponent=regularization_exponent, block_size=block_size,
        subspace_sweeps=subspace_sweeps,
    )  # fmt: skip


# -- interactions and factors, as this backend holds them ------------------------------------


def interactions(matrix, dtype, *, name: str = "user_items", allow_negative: bool = True):
    """A canonical CSR of ``dtype`` (see recore._validation.as_user_items)."""
    return as_user_items(matrix, dtype, name=name, allow_negative=allow_negative)


def transpose(rows):
    return transpose_csr(rows)


def largest_abs(rows) -> float:
    return float(np.abs(rows.data).max()) if rows.nnz else 0.0


def from_host(array: np.ndarray) -> np.ndarray:
    return array


def to_host(array):
    return array


# -- search and evaluation --------------------------------------------------------------------

topk = _core.topk
item_panels = _core.item_panels
bfloat16_panels = _core.bfloat16_panels
ranking_totals = _core.ranking_totals


# -- kernels (recore.kernels) -----------------------------------------------------------------


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

    Parameters
    ----------
    n_rows : int >= 0
        Rows of the factor matrix.
    factors : int >= 0
        Its columns.

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
    """Return the sum of the chunks' Gram matrices, added in float64 in chunk order and
    rounded once to their dtype: the last step of :func:`gram_matrix` (see
    :func:`gram_partials`).

    Parameters
    ----------
    partials : ndarray (chunks, f, f), float32 or float64, C-contiguous
        The upper triangle of each partial is read.

    Returns
    -------
    ndarray (f, f), the dtype of ``partials``, symmetric
    """
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
    unobserved_weight: float = 1.0,
    regularization_exponent: float = 0.0,
    block_size: int = 32,
    subspace_sweeps: int = 1,
) -> None:
    """Solve every row of ``target_factors`` in place, ``fixed_factors`` held fixed.

    Row ``u`` of ``user_items`` (n_rows x n_cols) holds the entries that row ``u`` of
    ``target_factors`` (n_rows x f) is fitted to; ``fixed_factors`` (n_cols x f) has one row
    per column. To update item factors, pass the item-user matrix (the transpose).

    Implicit feedback: observed entries have preference 1 and confidence ``c``; all others
    preference 0 and weight ``alpha0 = unobserved_weight``. Each row solves
    ``(alpha0 YtY + Yu^T (Cu - alpha0 I) Yu + lambda_u I) x = Yu^T Cu 1`` with
    ``lambda_u = regularization * (n_u + alpha0 * n_cols) ** regularization_exponent``
    (``n_u`` the row's stored entries; exponent 0 gives plain ``regularization``, or
    ``regularization * n_u`` with ``weighted_regularization``).
    Explicit feedback: least squares over observed entries only,
    ``(Yu^T Yu + lambda_u I) x = Yu^T r_u`` where ``lambda_u`` is
    ``regularization * n_u ** regularization_exponent`` (``regularization``, or
    ``regularization * n_u`` with ``weighted_regularization``, for exponent 0).
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
    solver : {"cg", "cholesky", "subspace"}
        Conjugate gradient warm-started from ``target_factors``, the exact solve, or iALS++
        block coordinate descent (see :class:`recore.ALS`), also warm-started.
    cg_steps : int >= 1
        Conjugate-gradient steps per row.
    weighted_regularization : bool
    num_threads : int >= 0
        0 means all available; results are bitwise identical for any value.
    unobserved_weight : float >= 0
        ``alpha0``; implicit feedback only (must be 1.0 for explicit feedback).
    regularization_exponent : float >= 0
        ``nu``; not together with ``weighted_regularization``.
    block_size : int >= 1
        Factors per block of the subspace solver.
    subspace_sweeps : int >= 1
        Passes over all blocks per row of the subspace solver.
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
        unobserved_weight=unobserved_weight,
        regularization_exponent=regularization_exponent,
        block_size=block_size,
        subspace_sweeps=subspace_sweeps,
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
    unobserved_weight: float = 1.0,
    regularization_exponent: float = 0.0,
    item_regularization: bool = True,
) -> float:
    """Return the full ALS training objective, without forming a dense matrix.

    Implicit feedback: ``sum over observed (u, i) of c_ui (1 - x_u . y_i)^2`` plus
    ``alpha0 * sum over unobserved (u, i) of (x_u . y_i)^2`` plus
    ``sum_u lambda_u |x_u|^2 + sum_i lambda_i |y_i|^2``, with ``c`` from ``alpha`` and
    ``confidence``, ``alpha0 = unobserved_weight``,
    ``lambda_u = regularization * (n_u + alpha0 * n_items) ** regularization_exponent`` and
    ``lambda_i = regularization * (n_i + alpha0 * n_users) ** regularization_exponent``
    (``n_u``, ``n_i`` the row's / column's stored entries).
    Explicit feedback: ``sum over observed (r_ui - x_u . y_i)^2`` plus the same penalties
    with ``lambda_u = regularization * n_u ** regularization_exponent``.
    With exponent 0 every lambda is ``regularization``, or ``regularization`` times the
    row's / column's count with ``weighted_regularization``.

    The sum is accumulated in double precision and is identical for any ``num_threads``.

    Parameters
    ----------
    user_items : scipy.sparse CSR matrix (n_users, n_items)
    user_factors : ndarray (n_users, f)
    item_factors : ndarray (n_items, f)
    regularization, alpha, feedback, confidence, weighted_regularization, num_threads, \
unobserved_weight, regularization_exponent
        As for :func:`als_half_step`.
    item_regularization : bool, default True
        Include ``sum_i lambda_i |y_i|^2``. Without it, the objective's terms of these users
        alone, for callers that sum the items' penalty elsewhere (:func:`als_regularization`).

    Returns
    -------
    float
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
        unobserved_weight=unobserved_weight,
        regularization_exponent=regularization_exponent,
        item_regularization=item_regularization,
    )


def als_regularization(
    factors: np.ndarray,
    counts,
    n_other: int,
    *,
    regularization: float,
    feedback: str = "implicit",
    weighted_regularization: bool = False,
    unobserved_weight: float = 1.0,
    regularization_exponent: float = 0.0,
    alpha: float = 1.0,
    confidence: str = "linear",
    num_threads: int = 0,
) -> float:
    """Return one side's penalty in the ALS objective, ``sum_r lambda_r |factors_r|^2``.

    ``lambda_r`` is the regularization of a row with ``counts[r]`` stored entries whose other
    side has ``n_other`` rows, as :func:`als_half_step` and :func:`als_loss` compute it: the
    items' penalty of :func:`als_loss` is ``als_regularization(item_factors, item_counts,
    n_users, ...)``. Summed in double precision.

    Parameters
    ----------
    factors : ndarray (n, f), float32 or float64
    counts : array-like of int (n,)
        Each row's number of stored entries (read when the penalty depends on it).
    n_other : int >= 0
        Rows of the other side (``n_users`` for item factors).
    regularization, feedback, weighted_regularization, unobserved_weight, regularization_exponent
        As for :func:`als_half_step`.
    alpha, confidence, num_threads
        Accepted so that the options of :func:`als_loss` can be passed as they are; unused.

    Returns
    -------
    float
    """
    check_als_options(
        feedback=feedback, confidence=confidence, solver="cg", regularization=regularization, alpha=alpha,
        cg_steps=1, weighted_regularization=weighted_regularization, num_threads=num_threads,
        unobserved_weight=unobserved_weight, regularization_exponent=regularization_exponent,
    )  # fmt: skip
    counts = np.asarray(counts)
    if counts.dtype.kind not in "iu":
        raise TypeError(f"counts must hold integers, got {counts.dtype}")
    return _core.als_regularization(
        factors, np.ascontiguousarray(counts, dtype=np.int64), n_other, regularization=regularization,
        feedback=feedback, weighted_regularization=weighted_regularization, unobserved_weight=unobserved_weight,
        regularization_exponent=regularization_exponent,
    )  # fmt: skip


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
    locks. Threads take blocks in ``block_order``. Factor matrices are float32 (or both float16:
    rows widened to float32 for each update and rounded to nearest on store), padded to a
    multiple of ``SGD_ROW_FLOATS`` (16) columns with zeros beyond ``factors``; biases and the adaptive schedule's
    rate sums are optional float32 vectors, updated in place. Returns the sum of squared
    errors of the predictions made just before each update. With ``slow_factors`` (below
    ``factors``; rows stay in registers for ``SGD_SLOW_FACTORS``) the rate sums hold two values per row, for the first
    ``slow_factors`` dimensions and for the rest, and ``slow_only`` updates the first part
    only. See :class:`recore.SGD`.

    Parameters
    ----------
    users, items : int32 ndarrays (n,)
        Each rating's row of ``user_factors`` and of ``item_factors``.
    values : float32 ndarray (n,)
    block_starts : int64 ndarray (blocks * blocks + 1,)
    block_order : int32 ndarray (blocks * blocks,)
        A permutation of the blocks.
    blocks : int >= 1
    user_factors, item_factors : float32 or float16 ndarrays (rows, padded width), updated in place
    factors : int
        Columns in use (the rest are padding and stay zero).
    user_biases, item_biases : float32 ndarrays, optional
    global_mean : float
    user_rate_sums, item_rate_sums : float32 ndarrays, optional
        The adaptive schedule's sums; None for a constant rate.
    learning_rate, regularization, bias_regularization : float
    num_threads : int >= 0
    slow_factors : int
    slow_only : bool

    Returns
    -------
    float
        The sum of squared errors before each update.
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
    """BPR updates for the given (user, positive, negative) triples, in order, on one thread.

    Parameters
    ----------
    users, positives, negatives : int32 ndarrays (n,)
    user_factors, item_factors : float32 ndarrays (rows, padded width), updated in place
    factors : int
        Columns in use.
    item_biases, user_rate_sums, item_rate_sums : float32 ndarrays, optional
    learning_rate, regularization, bias_regularization : float

    Returns
    -------
    int
        How many triples were ranked right (x > 0) before their update.
    """
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
    structure.

    Parameters
    ----------
    indptr : int64 ndarray (n_users + 1,)
    indices : int32 ndarray, sorted within rows
    samples : int
        Triples to draw.
    user_factors, item_factors : float32 ndarrays (rows, padded width), updated in place
    factors : int
        Columns in use.
    seed : int
    popularity_negatives : bool
        Negatives by popularity instead of uniformly.
    item_biases, user_rate_sums, item_rate_sums : float32 ndarrays, optional
    learning_rate, regularization, bias_regularization : float
    num_threads : int >= 0

    Returns
    -------
    float
        The sampled AUC before the updates.
    """
    return _core.sgd_bpr_epoch(
        indptr, indices, samples, popularity_negatives, seed, user_factors, item_factors, factors, item_biases,
        user_rate_sums, item_rate_sums, learning_rate, regularization, bias_regularization, num_threads,
    )  # fmt: skip


def sgd_rmse(
    users, items, values, user_factors, item_factors, factors, *, user_biases=None, item_biases=None,
    global_mean=0.0, num_threads=0,
) -> float:  # fmt: skip
    """RMSE of ``global_mean + b_u + b_i + p_u . q_i`` over the given ratings.

    Parameters
    ----------
    users, items : int32 ndarrays (n,)
    values : float32 ndarray (n,)
    user_factors, item_factors : float32 or float16 ndarrays (rows, padded width)
    factors : int
        Columns in use.
    user_biases, item_biases : float32 ndarrays, optional
    global_mean : float
    num_threads : int >= 0

    Returns
    -------
    float
    """
    return _core.sgd_rmse(
        users, items, values, user_factors, item_factors, factors, user_biases, item_biases, global_mean, num_threads
    )


# -- SGD epochs, as recore.SGD runs them ------------------------------------------------------


def sgd_state(state: dict) -> dict:
    """The training state as this backend keeps it (numpy arrays, as made)."""
    return state


def sgd_squared_epochs(grid, state: dict, settings, rng: np.random.Generator, threads: int):
    """A function running one squared-loss epoch over ``grid`` (a ``recore._sgd_plan.RatingGrid``).

    The per-row state moves into the grid's rank order for the fit (``_sgd_plan.in_id_order``
    puts it back), so that each band of the grid is one stretch of memory.
    """
    from recore import _sgd_plan

    _sgd_plan.to_rank_order(state, grid.user_rank, grid.item_rank)
    count = max(len(grid.values), 1)
    n_users, n_items = len(grid.user_rank), len(grid.item_rank)
    by_items = n_items > n_users

    def epoch() -> float:
        # One thread walks band by band (measured faster: the band stays in cache); with
        # more, a free order keeps every thread supplied with blocks to the end of the epoch
        # (band-by-band orders measured slower there).
        if threads == 1:
            order = _sgd_plan.block_order(rng, grid.blocks, by_items)
        else:
            order = rng.permutation(grid.blocks * grid.blocks).astype(np.int32)
        squared_error = _core.sgd_squared_epoch(
            grid.users, grid.items, grid.values, grid.starts, order, grid.blocks,
            state["user_factors"], state["item_factors"], settings.factors,
            state["user_biases"] if settings.biases else None, state["item_biases"] if settings.biases else None,
            state["global_mean"], state["user_rate_sums"], state["item_rate_sums"],
            settings.learning_rate, settings.regularization, settings.bias_regularization, settings.num_threads,
            settings.slow_factors, state["epochs_done"][0] == 0, state["epochs_done"],
        )  # fmt: skip
        return float(np.sqrt(squared_error / count))

    return epoch


def sgd_bpr_epochs(matrix, state: dict, settings, rng: np.random.Generator):
    """A function running one BPR epoch (Hogwild) over the positives of ``matrix``."""
    indptr = matrix.indptr.astype(np.int64)
    indices = matrix.indices.astype(np.int32)

    def epoch() -> float:
        return _core.sgd_bpr_epoch(
            indptr, indices, len(indices), settings.popularity_negatives, int(rng.integers(0, 2**63)),
            state["user_factors"], state["item_factors"], settings.factors,
            state["item_biases"] if settings.biases else None,
            state["user_rate_sums"], state["item_rate_sums"],
            settings.learning_rate, settings.regularization, settings.bias_regularization, settings.num_threads,
            state["epochs_done"],
        )  # fmt: skip

    return epoch


def sgd_held_out(triples, state: dict):
    """Held-out (users, items, values) as the epochs' state addresses them: ranks while the
    rows are in the grid's rank order."""
    if "ranks" not in state:
        return triples
    user_rank, item_rank = state["ranks"]
    return user_rank[triples[0]], item_rank[triples[1]], triples[2]


def sgd_rmse_of(triples, state: dict, settings) -> float:
    users, items, values = triples
    return _core.sgd_rmse(
        users, items, values, state["user_factors"], state["item_factors"], settings.factors,
        state["user_biases"] if settings.biases else None, state["item_biases"] if settings.biases else None,
        state["global_mean"], settings.num_threads,
    )  # fmt: skip
