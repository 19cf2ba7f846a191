"""ALS against the numpy reference in numpy_als.py, over random sparse matrices."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

import numpy_als
import recore
from conftest import sparse_matrices
from recore import kernels

KINDS = [
    # feedback, confidence, weighted_regularization
    ("implicit", "linear", False),
    ("implicit", "scaled", False),
    ("explicit", "linear", False),
    ("explicit", "linear", True),
]


def relative_error(actual, expected):
    scale = max(np.linalg.norm(expected), 1e-12)
    return np.linalg.norm(np.asarray(actual, dtype=np.float64) - expected) / scale


def random_factors(rng, n, f, dtype):
    # Normal entries scaled by 1/sqrt(f) keep the normal equations well conditioned.
    return np.ascontiguousarray(rng.normal(size=(n, f)) / np.sqrt(f), dtype=dtype)


def as_dtype(matrix, dtype):
    matrix = sp.csr_matrix(matrix, dtype=dtype)
    matrix.indices = matrix.indices.astype(np.int32)
    matrix.indptr = matrix.indptr.astype(np.int32)
    return matrix


def half_step(matrix, fixed, target, **options):
    gram = kernels.gram_matrix(fixed) if options.get("feedback", "implicit") == "implicit" else None
    kernels.als_half_step(matrix, fixed, gram, target, **options)
    return target


@given(
    matrix=sparse_matrices(),
    factors=st.integers(1, 8),
    regularization=st.floats(0.1, 2.0),
    alpha=st.floats(0.0, 3.0),
    kind=st.sampled_from(KINDS),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 1000),
)
def test_cholesky_half_step_matches_reference(matrix, factors, regularization, alpha, kind, dtype, seed):
    feedback, confidence, weighted = kind
    rng = np.random.default_rng(seed)
    matrix = as_dtype(matrix, dtype)
    fixed = random_factors(rng, matrix.shape[1], factors, dtype)
    target = random_factors(rng, matrix.shape[0], factors, dtype)
    options = dict(
        regularization=regularization,
        alpha=alpha,
        feedback=feedback,
        confidence=confidence,
        weighted_regularization=weighted,
    )
    expected = numpy_als.half_step(matrix, fixed, **options)
    actual = half_step(matrix, fixed, target, solver="cholesky", **options)
    assert relative_error(actual, expected) < (1e-4 if dtype == np.float32 else 1e-10)


@given(matrix=sparse_matrices(), factors=st.integers(1, 6), kind=st.sampled_from(KINDS), seed=st.integers(0, 99))
def test_cholesky_fit_matches_reference(matrix, factors, kind, seed):
    feedback, confidence, weighted = kind
    options = dict(
        regularization=0.3, alpha=2.0, feedback=feedback, confidence=confidence, weighted_regularization=weighted
    )
    model = recore.ALS(
        factors=factors, iterations=2, solver="cholesky", dtype="float64", random_state=seed, **options
    ).fit(matrix)
    users, items = numpy_als.fit(matrix, factors=factors, iterations=2, random_state=seed, **options)
    assert relative_error(model.user_factors_, users) < 1e-8
    assert relative_error(model.item_factors_, items) < 1e-8


@given(matrix=sparse_matrices(), factors=st.integers(1, 8), kind=st.sampled_from(KINDS), seed=st.integers(0, 99))
def test_cg_with_as_many_steps_as_factors_matches_cholesky(matrix, factors, kind, seed):
    feedback, confidence, weighted = kind
    rng = np.random.default_rng(seed)
    matrix = as_dtype(matrix, np.float64)
    fixed = random_factors(rng, matrix.shape[1], factors, np.float64)
    start = random_factors(rng, matrix.shape[0], factors, np.float64)
    options = dict(
        regularization=0.5, alpha=1.5, feedback=feedback, confidence=confidence, weighted_regularization=weighted
    )
    exact = half_step(matrix, fixed, start.copy(), solver="cholesky", **options)
    iterative = half_step(matrix, fixed, start.copy(), solver="cg", cg_steps=factors, **options)
    assert relative_error(iterative, exact) < 1e-6


def test_cg_reaches_cholesky_in_float32():
    rng = np.random.default_rng(3)
    matrix = as_dtype(sp.random(40, 30, density=0.3, random_state=4) * 5, np.float32)
    fixed = random_factors(rng, 30, 8, np.float32)
    start = random_factors(rng, 40, 8, np.float32)
    exact = half_step(matrix, fixed, start.copy(), regularization=0.5, solver="cholesky")
    iterative = half_step(matrix, fixed, start.copy(), regularization=0.5, solver="cg", cg_steps=8)
    assert relative_error(iterative, exact) < 1e-3


@given(matrix=sparse_matrices(), factors=st.integers(1, 6), alpha=st.floats(0.0, 4.0), seed=st.integers(0, 99))
def test_implicit_loss_never_increases_with_cholesky(matrix, factors, alpha, seed):
    model = recore.ALS(
        factors=factors,
        iterations=5,
        regularization=0.1,
        alpha=alpha,
        solver="cholesky",
        dtype="float64",
        random_state=seed,
        calculate_training_loss=True,
    ).fit(matrix)
    losses = np.array(model.loss_history_)
    assert np.all(np.diff(losses) <= 1e-9 * losses[:-1] + 1e-12)


@given(
    matrix=sparse_matrices(),
    factors=st.integers(1, 6),
    kind=st.sampled_from(KINDS),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 99),
)
def test_loss_matches_dense_reference(matrix, factors, kind, dtype, seed):
    feedback, confidence, weighted = kind
    rng = np.random.default_rng(seed)
    matrix = as_dtype(matrix, dtype)
    users = random_factors(rng, matrix.shape[0], factors, dtype)
    items = random_factors(rng, matrix.shape[1], factors, dtype)
    options = dict(
        regularization=0.2, alpha=1.7, feedback=feedback, confidence=confidence, weighted_regularization=weighted
    )
    expected = numpy_als.loss(matrix, users, items, **options)
    actual = kernels.als_loss(matrix, users, items, **options)
    assert actual == pytest.approx(expected, rel=1e-5 if dtype == np.float32 else 1e-10, abs=1e-6)


@pytest.mark.parametrize("solver", ["cg", "cholesky"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_factors_bitwise_identical_for_any_thread_count(solver, kind, dtype):
    feedback, confidence, weighted = kind
    # Large enough that every thread gets rows, and the Gram matrix several chunks.
    user_items = recore.datasets.synthetic(1500, 700, 30_000, random_state=1)
    results = []
    for threads in (1, 2, 3):
        model = recore.ALS(
            factors=12,
            iterations=2,
            solver=solver,
            feedback=feedback,
            confidence=confidence,
            weighted_regularization=weighted,
            dtype=dtype,
            num_threads=threads,
            random_state=7,
            calculate_training_loss=True,
        ).fit(user_items)
        results.append(model)
    for other in results[1:]:
        assert other.user_factors_.tobytes() == results[0].user_factors_.tobytes()
        assert other.item_factors_.tobytes() == results[0].item_factors_.tobytes()
        assert other.loss_history_ == results[0].loss_history_


@given(matrix=sparse_matrices(), factors=st.integers(1, 6), kind=st.sampled_from(KINDS), seed=st.integers(0, 99))
def test_float64_matches_float32(matrix, factors, kind, seed):
    feedback, confidence, weighted = kind
    options = dict(
        factors=factors,
        iterations=3,
        regularization=0.5,
        alpha=1.0,
        solver="cholesky",
        feedback=feedback,
        confidence=confidence,
        weighted_regularization=weighted,
        random_state=seed,
    )
    single = recore.ALS(dtype="float32", **options).fit(matrix)
    double = recore.ALS(dtype="float64", **options).fit(matrix)
    assert single.user_factors_.dtype == np.float32 and double.user_factors_.dtype == np.float64
    # Both start from the same float32 draws.
    scores32 = single.user_factors_.astype(np.float64) @ single.item_factors_.T
    scores64 = double.user_factors_ @ double.item_factors_.T
    assert relative_error(scores32, scores64) < 1e-3


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_low_rank_ratings_reconstructed_exactly_without_regularization(solver):
    rng = np.random.default_rng(0)
    rank = 4
    ratings = rng.normal(size=(30, rank)) @ rng.normal(size=(rank, 20))
    model = recore.ALS(
        factors=rank,
        regularization=0.0,
        feedback="explicit",
        solver=solver,
        cg_steps=rank,
        iterations=3,
        dtype="float64",
        random_state=0,
    ).fit(sp.csr_matrix(ratings))
    np.testing.assert_allclose(model.user_factors_ @ model.item_factors_.T, ratings, atol=1e-9)


def test_low_rank_implicit_preferences_reconstructed_exactly_without_regularization():
    # With alpha = 0 every confidence is 1: plain least squares on the binary matrix,
    # which has rank 2 here.
    preferences = np.zeros((30, 20))
    preferences[:12, :8] = 1
    preferences[12:, 8:] = 1
    model = recore.ALS(
        factors=2, regularization=0.0, alpha=0.0, solver="cholesky", iterations=4, dtype="float64", random_state=0
    ).fit(sp.csr_matrix(preferences))
    np.testing.assert_allclose(model.user_factors_ @ model.item_factors_.T, preferences, atol=1e-9)


@given(matrix=sparse_matrices(min_value=1.0, max_value=5.0), weighted=st.booleans(), seed=st.integers(0, 99))
def test_explicit_predictions_match_reference(matrix, weighted, seed):
    options = dict(regularization=0.2, feedback="explicit", weighted_regularization=weighted)
    model = recore.ALS(factors=3, iterations=4, solver="cholesky", dtype="float64", random_state=seed, **options)
    model.fit(matrix)
    users, items = numpy_als.fit(matrix, factors=3, iterations=4, random_state=seed, **options)
    rng = np.random.default_rng(seed)
    u = rng.integers(0, matrix.shape[0], size=20)
    i = rng.integers(0, matrix.shape[1], size=20)
    np.testing.assert_allclose(model.predict(u, i), np.sum(users[u] * items[i], axis=1), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
@pytest.mark.parametrize("factors", [1, 7, 16, 33, 70])
def test_every_cpu_target_matches_reference(cpu_target, solver, factors):
    # Widths around the SIMD widths exercise the padding and every register-tile shape.
    rng = np.random.default_rng(factors)
    matrix = as_dtype(sp.random(50, 40, density=0.3, random_state=factors) * 4, np.float32)
    fixed = random_factors(rng, 40, factors, np.float32)
    start = random_factors(rng, 50, factors, np.float32)
    expected = numpy_als.half_step(matrix, fixed, regularization=1.0, alpha=1.0)
    actual = half_step(matrix, fixed, start, regularization=1.0, solver=solver, cg_steps=factors + 10)
    assert recore.cpu_target() == cpu_target
    assert relative_error(actual, expected) < (1e-4 if solver == "cholesky" else 1e-3)


def test_long_rows_read_in_place_match_gathered_rows():
    from recore import _core

    rng = np.random.default_rng(5)
    matrix = as_dtype(sp.random(30, 60, density=0.5, random_state=5) * 3, np.float32)
    fixed = random_factors(rng, 60, 16, np.float32)
    start = random_factors(rng, 30, 16, np.float32)
    gathered = half_step(matrix, fixed, start.copy(), regularization=0.3)
    try:
        _core._set_gather_limit_for_testing(4)  # every row is longer than this
        in_place = half_step(matrix, fixed, start.copy(), regularization=0.3)
    finally:
        _core._set_gather_limit_for_testing(0)
    np.testing.assert_allclose(in_place, gathered, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("block_rows", [1, 7, 1000])
@pytest.mark.parametrize("kind", KINDS)
def test_blocked_cg_matches_cg_by_row(block_rows, kind):
    # Blocked CG normally runs only when the fixed factors outgrow the caches; force it.
    from recore import _core

    feedback, confidence, weighted = kind
    rng = np.random.default_rng(block_rows)
    dense = sp.random(40, 50, density=0.3, random_state=6).toarray() * 3
    dense[3] = 0  # an empty row
    matrix = as_dtype(dense, np.float64)
    fixed = random_factors(rng, 50, 6, np.float64)
    start = random_factors(rng, 40, 6, np.float64)
    options = dict(
        regularization=0.2, alpha=1.3, feedback=feedback, confidence=confidence, weighted_regularization=weighted
    )
    by_row = half_step(matrix, fixed, start.copy(), **options)
    try:
        _core._set_block_rows_for_testing(block_rows)
        blocked = half_step(matrix, fixed, start.copy(), **options)
        model = recore.ALS(factors=4, iterations=3, random_state=0, dtype="float64", **options).fit(matrix)
    finally:
        _core._set_block_rows_for_testing(0)
    np.testing.assert_allclose(blocked, by_row, rtol=1e-9, atol=1e-12)
    reference = recore.ALS(factors=4, iterations=3, random_state=0, dtype="float64", **options).fit(matrix)
    np.testing.assert_allclose(model.user_factors_, reference.user_factors_, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("solver", ["cg", "cholesky"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_int64_indices_give_the_same_results_as_int32(solver, dtype):
    rng = np.random.default_rng(8)
    narrow = as_dtype(sp.random(30, 25, density=0.3, random_state=8) * 2, dtype)
    wide = narrow.copy()
    wide.indices = wide.indices.astype(np.int64)
    wide.indptr = wide.indptr.astype(np.int64)
    fixed = random_factors(rng, 25, 5, dtype)
    start = random_factors(rng, 30, 5, dtype)
    expected = half_step(narrow, fixed, start.copy(), regularization=0.2, solver=solver)
    actual = half_step(wide, fixed, start.copy(), regularization=0.2, solver=solver)
    np.testing.assert_array_equal(actual, expected)
    users = random_factors(rng, 30, 5, dtype)
    assert kernels.als_loss(wide, users, fixed, regularization=0.2) == kernels.als_loss(
        narrow, users, fixed, regularization=0.2
    )
