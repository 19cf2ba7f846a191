"""Serving a fitted model: recommend, recommend_all, similar_items/users, fold_in."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import recore
import reference
import scipy.sparse as sp
import topk_reference
from conftest import sparse_matrices
from hypothesis import given
from hypothesis import strategies as st


@pytest.fixture(scope="module")
def data():
    return recore.datasets.synthetic(300, 120, 3000, random_state=5)


@pytest.fixture(scope="module", params=["implicit", "explicit"])
def model(request, data):
    return recore.ALS(factors=8, iterations=3, feedback=request.param, random_state=0).fit(data)


def test_recommend_matches_reference_with_seen_items_excluded(model, data):
    users = np.array([0, 5, 17, 299])
    ids, scores = model.recommend(users, data, k=15)
    expected_ids, expected_scores = topk_reference.topk(
        model.user_factors_[users], model.item_factors_, 15, exclude=data[users]
    )
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)
    for q, user in enumerate(users):
        assert not set(ids[q]) & set(data[user].indices)


def test_recommend_one_user_and_rows_per_query(model, data):
    ids, scores = model.recommend(7, data, k=5)
    assert ids.shape == (5,)
    batch_ids, batch_scores = model.recommend([7, 8], data, k=5)
    np.testing.assert_array_equal(ids, batch_ids[0])
    np.testing.assert_array_equal(scores, batch_scores[0])
    # user_items with one row per queried user means the same thing
    per_query = model.recommend([7, 8], data[[7, 8]], k=5)
    np.testing.assert_array_equal(per_query[0], batch_ids)


def test_recommend_without_exclusion_filters_and_allowed_items(model, data):
    ids, _ = model.recommend(3, data, k=120, exclude_seen=False)
    assert sorted(ids) == list(range(120))
    allowed = np.arange(0, 120, 7)
    ids, _ = model.recommend(3, data, k=200, allow=allowed)
    valid = ids[ids >= 0]
    assert set(valid) <= set(allowed) and not set(valid) & set(data[3].indices)


def test_filter_items_are_never_recommended(model, data):
    best, _ = model.recommend(3, k=10)
    ids, _ = model.recommend(3, k=10, deny=best[:3])
    assert not set(ids) & set(best[:3])
    np.testing.assert_array_equal(ids[:7], best[3:])


def test_recommend_all_equals_recommend_for_every_user(model, data):
    ids, scores = model.recommend_all(data, k=4)
    assert ids.shape == (300, 4)
    some = model.recommend([10, 200], data, k=4)
    np.testing.assert_array_equal(ids[[10, 200]], some[0])


def test_similar_items_and_users_by_cosine(model):
    ids, scores = model.similar_items([0, 9], k=6)
    expected_ids, expected_scores = topk_reference.topk(
        model.item_factors_[[0, 9]], model.item_factors_, 6, metric="cosine"
    )
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)
    assert ids[0, 0] == 0 and ids[1, 0] == 9
    ids, _ = model.similar_items(9, k=6, exclude_self=True)
    assert 9 not in ids and ids.shape == (6,)
    ids, scores = model.similar_users(4, k=3)
    assert ids[0] == 4 and abs(scores[0] - 1) < 1e-5
    assert 4 not in model.similar_users([4], k=3, exclude_self=True)[0][0]


@given(matrix=sparse_matrices(max_rows=12, max_cols=10), feedback=st.sampled_from(["implicit", "explicit"]))
def test_fold_in_matches_an_exact_solve_for_those_users(matrix, feedback):
    model = recore.ALS(factors=4, iterations=2, feedback=feedback, regularization=0.5, dtype=np.float64, random_state=1)
    model.fit(matrix)
    rows = matrix[: max(1, matrix.shape[0] // 2)]
    folded = model.fold_in(rows)
    expected = reference.half_step(rows, model.item_factors_, **_objective(model))
    np.testing.assert_allclose(folded, expected, rtol=1e-8, atol=1e-10)


def _objective(model):
    return dict(
        regularization=model.regularization,
        alpha=model.alpha,
        feedback=model.feedback,
        confidence=model.confidence,
        weighted_regularization=model.weighted_regularization,
    )


def test_fold_in_then_recommend_serves_a_new_user(model, data):
    new_user = sp.csr_matrix(([1.0, 2.0, 1.0], ([0, 0, 0], [3, 50, 77])), shape=(1, 120))
    vector = model.fold_in(new_user)
    ids, scores = model.recommend_vectors(vector, new_user, k=5)
    assert ids.shape == (1, 5) and not {3, 50, 77} & set(ids[0])
    expected = recore.topk(vector.astype(np.float32), model.item_factors_.astype(np.float32), 5, exclude=new_user)
    np.testing.assert_array_equal(ids, expected[0])


def test_a_refit_model_serves_its_new_factors(data):
    model = recore.ALS(factors=4, iterations=1, random_state=0).fit(data)
    first = model.similar_items(0, k=5)
    model.set_params(random_state=1).fit(data)
    second = model.similar_items(0, k=5)
    expected = topk_reference.topk(model.item_factors_[[0]], model.item_factors_, 5, metric="cosine")
    np.testing.assert_allclose(second[1], expected[1][0], rtol=1e-5)
    assert not np.array_equal(first[1], second[1])


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda m, d: m.recommend(300, d), IndexError, "users"),
        (lambda m, d: m.recommend(-1, d), IndexError, "users"),
        (lambda m, d: m.recommend([0, 1], d, k=0), ValueError, "k must be >= 1"),
        (lambda m, d: m.recommend([0, 1], d[:5]), ValueError, "rows"),
        (lambda m, d: m.recommend([0, 1], d[:, :5]), ValueError, "columns"),
        (lambda m, d: m.recommend([0], d.toarray()), TypeError, "user_items must be a scipy.sparse"),
        (lambda m, d: m.recommend(0, d, deny=[120]), IndexError, "deny"),
        (lambda m, d: m.recommend(0, d, allow=[-3]), IndexError, "allow"),
        (lambda m, d: m.recommend(0.5, d), TypeError, "users"),
        (lambda m, d: m.similar_items(120), IndexError, "items"),
        (lambda m, d: m.similar_users([0], k=-1), ValueError, "k must be >= 1"),
        (lambda m, d: m.fold_in(d[:, :5]), ValueError, "columns"),
        (lambda m, d: m.recommend_vectors(np.ones((1, 3)), k=2), ValueError, "values per row"),
        (lambda m, d: m.recommend_vectors(np.full((1, 8), np.nan), k=2), ValueError, "NaN"),
    ],
)
def test_bad_input(model, data, call, error, match):
    with pytest.raises(error, match=match):
        call(model, data)


def test_unfitted_model_refuses_to_serve():
    with pytest.raises(ValueError, match="not fitted"):
        recore.ALS().recommend(0)


def test_nan_in_model_factors_is_reported(data):
    model = recore.ALS(factors=4, iterations=1, random_state=0).fit(data)
    model.item_factors_ = model.item_factors_.copy()
    model.item_factors_[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.recommend(0, data)


def test_large_batches_are_searched_in_chunks_with_the_same_results(model, data, monkeypatch):
    """Large batches are searched a chunk of queries per engine call (so Ctrl-C is answered
    between chunks): recommend_all, similar_items, ItemIndex.search and recore.topk with
    chunks of a few queries give exactly the one-call results."""
    search_module = importlib.import_module("recore.topk")  # recore.topk is also the function

    items = np.ascontiguousarray(model.item_factors_, dtype=np.float32)
    queries = np.ascontiguousarray(model.user_factors_[:40], dtype=np.float32)
    seen = data[:40]

    def searches():
        return [
            model.recommend_all(data, k=7, deny=[1, 2], allow=np.arange(0, 120, 2)),
            model.recommend_all(data, k=7),
            model.similar_items(np.arange(50), k=6, exclude_self=True),
            recore.ItemIndex(items).search(queries, 5, exclude=seen, deny=[3]),
            recore.topk(queries, items, 9, metric="cosine", exclude=seen),
        ]

    whole = searches()
    monkeypatch.setattr(search_module, "SEARCH_CHUNK_MULTIPLY_ADDS", 5 * 120 * 8)
    chunked = searches()
    for (chunked_ids, chunked_scores), (ids, scores) in zip(chunked, whole):
        np.testing.assert_array_equal(chunked_ids, ids)
        np.testing.assert_array_equal(chunked_scores, scores)


def test_user_items_layout_is_said_or_unambiguous(model, data):
    """user_items is the whole matrix or one row per queried user; when its row count fits
    both readings and they differ, recommend asks instead of guessing."""
    n_users = data.shape[0]
    shuffled = np.random.default_rng(0).permutation(n_users)
    by_id = model.recommend(shuffled, data, k=5, user_items_layout="full")
    per_query = model.recommend(shuffled, data[shuffled], k=5, user_items_layout="per_query")
    np.testing.assert_array_equal(by_id[0], per_query[0])
    with pytest.raises(ValueError, match="user_items_layout"):
        model.recommend(shuffled, data, k=5)
    with pytest.raises(ValueError, match="user_items_layout='per_query'"):
        model.recommend([0, 1], data, k=5, user_items_layout="per_query")
    with pytest.raises(ValueError, match="user_items_layout"):
        model.recommend(0, data, k=5, user_items_layout="rows")
    # Unambiguous without saying: every user in id order, a few users, one row per user.
    np.testing.assert_array_equal(model.recommend(np.arange(n_users), data, k=5)[0], model.recommend_all(data, k=5)[0])
    np.testing.assert_array_equal(model.recommend([4, 2], data[[4, 2]], k=5)[0], model.recommend([4, 2], data, k=5)[0])


def test_earlier_allow_and_deny_names_still_work_with_a_future_warning(model, data):
    expected = model.recommend(1, data, k=5, allow=np.arange(40), deny=[0, 1])
    with pytest.warns(FutureWarning) as caught:
        got = model.recommend(1, data, k=5, items=np.arange(40), filter_items=[0, 1])
    messages = sorted(str(warning.message).split("=")[0] for warning in caught)
    assert messages == ["filter_items", "items"]
    np.testing.assert_array_equal(got[0], expected[0])
    with pytest.raises(TypeError, match="deny"), pytest.warns(FutureWarning):
        model.recommend(1, data, k=5, deny=[0], filter_items=[1])


def test_concurrent_recommend_from_eight_threads_matches_serial_calls(data):
    """One model serving 8 Python threads at once (single users, batches, both precisions,
    its serving caches built concurrently) returns exactly what serial calls return."""
    from concurrent.futures import ThreadPoolExecutor

    model = recore.ALS(factors=16, iterations=2, random_state=3).fit(data)
    calls = [([u], "float32") for u in range(0, 300, 7)] + [(list(range(u, u + 40)), "bfloat16") for u in (0, 100)]
    calls += [([u], "bfloat16") for u in range(3, 300, 11)] + [(list(range(50, 250)), "float32")]

    def run(call):
        users, precision = call
        return model.recommend(users, data, k=9, precision=precision, num_threads=1)

    concurrent = list(ThreadPoolExecutor(8).map(run, calls))
    fresh = recore.ALS(factors=16, iterations=2, random_state=3).fit(data)  # caches built serially
    for call, (ids, scores) in zip(calls, concurrent):
        users, precision = call
        expected = fresh.recommend(users, data, k=9, precision=precision, num_threads=1)
        np.testing.assert_array_equal(ids, expected[0])
        np.testing.assert_array_equal(scores, expected[1])


def test_a_few_users_of_a_large_matrix_are_checked_and_served_the_same():
    """Serving a few users of a big user_items reads and checks only their rows (their
    pointers and their indices): pointers that break a taken row, or its columns, are refused;
    rows not taken are not read."""
    data = recore.datasets.synthetic(3000, 200, 30_000, random_state=0)
    model = recore.ALS(factors=8, iterations=2, random_state=0).fit(data)
    few = model.recommend([5, 17], data, k=10)
    np.testing.assert_array_equal(few[0], model.recommend_all(data, k=10)[0][[5, 17]])
    broken = data.copy()
    broken.indptr = broken.indptr.copy()
    broken.indptr[10] = broken.indptr[11] + 5
    with pytest.raises(ValueError, match="indptr"):
        model.recommend([10], broken, k=3)  # row 10 now begins after it ends
    np.testing.assert_array_equal(model.recommend([5], broken, k=3)[0], model.recommend([5], data, k=3)[0])
    with pytest.raises(ValueError, match="indptr"):
        model.recommend_all(broken, k=3)  # every row taken: the whole structure is checked
    wrong_column = data.copy()
    wrong_column.indices = wrong_column.indices.copy()
    wrong_column.indices[wrong_column.indptr[5]] = 10_000
    with pytest.raises(IndexError):
        model.recommend([5], wrong_column, k=3)


@st.composite
def seen_matrices(draw, shape):
    """A users x items matrix in any of the forms callers hold: canonical int32 CSR, rows with
    unsorted or repeated items, stored zeros, int64 indices."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_users, n_items = shape
    count = draw(st.integers(0, 3 * n_items))
    rows = rng.integers(0, n_users, count)
    cols = rng.integers(0, n_items, count)
    values = rng.choice(np.array([0.0, 1.0, 2.5], dtype=np.float32), count)
    matrix = sp.csr_matrix((values, (rows, cols)), shape=shape)  # sums repeats: canonical
    form = draw(st.sampled_from(["canonical", "repeated", "unsorted", "int64"]))
    if form == "repeated":  # the coordinates as given, each row in order but with repeats
        order = np.lexsort((cols, rows))
        pointers = np.zeros(n_users + 1, dtype=np.int32)
        np.cumsum(np.bincount(rows, minlength=n_users), out=pointers[1:])
        matrix = sp.csr_matrix((values[order], cols[order].astype(np.int32), pointers), shape=shape)
    elif form == "unsorted":
        for user in range(n_users):
            begin, end = matrix.indptr[user], matrix.indptr[user + 1]
            matrix.indices[begin:end] = matrix.indices[begin:end][::-1].copy()
        matrix.has_sorted_indices = False
    elif form == "int64":
        matrix.indices, matrix.indptr = matrix.indices.astype(np.int64), matrix.indptr.astype(np.int64)
    return matrix


@given(
    seen=seen_matrices((300, 120)), users=st.lists(st.integers(0, 299), min_size=1, max_size=3), k=st.integers(1, 130)
)
def test_few_users_exclude_exactly_their_rows(model, seen, users, k):
    """One or two users (rows sliced alone) and more (the general path): each user's stored
    items, whatever the matrix's form, are excluded, and nothing else."""
    users = np.array(users)
    ids, scores = model.recommend(users, seen, k=k)
    rows = sp.csr_matrix(seen, dtype=np.float32)[users]
    queries = model.user_factors_[users]
    expected_ids, expected_scores = topk_reference.topk(queries, model.item_factors_, k, exclude=rows)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)
    for q, user in enumerate(users):
        found = ids[q][ids[q] >= 0]
        assert not set(found.tolist()) & set(seen[user].indices.tolist())
        assert len(found) == min(k, 120 - len(set(seen[user].indices.tolist())))


def test_one_user_with_a_bad_row_is_refused():
    data = recore.datasets.synthetic(50, 30, 300, random_state=1)
    model = recore.ALS(factors=4, iterations=1, random_state=0).fit(data)
    seen = recore.datasets.synthetic(50, 30, 300, random_state=2).astype(np.float32)
    seen.indices = seen.indices.astype(np.int32)
    seen.indptr = seen.indptr.astype(np.int32)
    broken = seen.copy()
    broken.indices[broken.indptr[3]] = 30  # user 3's first item is past the catalog
    with pytest.raises(IndexError, match="user_items"):
        model.recommend(3, broken)
    broken = seen.copy()
    broken.indptr[4] = broken.indptr[3] - 1  # user 3's row ends before it begins
    with pytest.raises(ValueError, match="user_items.indptr"):
        model.recommend(3, broken)
    model.recommend(3, seen)  # the matrix itself is fine
