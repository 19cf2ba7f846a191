"""recore.topk against the full-scores reference in topk_reference.py."""

from __future__ import annotations

import numpy as np
import pytest
import recore
import scipy.sparse as sp
import topk_reference
from hypothesis import given
from hypothesis import strategies as st
from recore import _core

seeds = st.integers(0, 2**32 - 1)


def integer_factors(rng, rows, f):
    """Small integers: every dot product is exact in float32, so ids and scores must match
    the reference exactly, ties included."""
    return rng.integers(-3, 4, size=(rows, f)).astype(np.float32)


def random_exclusions(rng, rows, cols, density):
    mask = rng.random((rows, cols)) < density
    return sp.csr_matrix(mask.astype(np.float32))


@st.composite
def problems(draw, max_queries=40, max_items=90):
    rng = np.random.default_rng(draw(seeds))
    nq = draw(st.integers(1, max_queries))
    n = draw(st.integers(1, max_items))
    f = draw(st.integers(1, 12))
    k = draw(st.integers(1, n + 5))
    queries, items = integer_factors(rng, nq, f), integer_factors(rng, n, f)
    options = {}
    if draw(st.booleans()):
        options["exclude"] = random_exclusions(rng, nq, n, draw(st.sampled_from([0.0, 0.1, 0.5, 1.0])))
    if draw(st.booleans()):
        options["allow"] = rng.choice(n, size=draw(st.integers(0, n)), replace=False)
    if draw(st.booleans()):
        options["deny"] = rng.choice(n, size=draw(st.integers(0, n)), replace=False)
    return queries, items, k, options


@given(problem=problems(), metric=st.sampled_from(["dot", "cosine"]), threads=st.sampled_from([1, 2]))
def test_matches_reference(problem, metric, threads):
    queries, items, k, options = problem
    ids, scores = recore.topk(queries, items, k, metric=metric, num_threads=threads, **options)
    expected_ids, expected_scores = topk_reference.topk(queries, items, k, metric=metric, **options)
    assert ids.dtype == np.int32 and scores.dtype == np.float32 and ids.shape == (len(queries), k)
    if metric == "dot":  # exact arithmetic: ids and ties must agree exactly
        np.testing.assert_array_equal(ids, expected_ids)
        np.testing.assert_array_equal(scores, expected_scores.astype(np.float32))
    else:  # cosine rounds: compare the score of every rank, and the padding exactly
        np.testing.assert_array_equal(ids == -1, expected_ids == -1)
        np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)


@given(problem=problems(max_queries=8, max_items=300), threads=st.sampled_from([1, 2, 3]))
def test_single_query_path_matches_batch(problem, threads):
    """Batches of up to 2 queries take the item-parallel path; every query alone gives
    bitwise what it gets in a batch."""
    rng = np.random.default_rng(len(problem[0]))
    queries, items, k, options = problem
    queries = queries + rng.standard_normal(queries.shape).astype(np.float32)  # real rounding
    items = items + rng.standard_normal(items.shape).astype(np.float32)
    options.pop("exclude", None)
    batch_ids, batch_scores = recore.topk(queries, items, k, num_threads=threads, **options)
    for q in range(len(queries)):
        ids, scores = recore.topk(queries[q], items, k, num_threads=threads, **options)
        np.testing.assert_array_equal(ids, batch_ids[q])
        np.testing.assert_array_equal(scores, batch_scores[q])


@pytest.mark.parametrize("k", [1, 3, 10, 100, 700])
def test_large_problem_with_exclusions_and_every_block(k):
    """Several item blocks, query blocks and reservoir compactions, exclusions in each."""
    rng = np.random.default_rng(k)
    queries = integer_factors(rng, 300, 64)
    items = integer_factors(rng, 1500, 64)
    exclude = random_exclusions(rng, 300, 1500, 0.2)
    ids, scores = recore.topk(queries, items, k, exclude=exclude, num_threads=2)
    expected_ids, expected_scores = topk_reference.topk(queries, items, k, exclude=exclude)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(scores, expected_scores.astype(np.float32))


def test_float_scores_are_the_same_for_any_thread_count_and_batch():
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((200, 37), dtype=np.float32)
    items = rng.standard_normal((2000, 37), dtype=np.float32)
    results = [recore.topk(queries, items, 20, num_threads=t) for t in (1, 2, 3)]
    for ids, scores in results[1:]:
        np.testing.assert_array_equal(ids, results[0][0])
        np.testing.assert_array_equal(scores, results[0][1])
    expected = np.sort(queries.astype(np.float64) @ items.T.astype(np.float64), axis=1)[:, ::-1][:, :20]
    np.testing.assert_allclose(results[0][1], expected, rtol=1e-5, atol=1e-5)


@given(problem=problems(), metric=st.sampled_from(["dot", "cosine"]))
def test_bfloat16_results_equal_float32_results(problem, metric):
    queries, items, k, options = problem
    full = recore.topk(queries, items, k, metric=metric, **options)
    low = recore.topk(queries, items, k, metric=metric, precision="bfloat16", **options)
    np.testing.assert_array_equal(low[0], full[0])
    np.testing.assert_array_equal(low[1], full[1])


def test_excluded_items_never_returned():
    rng = np.random.default_rng(3)
    queries = rng.standard_normal((50, 8), dtype=np.float32)
    items = rng.standard_normal((100, 8), dtype=np.float32)
    exclude = random_exclusions(rng, 50, 100, 0.7)
    ids, _ = recore.topk(queries, items, 100, exclude=exclude)
    for q in range(50):
        returned = set(ids[q][ids[q] >= 0])
        assert not returned & set(exclude[q].indices)
        assert returned | set(exclude[q].indices) == set(range(100))


def test_stored_zeros_and_unsorted_duplicate_exclusions_count():
    queries = np.eye(2, 4, dtype=np.float32)
    items = np.eye(4, dtype=np.float32)
    # Row 0 excludes 0 (a stored zero) and 2 twice, unsorted; row 1 excludes 1.
    exclude = sp.csr_matrix((np.array([1.0, 0.0, 1.0, 5.0]), np.array([2, 0, 2, 1]), np.array([0, 3, 4])), shape=(2, 4))
    ids, _ = recore.topk(queries, items, 4, exclude=exclude)
    np.testing.assert_array_equal(ids, [[1, 3, -1, -1], [0, 2, 3, -1]])


def test_padding_is_exact():
    ids, scores = recore.topk(np.ones((3, 2), np.float32), np.ones((2, 2), np.float32), 5)
    np.testing.assert_array_equal(ids, [[0, 1, -1, -1, -1]] * 3)
    assert np.all(scores[:, :2] == 2) and np.all(np.isneginf(scores[:, 2:]))


def test_empty_catalog_and_no_queries():
    ids, scores = recore.topk(np.ones((2, 3), np.float32), np.ones((0, 3), np.float32), 2)
    assert (ids == -1).all() and np.isneginf(scores).all()
    ids, scores = recore.topk(np.ones((0, 3), np.float32), np.ones((4, 3), np.float32), 2)
    assert ids.shape == (0, 2)


def test_cosine_zero_vectors_score_zero_and_tie_by_id():
    queries = np.array([[0, 0], [1, 0]], np.float32)
    items = np.array([[0, 0], [3, 0], [-1, 0], [0, 2]], np.float32)
    ids, scores = recore.topk(queries, items, 4, metric="cosine")
    np.testing.assert_array_equal(ids[0], [0, 1, 2, 3])  # a zero query: every cosine is 0
    np.testing.assert_array_equal(scores[0], [0, 0, 0, 0])
    np.testing.assert_array_equal(ids[1], [1, 0, 3, 2])  # a zero item has cosine 0
    np.testing.assert_array_equal(scores[1], [1, 0, 0, -1])


def test_one_dimensional_query_gives_one_dimensional_results():
    ids, scores = recore.topk(np.array([1, 0], np.float32), np.eye(2, dtype=np.float32), 1)
    assert ids.shape == (1,) and ids[0] == 0 and scores[0] == 1


def test_kernel_releases_the_gil():
    import threading

    rng = np.random.default_rng(0)
    queries = rng.standard_normal((3000, 32), dtype=np.float32)
    items = rng.standard_normal((3000, 32), dtype=np.float32)
    ticks = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks.append(1)

    thread = threading.Thread(target=count)
    thread.start()
    try:
        for _ in range(3):
            _core.topk(queries, items, 10, num_threads=1)
    finally:
        stop.set()
        thread.join()
    assert len(ticks) > 100


# -- bad input ------------------------------------------------------------------------------

Q = np.ones((3, 4), np.float32)
X = np.ones((5, 4), np.float32)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: recore.topk(Q, X, 0), ValueError, "k must be >= 1"),
        (lambda: recore.topk(Q, X, 2.5), TypeError, "k must be an integer"),
        (lambda: recore.topk(Q, np.ones((5, 3), np.float32), 2), ValueError, "same number of factors"),
        (lambda: recore.topk(Q, X.astype(np.float64), 2), TypeError, "items must have dtype float32"),
        (lambda: recore.topk(Q.astype(np.int32), X, 2), TypeError, "queries must have dtype float32"),
        (lambda: recore.topk(np.asfortranarray(np.ones((3, 4), np.float32)), X, 2), ValueError, "C-contiguous"),
        (lambda: recore.topk(np.ones((2, 8), np.float32)[:, ::2], X, 2), ValueError, "C-contiguous"),
        (lambda: recore.topk([[1.0] * 4], X, 2), TypeError, "queries must be a numpy array"),
        (lambda: recore.topk(np.ones((2, 2, 4), np.float32), X, 2), ValueError, "2-dimensional"),
        (lambda: recore.topk(np.full((3, 4), np.nan, np.float32), X, 2), ValueError, "queries must not contain NaN"),
        (lambda: recore.topk(Q, np.full((5, 4), np.inf, np.float32), 2), ValueError, "items must not contain NaN"),
        (lambda: recore.topk(Q, X, 2, metric="l2"), ValueError, "metric"),
        (lambda: recore.topk(Q, X, 2, precision="half"), ValueError, "precision"),
        (lambda: recore.topk(Q, X, 2, num_threads=-1), ValueError, "num_threads"),
        (lambda: recore.topk(Q, X, 2, exclude=sp.csr_matrix((2, 5))), ValueError, "one row per query"),
        (lambda: recore.topk(Q, X, 2, exclude=sp.csr_matrix((3, 6))), ValueError, "one column per item"),
        (lambda: recore.topk(Q, X, 2, exclude=np.zeros((3, 5))), TypeError, "exclude must be a scipy.sparse"),
        (lambda: recore.topk(Q, X, 2, allow=[0, 5]), IndexError, "allow"),
        (lambda: recore.topk(Q, X, 2, deny=[-1]), IndexError, "deny"),
        (lambda: recore.topk(Q, X, 2, deny=[0.5]), TypeError, "deny"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_malformed_exclusions_raise_before_work():
    bad = sp.csr_matrix((3, 5))
    bad.indices = np.array([7], dtype=np.int32)
    bad.indptr = np.array([0, 1, 1, 1], dtype=np.int32)
    bad.data = np.array([1.0], dtype=np.float32)
    with pytest.raises(IndexError, match="exclude"):
        recore.topk(Q, X, 2, exclude=bad)


def test_core_checks_its_buffers():
    with pytest.raises(ValueError, match="sorted"):
        unsorted = sp.csr_matrix(
            (np.ones(2, np.float32), np.array([3, 1], np.int32), np.array([0, 2, 2, 2], np.int32)), shape=(3, 5)
        )
        _core.topk(Q, X, 2, exclude=unsorted)
    with pytest.raises(ValueError, match="item_ids"):
        _core.topk(Q, X[:2], 2, item_ids=np.array([1, 1], np.int64), catalog_size=5)
    with pytest.raises(ValueError, match="denied"):
        _core.topk(Q, X, 2, denied=np.zeros(3, np.uint64))
    with pytest.raises(TypeError, match="queries must have dtype float32"):
        _core.topk(Q.astype(np.float64), X, 2)
    with pytest.raises(ValueError, match="NaN"):
        _core.topk(np.full((3, 4), np.nan, np.float32), X, 2)


@given(
    problem=problems(max_queries=6, max_items=300),
    threads=st.sampled_from([1, 2, 3]),
    metric=st.sampled_from(["dot", "cosine"]),
    precision=st.sampled_from(["float32", "bfloat16"]),
    noisy=st.booleans(),
)
def test_item_index_serves_one_query_as_the_batch_does(problem, threads, metric, precision, noisy):
    """An ItemIndex reads single queries from its factor-major panels (in bfloat16 with an
    exact re-rank, for precision="bfloat16"): bitwise the batch's float32 results, with
    exclusions and filters. Integer factors make many exact ties, the hardest case for the
    bfloat16 margin."""
    rng = np.random.default_rng(len(problem[1]))
    queries, items, k, options = problem
    if noisy:
        queries = queries + rng.standard_normal(queries.shape).astype(np.float32)
        items = items + rng.standard_normal(items.shape).astype(np.float32)
    exclude = options.pop("exclude", None)
    options.pop("allow", None)  # an allow list searches gathered rows, not the panels
    index = recore.ItemIndex(items, metric=metric)
    batch = recore.topk(
        np.vstack([queries] * 3),
        items,
        k,
        metric=metric,
        num_threads=threads,
        exclude=None if exclude is None else sp.vstack([exclude] * 3).tocsr(),
        **options,
    )
    for q in range(len(queries)):
        row = None if exclude is None else exclude[q]
        ids, scores = index.search(queries[q], k, exclude=row, precision=precision, num_threads=threads, **options)
        np.testing.assert_array_equal(ids, batch[0][q])
        np.testing.assert_array_equal(scores, batch[1][q])


@pytest.mark.parametrize("threads", [1, 2])
def test_bfloat16_search_with_more_near_ties_than_its_reservoir_holds(threads):
    """5,000 identical items are all within the bfloat16 error bound of the best one, more
    than the candidate reservoir (k + 1024) can hold: the search must redo the query
    exactly and still return the lowest ids."""
    items = np.tile(np.float32([0.3, -1.7, 2.2]), (5000, 1))
    index = recore.ItemIndex(items)
    ids, scores = index.search(np.float32([1.0, 0.5, 0.25]), 3, precision="bfloat16", num_threads=threads)
    np.testing.assert_array_equal(ids, [0, 1, 2])
    expected = recore.topk(np.float32([[1.0, 0.5, 0.25]] * 3), items, 3)
    np.testing.assert_array_equal(scores, expected[1][0])


def test_item_index_checks_items_once_and_queries_each_time():
    with pytest.raises(ValueError, match="items must not contain NaN"):
        recore.ItemIndex(np.full((3, 2), np.nan, np.float32))
    index = recore.ItemIndex(np.ones((3, 2), np.float32))
    with pytest.raises(ValueError, match="queries must not contain NaN"):
        index.search(np.array([np.nan, 1], np.float32), 1)
    with pytest.raises(ValueError, match="same number of factors"):
        index.search(np.ones(3, np.float32), 1)


def with_int64_indices(matrix):
    """A copy whose index arrays are int64 (scipy's constructors would narrow them)."""
    wide = matrix.copy()
    wide.indices, wide.indptr = matrix.indices.astype(np.int64), matrix.indptr.astype(np.int64)
    return wide


def test_int64_ids_and_int64_exclusions_give_the_same_results():
    """Catalogs of 2**31 items or more get int64 ids and int64 exclusion indices; the same
    code paths, exercised here on a small catalog, batch and single-query."""
    rng = np.random.default_rng(7)
    queries = integer_factors(rng, 40, 6)
    items = integer_factors(rng, 300, 6)
    exclude = random_exclusions(rng, 40, 300, 0.3)
    expected_ids, expected_scores = _core.topk(queries, items, 17, exclude=exclude)
    for rows in (40, 1):
        for exclusions in (exclude[:rows], with_int64_indices(exclude[:rows])):
            ids, scores = _core.topk(queries[:rows], items, 17, exclude=exclusions, wide_ids=True)
            assert ids.dtype == np.int64
            np.testing.assert_array_equal(ids, expected_ids[:rows])
            np.testing.assert_array_equal(scores, expected_scores[:rows])
