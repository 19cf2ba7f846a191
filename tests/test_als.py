"""ALS against the dense numpy reference in reference.py, over random sparse matrices, and
the ALS estimator's contract."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import recore
import reference
import scipy.sparse as sp
from conftest import (
    OBJECTIVES,
    objective_options,
    objectives,
    random_factors,
    relative_error,
    sparse_matrices,
    using_cpu_target,
    with_dtype,
)
from hypothesis import given
from hypothesis import strategies as st
from recore import _core, kernels
from recore._validation import as_user_items

# A subnormal alpha or regularization rounds to 0 in float32 but not in the float64
# reference, which changes the answer completely; such values are no use to anybody.
alphas = st.one_of(st.just(0.0), st.floats(0.01, 5.0))
regularizations = st.floats(0.1, 5.0)
dtypes = st.sampled_from([np.float32, np.float64])
index_dtypes = st.sampled_from([np.int32, np.int64])
seeds = st.integers(0, 2**32 - 1)
# Matrices with or without stored zeros (an explicit 0 is an observation all the same).
matrices = st.booleans().flatmap(lambda zeros: sparse_matrices(stored_zeros=zeros))


def half_step(matrix, fixed, target, **options):
    """recore's half step, in place on ``target``, which it returns."""
    gram = kernels.gram_matrix(fixed) if options.get("feedback", "implicit") == "implicit" else None
    kernels.als_half_step(matrix, fixed, gram, target, **options)
    return target


def assert_solves_match_reference(actual, matrix, fixed, dtype, **objective):
    """Each row of ``actual`` is the reference solution of its normal equations A x = b, to
    within what rounding to ``dtype`` can explain.

    Forming A and b from n entries perturbs them by about n * eps * |A| and n * eps * |b|
    (|.| summing absolute values of the terms), so the solution moves by at most about
    ||A^-1|| * n * eps * (||A_abs|| ||x|| + ||b_abs||). The bound is checked with a margin of
    4: measured errors stay below a tenth of it. For float64 that is ~1e-13 relative."""
    expected = reference.half_step(matrix, fixed, **objective)
    systems = reference.normal_equations(matrix, fixed, **objective)
    # The same sums over absolute values: A_abs = |Y|^T C |Y| + lambda I, b_abs = |Y|^T C |p|
    # (weights and targets are non-negative here). The engine's implicit A is
    # alpha0 G + Y_u^T (C - alpha0 I) Y_u, whose terms add up to at most that plus
    # 2 alpha0 |Y|^T |Y| (an observed c below alpha0 counts as alpha0 + (alpha0 - c) there).
    absolute = reference.normal_equations(matrix, np.abs(fixed), **objective)
    eps = np.finfo(dtype).eps
    n, f = fixed.shape
    extra = max(1.0, 2.0 * objective.get("unobserved_weight", 1.0)) * np.sum(np.asarray(fixed, dtype=np.float64) ** 2)
    for u, system in enumerate(systems):
        if system is None:
            assert not actual[u].any(), f"row {u} has no entries: its factor must be 0"
            continue
        A, _ = system
        A_abs, b_abs = absolute[u]
        inverse_norm = 1.0 / np.linalg.svd(A, compute_uv=False)[-1]
        bound = (
            4 * (n + f) * eps * inverse_norm
            * ((np.linalg.norm(A_abs, 2) + extra) * np.linalg.norm(expected[u]) + np.linalg.norm(b_abs))
        )  # fmt: skip
        error = np.linalg.norm(np.asarray(actual[u], dtype=np.float64) - expected[u])
        assert error <= bound, f"row {u}: error {error:.3g} > bound {bound:.3g}"
    if dtype == np.float64:
        assert relative_error(actual, expected) < 1e-9


def loss_rounding_scale(users, items, unobserved_weight: float = 1.0) -> float:
    """What the rounding of the engine's loss scales with. It gets the unobserved part as
    alpha0 x^T (Y^T Y) x minus alpha0 times the observed scores squared; x^T (Y^T Y) x can be
    far smaller than the terms summed to form it, so the scale is the same sum over absolute
    values, |x|^T (|Y|^T |Y|) |x| (times alpha0 when that is larger than 1), not the loss itself."""
    users, items = np.abs(np.asarray(users, np.float64)), np.abs(np.asarray(items, np.float64))
    return max(1.0, unobserved_weight) * float(np.sum((users @ (items.T @ items)) * users))


# -- one half step ---------------------------------------------------------------------------


@given(
    matrix=matrices,
    factors=st.integers(1, 8),
    regularization=regularizations,
    alpha=alphas,
    kind=objectives,
    dtype=dtypes,
    index_dtype=index_dtypes,
    seed=seeds,
)
def test_cholesky_half_step_matches_reference(matrix, factors, regularization, alpha, kind, dtype, index_dtype, seed):
    rng = np.random.default_rng(seed)
    matrix = with_dtype(matrix, dtype, index_dtype)
    fixed = random_factors(rng, matrix.shape[1], factors, dtype)
    target = random_factors(rng, matrix.shape[0], factors, dtype)
    objective = objective_options(kind, regularization, alpha)
    actual = half_step(matrix, fixed, target, solver="cholesky", **objective)
    assert actual.dtype == dtype and actual.shape == (matrix.shape[0], factors)
    assert_solves_match_reference(actual, matrix, fixed, dtype, **objective)


def test_reference_half_steps_agree_with_the_textbook_formulas():
    # reference.half_step writes A and b out densely over all columns; the textbook forms
    # (YtY + Yu^T (Cu - I) Yu + lambda I, Yu^T Cu 1 and Yu^T Yu + lambda_u I, Yu^T r_u) must give
    # the same answers, or the reference itself is wrong.
    rng = np.random.default_rng(0)
    matrix = sp.random(7, 9, density=0.4, random_state=1, format="csr") * 3
    Y = rng.normal(size=(9, 3))
    lam = 0.7
    for u in range(7):
        cols = matrix.indices[matrix.indptr[u] : matrix.indptr[u + 1]]
        r = matrix.data[matrix.indptr[u] : matrix.indptr[u + 1]]
        if cols.size == 0:
            continue
        Yu = Y[cols]
        c = 1 + 2.0 * r
        implicit = np.linalg.solve(Y.T @ Y + Yu.T @ ((c - 1)[:, None] * Yu) + lam * np.eye(3), Yu.T @ c)
        np.testing.assert_allclose(
            reference.implicit_half_step(matrix, Y, regularization=lam, alpha=2.0)[u], implicit, rtol=1e-12
        )
        explicit = np.linalg.solve(Yu.T @ Yu + lam * cols.size * np.eye(3), Yu.T @ r)
        np.testing.assert_allclose(
            reference.explicit_half_step(matrix, Y, regularization=lam, weighted_regularization=True)[u],
            explicit,
            rtol=1e-12,
        )


def test_reference_ials_agrees_with_the_textbook_formulas():
    # With the unobserved weight alpha0 and the regularization exponent nu (Rendle et al. 2022):
    # (alpha0 YtY + Yu^T (Cu - alpha0 I) Yu + lambda_u I) x = Yu^T Cu 1 with
    # lambda_u = lambda (n_u + alpha0 n)^nu; explicit: lambda_u = lambda n_u^nu. And the
    # reference's objective, written entry by entry, is minimized by those solves: its gradient
    # in the users' factors vanishes there.
    rng = np.random.default_rng(1)
    matrix = sp.random(7, 9, density=0.4, random_state=2, format="csr") * 3
    Y = rng.normal(size=(9, 3))
    lam, alpha0, nu, alpha = 0.7, 0.3, 0.6, 2.0
    implicit = reference.implicit_half_step(
        matrix, Y, regularization=lam, alpha=alpha, unobserved_weight=alpha0, regularization_exponent=nu
    )
    explicit = reference.explicit_half_step(matrix, Y, regularization=lam)
    explicit_nu = reference.half_step(matrix, Y, regularization=lam, feedback="explicit", regularization_exponent=nu)
    for u in range(7):
        cols = matrix.indices[matrix.indptr[u] : matrix.indptr[u + 1]]
        r = matrix.data[matrix.indptr[u] : matrix.indptr[u + 1]]
        if cols.size == 0:
            continue
        Yu, c = Y[cols], 1 + alpha * r
        lambda_u = lam * (cols.size + alpha0 * 9) ** nu
        A = alpha0 * Y.T @ Y + Yu.T @ ((c - alpha0)[:, None] * Yu) + lambda_u * np.eye(3)
        np.testing.assert_allclose(implicit[u], np.linalg.solve(A, Yu.T @ c), rtol=1e-12)
        A = Yu.T @ Yu + lam * cols.size**nu * np.eye(3)
        np.testing.assert_allclose(explicit_nu[u], np.linalg.solve(A, Yu.T @ r), rtol=1e-12)
        assert not np.allclose(explicit_nu[u], explicit[u])  # nu matters
    items = rng.normal(size=(9, 3))
    objective = dict(regularization=lam, alpha=alpha, unobserved_weight=alpha0, regularization_exponent=nu)
    solved = reference.implicit_half_step(matrix, items, **objective)

    def loss(users):
        total = 0.0
        dense = matrix.toarray()
        for u in range(7):
            for i in range(9):
                score = users[u] @ items[i]
                if matrix[u, i] != 0:
                    total += (1 + alpha * dense[u, i]) * (1 - score) ** 2
                else:
                    total += alpha0 * score**2
        counts_u, counts_i = np.diff(matrix.indptr), np.bincount(matrix.indices, minlength=9)
        total += np.sum(lam * (counts_u + alpha0 * 9) ** nu * np.sum(users**2, axis=1))
        return total + np.sum(lam * (counts_i + alpha0 * 7) ** nu * np.sum(items**2, axis=1))

    assert reference.objective(matrix, solved, items, **objective) == pytest.approx(loss(solved), rel=1e-12)
    step = 1e-6
    for u, j in [(0, 0), (3, 2), (6, 1)]:
        if matrix.indptr[u] == matrix.indptr[u + 1]:
            continue
        bumped = solved.copy()
        bumped[u, j] += step
        lowered = solved.copy()
        lowered[u, j] -= step
        gradient = (loss(bumped) - loss(lowered)) / (2 * step)
        assert abs(gradient) < 1e-5


@contextlib.contextmanager
def cg_path(path: str):
    """Forces one of the conjugate-gradient code paths through the engine's testing hooks:
    rows gathered into a contiguous block (the default for small factors), rows read in
    place (taken for very long rows), or blocked CG (taken when the fixed factors outgrow
    the caches), blocks of 1 or 3 fixed rows."""
    try:
        if path == "in place":
            _core._set_gather_limit_for_testing(1)
        elif path.startswith("blocked"):
            _core._set_block_rows_for_testing(int(path.split()[1]))
        yield
    finally:
        _core._set_gather_limit_for_testing(0)
        _core._set_block_rows_for_testing(0)


CG_PATHS = ["gathered", "in place", "blocked 1", "blocked 3"]


@given(
    matrix=matrices,
    factors=st.integers(1, 8),
    regularization=regularizations,
    alpha=alphas,
    kind=objectives,
    path=st.sampled_from(CG_PATHS),
    seed=seeds,
)
def test_cg_with_twice_as_many_steps_as_factors_matches_cholesky(
    matrix, factors, regularization, alpha, kind, path, seed
):
    # In exact arithmetic CG on an f x f system ends at the solution after f steps. In floating
    # point the directions lose their conjugacy when the eigenvalues spread, and f steps can
    # leave a visible error (seen: 0.19 at f = 8, condition 671, where 9 steps give 1e-12), so
    # the check runs 2f steps, which reach rounding level on every such system measured.
    rng = np.random.default_rng(seed)
    matrix = with_dtype(matrix, np.float64)
    fixed = random_factors(rng, matrix.shape[1], factors, np.float64)
    start = random_factors(rng, matrix.shape[0], factors, np.float64)
    objective = objective_options(kind, regularization, alpha)
    exact = half_step(matrix, fixed, start.copy(), solver="cholesky", **objective)
    with cg_path(path):
        iterative = half_step(matrix, fixed, start.copy(), solver="cg", cg_steps=2 * factors, **objective)
    # CG is warm-started, so its rounding errors scale with the start as well as the answer.
    scale = np.linalg.norm(exact, axis=1) + np.linalg.norm(start, axis=1)
    assert np.all(np.linalg.norm(iterative - exact, axis=1) <= 1e-7 * scale)


@given(matrix=matrices, factors=st.integers(1, 8), kind=objectives, seed=seeds)
def test_one_cg_step_lowers_the_row_objective(matrix, factors, kind, seed):
    # A single CG step from a warm start can only lower each row's quadratic objective
    # 1/2 x^T A x - b^T x (it minimizes it along the residual).
    rng = np.random.default_rng(seed)
    matrix = with_dtype(matrix, np.float64)
    fixed = random_factors(rng, matrix.shape[1], factors, np.float64)
    start = random_factors(rng, matrix.shape[0], factors, np.float64)
    objective = objective_options(kind, 0.5, 1.5)
    stepped = half_step(matrix, fixed, start.copy(), solver="cg", cg_steps=1, **objective)
    for u, system in enumerate(reference.normal_equations(matrix, fixed, **objective)):
        if system is None:
            continue
        A, b = system

        def value(x, A=A, b=b):
            return 0.5 * x @ A @ x - b @ x

        assert value(stepped[u]) <= value(start[u]) + 1e-12 * (1 + abs(value(start[u])))


@given(
    factors=st.sampled_from([1, 7, 8, 9, 16, 24, 33]),
    copies=st.lists(st.integers(0, 13), min_size=2, max_size=6, unique=True),
    empty=st.lists(st.integers(0, 13), max_size=6),
    dtype=st.sampled_from([np.float32, np.float64]),
    kind=objectives,
    seed=seeds,
)
def test_blocked_cg_solves_a_row_the_same_wherever_it_sits(factors, copies, empty, dtype, kind, seed):
    # Blocked CG takes the Gram-matrix products of a few neighbouring rows in one pass over the
    # matrix. A row's result must not depend on its neighbours: copies of one row, placed at
    # different positions among other rows and rows without entries (so that they share
    # their pass with different rows, or with none), end with bit for bit the same factors.
    rng = np.random.default_rng(seed)
    n_rows, n_items = 14, 11
    dense = np.where(rng.random((n_rows, n_items)) < 0.5, rng.integers(1, 4, (n_rows, n_items)), 0).astype(dtype)
    row = np.where(rng.random(n_items) < 0.6, rng.integers(1, 4, n_items), 0).astype(dtype)
    row[rng.integers(n_items)] = 2
    dense[sorted(set(empty) - set(copies))] = 0
    dense[copies] = row
    matrix = with_dtype(sp.csr_matrix(dense), dtype)
    fixed = random_factors(rng, n_items, factors, dtype)
    start = random_factors(rng, n_rows, factors, dtype)
    start[copies] = start[copies[0]]
    with cg_path("blocked 3"):
        solved = half_step(matrix, fixed, start, solver="cg", cg_steps=3, **objective_options(kind, 0.5, 1.5))
    for u in copies[1:]:
        np.testing.assert_array_equal(solved[u], solved[copies[0]])


# -- the subspace solver (iALS++) -------------------------------------------------------------


def row_objectives(matrix, fixed, factors, **objective) -> np.ndarray:
    """Each row's quadratic 1/2 x^T A x - b^T x at ``factors`` (NaN for rows without entries)."""
    values = np.full(len(factors), np.nan)
    for u, system in enumerate(reference.normal_equations(matrix, fixed, **objective)):
        if system is not None:
            A, b = system
            values[u] = 0.5 * factors[u] @ A @ factors[u] - b @ factors[u]
    return values


@given(
    matrix=matrices,
    factors=st.integers(1, 8),
    extra=st.integers(0, 3),
    regularization=regularizations,
    alpha=alphas,
    kind=objectives,
    index_dtype=index_dtypes,
    seed=seeds,
)
def test_subspace_with_one_block_is_the_exact_solve(
    matrix, factors, extra, regularization, alpha, kind, index_dtype, seed
):
    # block_size >= factors: the whole row is one block, solved exactly from the warm start.
    rng = np.random.default_rng(seed)
    matrix = with_dtype(matrix, np.float64, index_dtype)
    fixed = random_factors(rng, matrix.shape[1], factors, np.float64)
    start = random_factors(rng, matrix.shape[0], factors, np.float64)
    objective = objective_options(kind, regularization, alpha)
    exact = half_step(matrix, fixed, start.copy(), solver="cholesky", **objective)
    solved = half_step(matrix, fixed, start.copy(), solver="subspace", block_size=factors + extra, **objective)
    # A step from the warm start: its rounding scales with the start as well as the answer.
    scale = np.linalg.norm(exact, axis=1) + np.linalg.norm(start, axis=1)
    assert np.all(np.linalg.norm(solved - exact, axis=1) <= 1e-9 * scale)


@given(
    matrix=matrices,
    factors=st.integers(2, 8),
    block_size=st.integers(1, 3),
    regularization=st.floats(0.5, 5.0),
    alpha=alphas,
    kind=objectives,
    path=st.sampled_from(["gathered", "in place"]),
    seed=seeds,
)
def test_subspace_sweeps_converge_to_cholesky(matrix, factors, block_size, regularization, alpha, kind, path, seed):
    # Block coordinate descent on a positive definite quadratic converges to its minimizer:
    # with enough sweeps every row is the exact solve, whether the row's fixed factors are
    # gathered first or read in place.
    rng = np.random.default_rng(seed)
    matrix = with_dtype(matrix, np.float64)
    fixed = random_factors(rng, matrix.shape[1], factors, np.float64)
    start = random_factors(rng, matrix.shape[0], factors, np.float64)
    objective = objective_options(kind, regularization, alpha)
    exact = half_step(matrix, fixed, start.copy(), solver="cholesky", **objective)
    with cg_path(path):
        swept = half_step(
            matrix, fixed, start.copy(), solver="subspace", block_size=block_size, subspace_sweeps=400, **objective
        )
    scale = np.linalg.norm(exact, axis=1) + np.linalg.norm(start, axis=1)
    assert np.all(np.linalg.norm(swept - exact, axis=1) <= 1e-7 * scale)


@given(matrix=matrices, factors=st.integers(1, 8), block_size=st.integers(1, 4), kind=objectives, seed=seeds)
def test_every_subspace_sweep_lowers_the_row_objective(matrix, factors, block_size, kind, seed):
    # Each block step minimizes the row's quadratic over its block with the rest fixed, so a
    # sweep can only lower it, and a second sweep lowers it further (or leaves it).
    rng = np.random.default_rng(seed)
    matrix = with_dtype(matrix, np.float64)
    fixed = random_factors(rng, matrix.shape[1], factors, np.float64)
    start = random_factors(rng, matrix.shape[0], factors, np.float64)
    objective = objective_options(kind, 0.5, 1.5)
    options = dict(solver="subspace", block_size=block_size, **objective)
    one = half_step(matrix, fixed, start.copy(), subspace_sweeps=1, **options)
    two = half_step(matrix, fixed, start.copy(), subspace_sweeps=2, **options)
    before, after_one, after_two = (row_objectives(matrix, fixed, x, **objective) for x in (start, one, two))
    has_entries = ~np.isnan(before)
    slack = 1e-12 * (1 + np.abs(before[has_entries]))
    assert np.all(after_one[has_entries] <= before[has_entries] + slack)
    assert np.all(after_two[has_entries] <= after_one[has_entries] + slack)


@given(
    matrix=matrices,
    factors=st.integers(1, 6),
    block_size=st.integers(1, 4),
    regularization=st.floats(0.01, 2.0),
    alpha=alphas,
    kind=objectives,
    seed=seeds,
)
def test_training_loss_never_increases_with_subspace(matrix, factors, block_size, regularization, alpha, kind, seed):
    # One sweep per half step is not the exact solve, but every block step lowers the full
    # objective, so the training loss never increases.
    objective = objective_options(kind, regularization, alpha)
    model = recore.ALS(
        factors=factors, iterations=4, solver="subspace", block_size=block_size, dtype="float64",
        random_state=seed, calculate_training_loss=True, **objective,
    ).fit(matrix)  # fmt: skip
    initial = reference.objective(matrix, *reference.initial_factors(*matrix.shape, factors, seed), **objective)
    losses = np.array([initial, *model.history_["loss"]])
    slack = 1e-9 * losses[:-1] + 1e-12
    assert np.all(losses[1:] <= losses[:-1] + slack), losses
    expected = reference.objective(matrix, model.user_factors_, model.item_factors_, **objective)
    assert model.history_["loss"][-1] == pytest.approx(expected, rel=1e-9, abs=1e-12)


@given(
    matrix=sparse_matrices(max_rows=12, max_cols=40),
    factors=st.integers(9, 40),
    block_size=st.integers(1, 24),
    regularization=st.floats(1.0, 5.0),
    kind=objectives,
    path=st.sampled_from(["gathered", "in place"]),
    seed=seeds,
)
def test_subspace_block_kernels_converge_to_cholesky(matrix, factors, block_size, regularization, kind, path, seed):
    # More factors than a vector's lanes and blocks of every kernel's size (bands for 4 and 8,
    # tiles for others up to 16, two passes over the lines beyond), a last block cut short, and
    # rows of up to 40 entries (several vectors of entries, the last one part padding): enough
    # sweeps reach the exact solve.
    rng = np.random.default_rng(seed)
    matrix = with_dtype(matrix, np.float64)
    fixed = random_factors(rng, matrix.shape[1], factors, np.float64)
    start = random_factors(rng, matrix.shape[0], factors, np.float64)
    objective = objective_options(kind, regularization, 1.0)
    exact = half_step(matrix, fixed, start.copy(), solver="cholesky", **objective)
    with cg_path(path):
        swept = half_step(
            matrix, fixed, start.copy(), solver="subspace", block_size=block_size, subspace_sweeps=300, **objective
        )
    scale = np.linalg.norm(exact, axis=1) + np.linalg.norm(start, axis=1)
    assert np.all(np.linalg.norm(swept - exact, axis=1) <= 1e-7 * scale)


@pytest.mark.parametrize("block_size", [3, 4, 8, 11, 16, 20])
def test_subspace_float32_kernels_follow_float64(cpu_target, block_size):
    # float32 runs on twice the lanes of float64 (other tile transposes, other padding): one
    # sweep from the same start makes the same steps, on every instruction set.
    matrix = recore.datasets.synthetic(60, 80, 1500, random_state=3)
    rng = np.random.default_rng(4)
    fixed = random_factors(rng, matrix.shape[1], 37, np.float64)
    start = random_factors(rng, matrix.shape[0], 37, np.float64)
    options = dict(solver="subspace", block_size=block_size, regularization=0.5, unobserved_weight=0.3)
    double = half_step(with_dtype(matrix, np.float64), fixed, start.copy(), **options)
    single = half_step(matrix, fixed.astype(np.float32), start.astype(np.float32), **options)
    assert np.abs(single - double).max() <= 1e-3 * np.abs(double).max()


def test_subspace_float32_follows_float64():
    # The float32 kernels (other SIMD widths and padding) make the same steps as float64.
    matrix = recore.datasets.synthetic(200, 150, 3000, random_state=5)
    options = dict(factors=24, iterations=3, solver="subspace", block_size=7, random_state=1, regularization=0.5,
                   unobserved_weight=0.4, regularization_exponent=0.5)  # fmt: skip
    single = recore.ALS(dtype="float32", **options).fit(matrix)
    double = recore.ALS(dtype="float64", **options).fit(matrix)
    scores32 = single.user_factors_.astype(np.float64) @ single.item_factors_.astype(np.float64).T
    scores64 = double.user_factors_ @ double.item_factors_.T
    assert np.abs(scores32 - scores64).max() <= 1e-3 * np.abs(scores64).max()


# -- the objective's pieces ------------------------------------------------------------------


@given(matrix=matrices, factors=st.integers(1, 6), kind=objectives, dtype=dtypes, seed=seeds)
def test_loss_is_its_user_terms_plus_the_items_regularization(matrix, factors, kind, dtype, seed):
    # What recore.distributed sums: every user shard's terms without the items' penalty, plus
    # that penalty from each item's count of entries and the number of users.
    rng = np.random.default_rng(seed)
    matrix = with_dtype(matrix, dtype)
    users = random_factors(rng, matrix.shape[0], factors, dtype)
    items = random_factors(rng, matrix.shape[1], factors, dtype)
    objective = objective_options(kind, 0.3, 1.5)
    whole = kernels.als_loss(matrix, users, items, **objective)
    user_terms = kernels.als_loss(matrix, users, items, item_regularization=False, **objective)
    counts = np.bincount(matrix.indices, minlength=matrix.shape[1])
    penalty = kernels.als_regularization(items, counts, matrix.shape[0], **objective)
    assert whole == pytest.approx(user_terms + penalty, rel=1e-12, abs=1e-12)
    _, observed = reference.dense_parts(matrix)
    lambdas = reference.row_lambdas(
        observed.T, 0.3, kind[2], feedback=kind[0], unobserved_weight=kind[3], regularization_exponent=kind[4]
    )
    expected = float(np.sum(lambdas * np.sum(np.asarray(items, np.float64) ** 2, axis=1)))
    assert penalty == pytest.approx(expected, rel=1e-12 if dtype == np.float64 else 1e-6)


def test_als_regularization_checks_its_arguments():
    factors = np.ones((3, 2), np.float32)
    options = dict(regularization=0.1, regularization_exponent=0.5)
    assert kernels.als_regularization(factors, [1, 2, 3], 4, **options) == pytest.approx(
        0.1 * 2 * sum((n + 4) ** 0.5 for n in (1, 2, 3)), rel=1e-12
    )
    with pytest.raises(ValueError, match=r"counts must have one entry per row of factors \(3\), got 2"):
        kernels.als_regularization(factors, [1, 2], 4, **options)
    with pytest.raises(ValueError, match="counts must be >= 0"):
        kernels.als_regularization(factors, [1, -2, 3], 4, **options)
    with pytest.raises(TypeError, match="counts must hold integers"):
        kernels.als_regularization(factors, [1.0, 2.0, 3.0], 4, **options)
    with pytest.raises(ValueError, match="n_other must be >= 0"):
        kernels.als_regularization(factors, [1, 2, 3], -1, **options)
    with pytest.raises(ValueError, match="regularization_exponent must be a finite number >= 0"):
        kernels.als_regularization(factors, [1, 2, 3], 4, regularization=0.1, regularization_exponent=-1.0)


# -- whole fits ------------------------------------------------------------------------------


@given(
    matrix=matrices,
    factors=st.integers(1, 6),
    iterations=st.integers(1, 3),
    regularization=st.floats(0.1, 2.0),
    alpha=alphas,
    kind=objectives,
    seed=st.integers(0, 2**32 - 1),
)
def test_cholesky_fit_matches_reference(matrix, factors, iterations, regularization, alpha, kind, seed):
    objective = objective_options(kind, regularization, alpha)
    model = recore.ALS(
        factors=factors, iterations=iterations, solver="cholesky", dtype="float64", random_state=seed, **objective
    ).fit(matrix)
    users, items = reference.fit(matrix, factors=factors, iterations=iterations, random_state=seed, **objective)
    assert relative_error(model.user_factors_, users) < 1e-8
    assert relative_error(model.item_factors_, items) < 1e-8


def test_zero_iterations_keep_the_initial_factors():
    matrix = recore.datasets.synthetic(30, 20, 100, random_state=3)
    for dtype in ("float32", "float64"):
        model = recore.ALS(factors=3, iterations=0, random_state=5, dtype=dtype).fit(matrix)
        users, items = reference.initial_factors(30, 20, 3, 5)
        # Drawn in float32 whatever the dtype, so that both dtypes start from the same numbers.
        np.testing.assert_array_equal(model.user_factors_, users.astype(dtype))
        np.testing.assert_array_equal(model.item_factors_, items.astype(dtype))


@given(
    matrix=matrices,
    factors=st.integers(1, 6),
    regularization=st.floats(0.01, 2.0),
    alpha=alphas,
    kind=objectives,
    seed=seeds,
)
def test_training_loss_never_increases_with_cholesky(matrix, factors, regularization, alpha, kind, seed):
    # Every exact half step minimizes the objective over one side with the other held
    # fixed, so the objective after each iteration is at most the one before it, and the
    # first is at most the objective of the initial factors.
    objective = objective_options(kind, regularization, alpha)
    model = recore.ALS(
        factors=factors,
        iterations=4,
        solver="cholesky",
        dtype="float64",
        random_state=seed,
        calculate_training_loss=True,
        **objective,
    ).fit(matrix)
    initial = reference.objective(matrix, *reference.initial_factors(*matrix.shape, factors, seed), **objective)
    losses = np.array([initial, *model.history_["loss"]])
    slack = 1e-9 * losses[:-1] + 1e-12
    assert np.all(losses[1:] <= losses[:-1] + slack), losses
    expected = reference.objective(matrix, model.user_factors_, model.item_factors_, **objective)
    assert model.history_["loss"][-1] == pytest.approx(expected, rel=1e-9, abs=1e-12)


@given(
    matrix=matrices,
    factors=st.integers(1, 8),
    regularization=st.floats(0.0, 5.0),
    alpha=alphas,
    kind=objectives,
    dtype=dtypes,
    index_dtype=index_dtypes,
    seed=seeds,
)
def test_loss_matches_dense_reference(matrix, factors, regularization, alpha, kind, dtype, index_dtype, seed):
    rng = np.random.default_rng(seed)
    matrix = with_dtype(matrix, dtype, index_dtype)
    users = random_factors(rng, matrix.shape[0], factors, dtype)
    items = random_factors(rng, matrix.shape[1], factors, dtype)
    objective = objective_options(kind, regularization, alpha)
    expected = reference.objective(matrix, users, items, **objective)
    actual = kernels.als_loss(matrix, users, items, **objective)
    assert isinstance(actual, float)
    scale = expected + loss_rounding_scale(users, items, objective["unobserved_weight"])
    assert abs(actual - expected) <= (1e-5 if dtype == np.float32 else 1e-12) * scale


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gram_matrix_matches_numpy(dtype):
    rng = np.random.default_rng(0)
    # More than 512 rows: the Gram matrix is summed over several chunks.
    for n, f in [(0, 3), (1, 1), (5, 7), (1300, 9), (700, 33)]:
        factors = random_factors(rng, n, f, dtype)
        gram = kernels.gram_matrix(factors)
        assert gram.dtype == dtype and gram.shape == (f, f) and gram.flags.c_contiguous
        expected = factors.astype(np.float64).T @ factors.astype(np.float64)
        np.testing.assert_array_equal(gram, gram.T)
        tolerance = (1e-5 if dtype == np.float32 else 1e-13) * max(n, 1)
        np.testing.assert_allclose(gram, expected, rtol=0, atol=tolerance * max(np.abs(expected).max(), 1))


def test_gram_chunk_bounds():
    # One chunk per 512 rows (rounded up), at most 64, or 16 beyond 256 factors; chunk c is rows
    # n * c // chunks to n * (c + 1) // chunks.
    np.testing.assert_array_equal(kernels.gram_chunk_bounds(0, 3), [0, 0])
    np.testing.assert_array_equal(kernels.gram_chunk_bounds(512, 3), [0, 512])
    np.testing.assert_array_equal(kernels.gram_chunk_bounds(1100, 8), [0, 366, 733, 1100])
    for n, f, chunks in [(513, 1, 2), (10**6, 256, 64), (10**6, 257, 16), (2**62, 8, 64)]:
        bounds = kernels.gram_chunk_bounds(n, f)
        assert bounds.dtype == np.int64 and len(bounds) == chunks + 1
        np.testing.assert_array_equal(bounds, [n // chunks * c + n % chunks * c // chunks for c in range(chunks + 1)])
    with pytest.raises(ValueError, match="n_rows must be >= 0"):
        kernels.gram_chunk_bounds(-1, 3)


@given(
    rows=st.integers(0, 2600),
    factors=st.integers(1, 12),
    dtype=dtypes,
    seed=seeds,
    cuts=st.lists(st.integers(0, 64), max_size=5),
)
def test_folded_partials_of_a_chunk_aligned_split_equal_gram_matrix(rows, factors, dtype, seed, cuts):
    # What recore.distributed relies on: pieces of the rows cut on gram_chunk_bounds, each
    # turned into its chunks' partials where it lives, folded in order, give gram_matrix's
    # result bit for bit.
    matrix = random_factors(np.random.default_rng(seed), rows, factors, dtype)
    chunk_bounds = kernels.gram_chunk_bounds(rows, factors)
    chunks = len(chunk_bounds) - 1
    cuts = sorted({0, chunks, *(cut % (chunks + 1) for cut in cuts)})
    partials = []
    for first, last in zip(cuts, cuts[1:]):
        begin, end = chunk_bounds[first], chunk_bounds[last]
        piece = np.ascontiguousarray(matrix[begin:end])
        partials.append(kernels.gram_partials(piece, chunk_bounds[first : last + 1] - begin))
    partials = np.concatenate(partials)
    assert partials.shape == (chunks, factors, factors) and partials.dtype == dtype
    for c in range(chunks):  # each partial is its chunk's Gram matrix
        rows_of_chunk = matrix[chunk_bounds[c] : chunk_bounds[c + 1]].astype(np.float64)
        np.testing.assert_allclose(partials[c], rows_of_chunk.T @ rows_of_chunk, rtol=1e-4, atol=1e-4 * rows)
    gram = kernels.gram_fold(partials)
    assert gram.dtype == dtype and gram.shape == (factors, factors)
    assert gram.tobytes() == kernels.gram_matrix(matrix).tobytes()


def test_gram_pieces_of_other_splits_round_differently():
    # The chunk-aligned fold above is needed: the Gram matrices of a split at other rows, added
    # up, differ from gram_matrix's (which is why the folded test can fail).
    matrix = random_factors(np.random.default_rng(3), 1300, 8, np.float32)
    pieces = [kernels.gram_matrix(np.ascontiguousarray(matrix[b : b + 650])) for b in (0, 650)]
    summed = (pieces[0].astype(np.float64) + pieces[1]).astype(np.float32)
    assert summed.tobytes() != kernels.gram_matrix(matrix).tobytes()
    unaligned = kernels.gram_fold(kernels.gram_partials(matrix, [0, 400, 900, 1300]))
    assert unaligned.tobytes() != kernels.gram_matrix(matrix).tobytes()


def test_gram_partials_and_fold_check_their_arguments():
    factors = np.ones((10, 3), np.float32)
    with pytest.raises(ValueError, match="chunk_bounds must be non-decreasing"):
        kernels.gram_partials(factors, [0, 6, 4, 10])
    with pytest.raises(ValueError, match=r"chunk_bounds must lie within \[0, factors.shape\[0\]\] = \[0, 10\]"):
        kernels.gram_partials(factors, [0, 11])
    with pytest.raises(ValueError, match="chunk_bounds must have at least one entry"):
        kernels.gram_partials(factors, [])
    with pytest.raises(TypeError, match="chunk_bounds must hold integers"):
        kernels.gram_partials(factors, [0.0, 10.0])
    with pytest.raises(TypeError, match="factors must have dtype float32 or float64"):
        kernels.gram_partials(factors.astype(np.int32), [0, 10])
    assert kernels.gram_partials(factors, [4]).shape == (0, 3, 3)
    np.testing.assert_array_equal(kernels.gram_partials(factors, [0, 3, 3, 10]).sum(axis=0), np.full((3, 3), 10))
    with pytest.raises(ValueError, match="partials must be 3-dimensional"):
        kernels.gram_fold(np.ones((3, 3), np.float32))
    with pytest.raises(ValueError, match=r"partials must have shape \(chunks, factors, factors\)"):
        kernels.gram_fold(np.ones((2, 3, 4), np.float32))
    with pytest.raises(TypeError, match="partials must have dtype float32 or float64"):
        kernels.gram_fold(np.ones((2, 3, 3), np.int64))
    np.testing.assert_array_equal(kernels.gram_fold(np.zeros((0, 2, 2), np.float64)), np.zeros((2, 2)))


# -- threads ---------------------------------------------------------------------------------


@given(
    matrix=sparse_matrices(max_rows=120, max_cols=60),
    solver=st.sampled_from(["cg", "cholesky", "subspace"]),
    kind=objectives,
    dtype=dtypes,
    seed=seeds,
)
def test_factors_bitwise_identical_for_one_and_two_threads(matrix, solver, kind, dtype, seed):
    # Up to 120 rows: rows are handed out in chunks of 16, so both threads get work.
    results = []
    for threads in (1, 2):
        model = recore.ALS(
            factors=5,
            iterations=2,
            solver=solver,
            block_size=2,
            dtype=dtype,
            num_threads=threads,
            random_state=seed,
            calculate_training_loss=True,
            **objective_options(kind, 0.1, 2.0),
        ).fit(matrix)
        results.append(model)
    one, two = results
    assert one.user_factors_.tobytes() == two.user_factors_.tobytes()
    assert one.item_factors_.tobytes() == two.item_factors_.tobytes()
    assert one.history_["loss"] == two.history_["loss"]


@pytest.mark.parametrize("solver", ["cg", "cholesky", "blocked cg", "subspace"])
@pytest.mark.parametrize("kind", OBJECTIVES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_factors_bitwise_identical_for_any_thread_count_on_a_larger_matrix(solver, kind, dtype):
    # Large enough for the Gram matrix to be summed over several chunks and the loss over
    # many; blocked CG (forced through the testing hook) has its own parallel passes.
    user_items = recore.datasets.synthetic(1200, 600, 20_000, random_state=1)
    results = []
    for threads in (1, 2, 3):
        with cg_path("blocked 50" if solver == "blocked cg" else "gathered"):
            model = recore.ALS(
                factors=12,
                iterations=2,
                solver="cg" if solver == "blocked cg" else solver,
                block_size=5,
                dtype=dtype,
                num_threads=threads,
                random_state=7,
                calculate_training_loss=True,
                **objective_options(kind, 0.1, 2.0),
            ).fit(user_items)
        results.append((model, kernels.gram_matrix(model.item_factors_, num_threads=threads)))
    (first, first_gram), *others = results
    for model, gram in others:
        assert model.user_factors_.tobytes() == first.user_factors_.tobytes()
        assert model.item_factors_.tobytes() == first.item_factors_.tobytes()
        assert model.history_["loss"] == first.history_["loss"]
        assert gram.tobytes() == first_gram.tobytes()


# -- precision -------------------------------------------------------------------------------


@given(
    matrix=matrices,
    factors=st.integers(1, 6),
    regularization=st.floats(0.3, 2.0),
    alpha=st.one_of(st.just(0.0), st.floats(0.01, 2.0)),
    kind=objectives,
    solver=st.sampled_from(["cg", "cholesky"]),
    seed=seeds,
)
def test_float64_fit_matches_float32_fit(matrix, factors, regularization, alpha, kind, solver, seed):
    # f CG steps solve an f x f system exactly only in exact arithmetic: in float32 the
    # Krylov process drifts and leaves errors of ~1e-3 after f steps on systems with
    # condition numbers of ~100 (a textbook float32 CG does the same); two more steps fix it.
    options = dict(
        factors=factors,
        iterations=3,
        solver=solver,
        cg_steps=factors + 2,
        random_state=seed,
        **objective_options(kind, regularization, alpha),
    )
    single = recore.ALS(dtype="float32", **options).fit(matrix)
    double = recore.ALS(dtype="float64", **options).fit(matrix)
    assert single.user_factors_.dtype == np.float32 and double.user_factors_.dtype == np.float64
    # Compared as predictions: both start from the same float32 draws, and the products are
    # what a model is used for.
    scores32 = single.user_factors_.astype(np.float64) @ single.item_factors_.astype(np.float64).T
    scores64 = double.user_factors_ @ double.item_factors_.T
    assert np.abs(scores32 - scores64).max() <= 1e-3 * max(np.abs(scores64).max(), 1e-3)


# -- exact recovery --------------------------------------------------------------------------


@given(
    rank=st.integers(1, 4),
    extra_users=st.integers(0, 20),
    extra_items=st.integers(0, 20),
    solver=st.sampled_from(["cholesky", "cg"]),
    seed=seeds,
)
def test_low_rank_ratings_reconstructed_exactly_without_regularization(rank, extra_users, extra_items, solver, seed):
    # Fully observed ratings of rank r, r factors, no regularization: the user step projects
    # onto the span of the items, and the item step then reproduces R exactly (R = U V^T has
    # its columns in span(U) = span(X) once X = R Y (Y^T Y)^-1). CG is exact too: after r steps
    # in exact arithmetic; in floating point the directions can lose their conjugacy (seen: an
    # error of 2e-3 after 4 steps at rank 4, 1e-9 after 5), so it runs 2r steps, as
    # test_cg_with_twice_as_many_steps_as_factors_matches_cholesky does.
    rng = np.random.default_rng(seed)
    ratings = rng.normal(size=(rank + extra_users, rank)) @ rng.normal(size=(rank, rank + extra_items))
    model = recore.ALS(
        factors=rank,
        regularization=0.0,
        feedback="explicit",
        solver=solver,
        cg_steps=2 * rank,
        iterations=2,
        dtype="float64",
        random_state=seed,
    ).fit(sp.csr_matrix(ratings))
    # Exact up to rounding, which the conditioning of the random start amplifies (errors up to
    # ~1e-6 relative were seen with CG); a wrong solve is off by O(1).
    np.testing.assert_allclose(
        model.user_factors_ @ model.item_factors_.T, ratings, rtol=0, atol=1e-5 * np.abs(ratings).max()
    )


@given(
    user_groups=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    data=st.data(),
    solver=st.sampled_from(["cholesky", "cg"]),
    seed=seeds,
)
def test_low_rank_implicit_preferences_reconstructed_exactly_without_regularization(user_groups, data, solver, seed):
    # With alpha = 0 every confidence is 1: plain least squares on the binary preference
    # matrix. Disjoint blocks of ones (rows and columns shuffled) have rank = number of blocks.
    rank = len(user_groups)
    item_groups = data.draw(st.lists(st.integers(1, 6), min_size=rank, max_size=rank))
    rng = np.random.default_rng(seed)
    users = rng.permutation(np.repeat(np.arange(rank), user_groups))
    items = rng.permutation(np.repeat(np.arange(rank), item_groups))
    preferences = (users[:, None] == items[None, :]).astype(np.float32)
    model = recore.ALS(
        factors=rank,
        regularization=0.0,
        alpha=0.0,
        solver=solver,
        cg_steps=rank,
        iterations=3,
        dtype="float64",
        random_state=seed,
    ).fit(sp.csr_matrix(preferences))
    np.testing.assert_allclose(model.user_factors_ @ model.item_factors_.T, preferences, rtol=0, atol=1e-7)


# -- predictions -----------------------------------------------------------------------------


@given(
    matrix=sparse_matrices(min_value=1.0, max_value=5.0),
    weighted=st.booleans(),
    regularization=st.floats(0.1, 1.0),
    seed=seeds,
)
def test_explicit_predictions_match_reference(matrix, weighted, regularization, seed):
    objective = dict(regularization=regularization, feedback="explicit", weighted_regularization=weighted)
    model = recore.ALS(factors=3, iterations=4, solver="cholesky", dtype="float64", random_state=seed, **objective)
    model.fit(matrix)
    users, items = reference.fit(matrix, factors=3, iterations=4, random_state=seed, **objective)
    rng = np.random.default_rng(seed)
    u = rng.integers(0, matrix.shape[0], size=20)
    i = rng.integers(0, matrix.shape[1], size=20)
    predicted = model.predict(u, i)
    assert predicted.shape == (20,) and predicted.dtype == np.float64
    atol = 1e-8 * max(np.abs(users @ items.T).max(), 1.0)
    np.testing.assert_allclose(predicted, np.sum(users[u] * items[i], axis=1), rtol=1e-7, atol=atol)
    # Broadcasting: one user against every item gives the row of U V^T.
    np.testing.assert_allclose(model.predict(u[0], np.arange(matrix.shape[1])), users[u[0]] @ items.T, atol=atol)
    assert model.predict(int(u[0]), int(i[0])).shape == ()


def test_predict_broadcasts_rows_against_columns():
    model = recore.ALS(factors=3, iterations=2, random_state=0).fit(recore.datasets.synthetic(20, 10, 60))
    grid = model.predict(np.arange(20)[:, None], np.arange(10)[None, :])
    assert grid.shape == (20, 10) and grid.dtype == np.float32
    np.testing.assert_allclose(grid, model.user_factors_ @ model.item_factors_.T, rtol=1e-5, atol=1e-7)
    assert model.predict([], []).shape == (0,)


# -- instruction sets ------------------------------------------------------------------------

# Widths around every SIMD width (4, 8, 16 floats; 2, 4, 8 doubles) and the padded tiles.
simd_widths = st.sampled_from([1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33])


@pytest.mark.parametrize("target", recore.available_cpu_targets())
@given(matrix=matrices, factors=simd_widths, kind=objectives, dtype=dtypes, seed=seeds)
def test_every_cpu_target_matches_reference(target, matrix, factors, kind, dtype, seed):
    rng = np.random.default_rng(seed)
    matrix = with_dtype(matrix, dtype)
    fixed = random_factors(rng, matrix.shape[1], factors, dtype)
    start = random_factors(rng, matrix.shape[0], factors, dtype)
    objective = objective_options(kind, 1.0, 1.5)
    with using_cpu_target(target):
        assert recore.cpu_target() == target
        exact = half_step(matrix, fixed, start.copy(), solver="cholesky", **objective)
        gram = kernels.gram_matrix(fixed)
        loss = kernels.als_loss(matrix, start, fixed, **objective)
        iterative = None
        if dtype == np.float64:
            # Twice as many steps as factors: plenty in float64 even for the widest systems.
            iterative = half_step(matrix, fixed, start.copy(), solver="cg", cg_steps=2 * factors, **objective)
    assert_solves_match_reference(exact, matrix, fixed, dtype, **objective)
    wide = fixed.astype(np.float64)
    np.testing.assert_allclose(gram, wide.T @ wide, rtol=0, atol=(1e-5 if dtype == np.float32 else 1e-13) * 30)
    expected_loss = reference.objective(matrix, start, fixed, **objective)
    scale = expected_loss + loss_rounding_scale(start, fixed, objective["unobserved_weight"])
    assert abs(loss - expected_loss) <= (1e-5 if dtype == np.float32 else 1e-12) * scale
    if iterative is not None:
        scale = np.linalg.norm(exact, axis=1) + np.linalg.norm(start, axis=1)
        assert np.all(np.linalg.norm(iterative - exact, axis=1) <= 1e-7 * scale)


@pytest.mark.parametrize("target", recore.available_cpu_targets())
@given(matrix=matrices, factors=simd_widths, kind=objectives, seed=seeds)
def test_every_cpu_target_fits_like_the_reference(target, matrix, factors, kind, seed):
    objective = objective_options(kind, 1.0, 1.5)
    with using_cpu_target(target):
        model = recore.ALS(
            factors=factors, iterations=2, solver="cholesky", dtype="float64", random_state=seed, **objective
        ).fit(matrix)
    users, items = reference.fit(matrix, factors=factors, iterations=2, random_state=seed, **objective)
    assert relative_error(model.user_factors_, users) < 1e-8
    assert relative_error(model.item_factors_, items) < 1e-8


def test_cpu_target_fixture_selects_and_restores(cpu_target):
    assert recore.cpu_target() == cpu_target
    assert cpu_target in recore.available_cpu_targets()


# -- the estimator ---------------------------------------------------------------------------


@st.composite
def hyperparameters(draw) -> dict:
    params = draw(
        st.fixed_dictionaries(
            {
                "factors": st.integers(1, 200),
                "regularization": st.floats(0.0, 10.0),
                "alpha": st.floats(0.0, 100.0),
                "iterations": st.integers(0, 50),
                "solver": st.sampled_from(["cg", "cholesky", "subspace"]),
                "cg_steps": st.integers(1, 10),
                "feedback": st.sampled_from(["implicit", "explicit"]),
                "confidence": st.sampled_from(["linear", "scaled"]),
                "weighted_regularization": st.booleans(),
                "dtype": st.sampled_from(["float32", "float64", np.float32, np.dtype("float64")]),
                "num_threads": st.integers(0, 8),
                "random_state": st.one_of(st.none(), st.integers(0, 2**32)),
                "calculate_training_loss": st.booleans(),
                "device": st.sampled_from(["auto", "cpu"]),
                "block_size": st.integers(1, 300),
                "subspace_sweeps": st.integers(1, 5),
            }
        )
    )
    # Only implicit feedback has unobserved entries to weigh, and one count scaling at a time.
    params["unobserved_weight"] = draw(st.floats(0.0, 10.0)) if params["feedback"] == "implicit" else 1.0
    params["regularization_exponent"] = 0.0 if params["weighted_regularization"] else draw(st.floats(0.0, 2.0))
    return params


@given(params=hyperparameters(), other=hyperparameters())
def test_get_params_and_set_params_round_trip(params, other):
    model = recore.ALS(**params)
    assert model.get_params() == params
    assert recore.ALS(**model.get_params()).get_params() == params
    assert model.set_params(**other) is model
    assert model.get_params() == other
    assert repr(model).startswith("ALS(factors=")
    with pytest.raises(ValueError, match="factors"):
        model.set_params(iterations=3, factors=0)
    assert model.get_params() == other  # a refused call changes nothing, not even the valid part


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("solver", ["cg", "cholesky"])
@given(matrix=matrices, factors=st.integers(1, 8))
def test_fit_returns_self_with_contiguous_factors(dtype, solver, matrix, factors):
    model = recore.ALS(factors=factors, iterations=2, solver=solver, dtype=dtype, random_state=0)
    assert model.fit(matrix) is model
    for array, rows in ((model.user_factors_, matrix.shape[0]), (model.item_factors_, matrix.shape[1])):
        assert array.shape == (rows, factors)
        assert array.dtype == dtype
        assert array.flags.c_contiguous
        assert np.isfinite(array).all()
    assert not np.shares_memory(model.user_factors_, model.item_factors_)


@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (0, 0)])
def test_empty_shapes_fit(shape):
    model = recore.ALS(factors=2, iterations=2, calculate_training_loss=True).fit(
        sp.csr_matrix(shape, dtype=np.float32)
    )
    assert model.user_factors_.shape == (shape[0], 2) and model.item_factors_.shape == (shape[1], 2)
    assert not model.user_factors_.any() and not model.item_factors_.any()
    assert model.history_["loss"] == [0.0, 0.0]


@given(iterations=st.integers(0, 5), with_loss=st.booleans())
def test_callback_receives_iteration_and_metrics(iterations, with_loss):
    matrix = recore.datasets.synthetic(40, 30, 200, random_state=3)
    calls = []
    model = recore.ALS(factors=3, iterations=iterations, calculate_training_loss=with_loss, random_state=0)
    model.fit(matrix, callback=lambda *args: calls.append(args))
    assert [call[0] for call in calls] == list(range(iterations))
    assert all(isinstance(call[1]["seconds"], float) and call[1]["seconds"] >= 0 for call in calls)
    assert [call[1]["seconds"] for call in calls] == model.history_["seconds"]
    assert model.iterations_completed_ == iterations
    if with_loss:
        assert [call[1]["loss"] for call in calls] == model.history_["loss"]
        assert len(model.history_["loss"]) == iterations
        if iterations:
            assert model.history_["loss"][-1] == pytest.approx(model.loss(matrix), rel=1e-12)
    else:
        assert all(set(call[1]) == {"seconds"} for call in calls)
        assert "loss" not in model.history_


def test_earlier_callback_and_loss_history_still_work_with_a_future_warning():
    matrix = recore.datasets.synthetic(40, 30, 200, random_state=3)
    calls = []
    model = recore.ALS(factors=3, iterations=2, calculate_training_loss=True, random_state=0)
    with pytest.warns(FutureWarning, match="callback"):
        model.fit(matrix, callback=lambda iteration, seconds, loss: calls.append((iteration, seconds, loss)))
    assert [c[2] for c in calls] == model.history_["loss"]
    assert [c[1] for c in calls] == model.history_["seconds"]
    with pytest.warns(FutureWarning, match="loss_history_"):
        assert model.loss_history_ == model.history_["loss"]
    with pytest.raises(TypeError, match="callback"):
        model.fit(matrix, callback=lambda: None)


def test_progress_bar_runs(capsys):
    matrix = recore.datasets.synthetic(40, 30, 200, random_state=3)
    recore.ALS(factors=3, iterations=2, calculate_training_loss=True).fit(matrix, progress=True)
    assert "ALS" in capsys.readouterr().err


@given(matrix=matrices, solver=st.sampled_from(["cg", "cholesky"]), kind=objectives)
def test_same_seed_same_model_and_generator_accepted(matrix, solver, kind):
    options = dict(factors=3, iterations=2, solver=solver, **objective_options(kind, 0.1, 1.0))
    a = recore.ALS(random_state=11, **options).fit(matrix)
    b = recore.ALS(random_state=np.random.default_rng(11), **options).fit(matrix)
    assert a.user_factors_.tobytes() == b.user_factors_.tobytes()
    assert a.item_factors_.tobytes() == b.item_factors_.tobytes()


def as_format(matrix, fmt: str, index_dtype):
    """``matrix`` in another container or format, with ``index_dtype`` indices where it has any."""
    if fmt == "dense":
        return matrix.toarray()
    if fmt == "csr_array":
        converted = sp.csr_array(matrix)
    elif fmt == "bsr":
        # 1 x 1 blocks: larger blocks store the zeros that fill them, and a stored zero is an
        # observation, so they would describe other data.
        converted = matrix.tobsr(blocksize=(1, 1))
    else:
        converted = matrix.asformat(fmt)
    if fmt in ("csr", "csc", "csr_array"):
        converted.indices = converted.indices.astype(index_dtype)
        converted.indptr = converted.indptr.astype(index_dtype)
    elif fmt == "coo":
        # Set as a pair: scipy casts a lone row (or col) to the dtype of the other.
        converted.coords = tuple(c.astype(index_dtype) for c in converted.coords)
        assert converted.row.dtype == index_dtype
    return converted


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "lil", "dok", "bsr", "csr_array", "dense"])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("value_dtype", [np.float32, np.float64, np.int64])
@given(matrix=sparse_matrices(min_value=1.0, max_value=9.0))
def test_every_input_format_gives_the_same_model(fmt, index_dtype, value_dtype, matrix):
    matrix.data = np.ceil(matrix.data)  # whole numbers survive every value dtype exactly
    options = dict(factors=3, iterations=2, random_state=0)
    expected = recore.ALS(**options).fit(matrix)
    converted = as_format(matrix.astype(value_dtype), fmt, index_dtype)
    model = recore.ALS(**options).fit(converted)
    assert model.user_factors_.tobytes() == expected.user_factors_.tobytes()
    assert model.item_factors_.tobytes() == expected.item_factors_.tobytes()


@given(matrix=matrices, data=st.data())
def test_duplicates_are_summed(matrix, data):
    # Every entry split into two halves (exact in binary), the halves in shuffled order:
    # the model must be the one fitted to the original matrix.
    coo = matrix.tocoo()
    order = np.random.default_rng(data.draw(seeds)).permutation(2 * coo.nnz)
    rows = np.concatenate([coo.row, coo.row])[order]
    cols = np.concatenate([coo.col, coo.col])[order]
    values = np.concatenate([coo.data / 2, coo.data / 2])[order]
    as_coo = sp.coo_matrix((values, (rows, cols)), shape=matrix.shape)
    # A CSR with unsorted, duplicated indices, as a careless caller could build it.
    indptr = np.zeros(matrix.shape[0] + 1, dtype=np.int32)
    np.add.at(indptr, rows + 1, 1)
    by_row = np.argsort(rows, kind="stable")
    raw = sp.csr_matrix(matrix.shape, dtype=np.float32)
    raw.indptr, raw.indices, raw.data = np.cumsum(indptr, dtype=np.int32), cols[by_row].astype(np.int32), values[by_row]
    options = dict(
        factors=2, iterations=2, random_state=0, feedback=data.draw(st.sampled_from(["implicit", "explicit"]))
    )
    expected = recore.ALS(**options).fit(matrix)
    for duplicated in (as_coo, raw):
        canonical = as_user_items(duplicated, np.float32)
        assert canonical.has_canonical_format
        assert (canonical != matrix).nnz == 0 and canonical.nnz == matrix.nnz
        model = recore.ALS(**options).fit(duplicated)
        assert model.user_factors_.tobytes() == expected.user_factors_.tobytes()


@given(matrix=matrices)
def test_canonical_csr_of_the_right_dtype_is_used_without_a_copy(matrix):
    assert as_user_items(matrix, np.float32) is matrix
    as_double = with_dtype(matrix, np.float64)
    assert as_user_items(as_double, np.float64) is as_double
    # Anything else is converted, into new arrays.
    converted = as_user_items(as_double, np.float32)
    assert converted is not as_double and converted.dtype == np.float32
    assert not np.shares_memory(converted.data, as_double.data)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "dense"])
@pytest.mark.parametrize("value_dtype", [np.float32, np.float64])
@given(matrix=matrices, kind=objectives, solver=st.sampled_from(["cg", "cholesky"]))
def test_the_input_is_never_modified(fmt, value_dtype, matrix, kind, solver):
    user_items = as_format(matrix.astype(value_dtype), fmt, np.int64 if fmt == "coo" else np.int32)
    if fmt == "csr":
        user_items.indices = user_items.indices[::-1].copy()  # unsorted: converted before use
        user_items.has_sorted_indices = False
    arrays = (
        [user_items]
        if fmt == "dense"
        else [
            getattr(user_items, name)
            for name in ("data", "indices", "indptr", "row", "col")
            if hasattr(user_items, name)
        ]
    )
    snapshot = [(a.copy(), a.dtype) for a in arrays]
    model = recore.ALS(factors=2, iterations=2, solver=solver, random_state=0, **objective_options(kind, 0.1, 1.0))
    model.fit(user_items)
    model.loss(user_items)
    for (before, dtype), after in zip(snapshot, arrays):
        assert after.dtype == dtype
        np.testing.assert_array_equal(after, before)
    if fmt != "dense":
        assert user_items.format == fmt


@given(matrix=matrices, kind=objectives)
def test_a_canonical_input_used_in_place_is_not_written(matrix, kind):
    snapshot = (matrix.data.copy(), matrix.indices.copy(), matrix.indptr.copy())
    recore.ALS(factors=2, iterations=2, random_state=0, **objective_options(kind, 0.1, 1.0)).fit(matrix)
    for before, after in zip(snapshot, (matrix.data, matrix.indices, matrix.indptr)):
        np.testing.assert_array_equal(after, before)
