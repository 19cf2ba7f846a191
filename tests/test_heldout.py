"""Held-out users (strong generalization), capped recall, NDCG@100 and tune, against numpy
references and planted problems."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import recore
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from recore import evaluation


def rows_as_sets(matrix):
    matrix = sp.csr_matrix(matrix)
    return [set(matrix.indices[matrix.indptr[u] : matrix.indptr[u + 1]].tolist()) for u in range(matrix.shape[0])]


def interactions(seed, n_users=30, n_items=25, nnz=250):
    return recore.datasets.synthetic(n_users, n_items, nnz, random_state=seed)


# -- the split -----------------------------------------------------------------------------------


@given(
    seed=st.integers(0, 2**32 - 1),
    held_out=st.one_of(st.integers(1, 10), st.floats(0.05, 0.95)),
    fold_in_fraction=st.one_of(st.sampled_from([0.8, 0.5, 0.75, 0.9]), st.floats(0.01, 0.99)),
)
def test_split_partitions_each_held_out_users_items(seed, held_out, fold_in_fraction):
    data = interactions(seed % 1000)
    counts = np.diff(data.indptr)
    eligible = np.flatnonzero(counts >= 2)
    split = evaluation.held_out_users_split(
        data, held_out, fold_in_fraction=fold_in_fraction, random_state=seed
    )  # fmt: skip
    expected_count = held_out if isinstance(held_out, int) else max(1, round(held_out * eligible.size))
    assert len(split.held_out_users) == expected_count
    assert set(split.held_out_users) <= set(eligible)
    # Train holds exactly the other users' rows, and none of a held-out user's.
    assert sorted(set(split.train_users) | set(split.held_out_users)) == list(range(data.shape[0]))
    assert not set(split.train_users) & set(split.held_out_users)
    assert (split.train != data[split.train_users]).nnz == 0
    # Each held-out user's items are split between fold-in and test, by the documented count.
    ratio = Fraction(fold_in_fraction).limit_denominator(1_000_000)
    for row, user in enumerate(split.held_out_users):
        items = rows_as_sets(data[user])[0]
        shown, ranked = rows_as_sets(split.fold_in[row])[0], rows_as_sets(split.test[row])[0]
        assert shown | ranked == items and not shown & ranked
        assert len(ranked) == max(1, math.floor((1 - ratio) * len(items))) and len(shown) >= 1
    # Values are kept.
    assert (split.fold_in + split.test != data[split.held_out_users]).nnz == 0
    again = evaluation.held_out_users_split(data, held_out, fold_in_fraction=fold_in_fraction, random_state=seed)
    assert all((a != b).nnz == 0 for a, b in zip(again[:3], split[:3]))
    np.testing.assert_array_equal(again.held_out_users, split.held_out_users)


@pytest.mark.parametrize(
    "n_items, fold_in, test", [(10, 8, 2), (7, 6, 1), (5, 4, 1), (14, 12, 2), (2, 1, 1), (3, 2, 1)]
)
def test_split_rounding(n_items, fold_in, test):
    # One user with n_items items, held out with the default 80/20.
    data = sp.csr_matrix(np.ones((1, n_items), np.float32))
    split = evaluation.held_out_users_split(data, 1, random_state=0)
    assert (split.fold_in.nnz, split.test.nnz) == (fold_in, test)
    assert split.train.shape == (0, n_items)


def test_split_holds_out_only_users_with_two_items():
    data = sp.csr_matrix(np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 1, 1]], np.float32))
    split = evaluation.held_out_users_split(data, 2, random_state=3)
    assert split.held_out_users.tolist() == [1, 3]
    assert split.train_users.tolist() == [0, 2]
    with pytest.raises(ValueError, match="held_out_users asks for 3 users, but only 2"):
        evaluation.held_out_users_split(data, 3)


# -- capped recall and NDCG@100 ------------------------------------------------------------------


def reference_at_k(ids, relevant_sets):
    """recall_capped and NDCG from their definitions, one user at a time, in float64."""
    k = ids.shape[1]
    capped, ndcg, users = 0.0, 0.0, 0
    for u, relevant in enumerate(relevant_sets):
        if not relevant:
            continue
        users += 1
        hits = [r for r, i in enumerate(ids[u]) if i >= 0 and i in relevant]
        capped += len(hits) / min(k, len(relevant))
        ideal = sum(1 / np.log2(r + 2) for r in range(min(k, len(relevant))))
        ndcg += sum(1 / np.log2(r + 2) for r in hits) / ideal
    return {"recall_capped": capped / users if users else 0.0, "ndcg": ndcg / users if users else 0.0}


@st.composite
def long_lists(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    users, n_items = draw(st.integers(1, 8)), draw(st.integers(100, 180))
    k = draw(st.sampled_from([100, 37, 150]))
    ids = np.full((users, k), -1, dtype=np.int32)
    relevant_sets = []
    for u in range(users):
        # From none to well over k relevant items, so both sides of min(k, |T|) are met.
        relevant_sets.append(set(rng.choice(n_items, size=draw(st.integers(0, n_items)), replace=False).tolist()))
        length = draw(st.integers(0, min(k, n_items)))
        ids[u, :length] = rng.permutation(n_items)[:length]
    return ids, relevant_sets, n_items


def as_matrix(sets, n_items):
    rows = [u for u, s in enumerate(sets) for _ in s]
    cols = [i for s in sets for i in sorted(s)]
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(sets), n_items))


@settings(max_examples=60)
@given(problem=long_lists(), threads=st.sampled_from([1, 2]))
def test_capped_recall_and_ndcg_at_100_match_the_definitions(problem, threads):
    ids, relevant_sets, n_items = problem
    got = evaluation.ranking_metrics_at_k(ids, as_matrix(relevant_sets, n_items), num_threads=threads)
    expected = reference_at_k(ids, relevant_sets)
    assert got["recall_capped"] == pytest.approx(expected["recall_capped"], abs=1e-12)
    assert got["ndcg"] == pytest.approx(expected["ndcg"], abs=1e-12)


def test_capped_recall_by_hand():
    # User 0: 2 hits of 4 relevant items in a list of 3 -> 2 / 3 (recall would be 2 / 4).
    # User 1: 1 hit of its 1 relevant item -> 1. User 2: nothing relevant, skipped.
    ids = np.array([[0, 1, 2], [3, -1, -1], [4, 3, 2]])
    test = sp.csr_matrix(np.array([[1, 0, 1, 1, 1], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0]], np.float32))
    got = evaluation.ranking_metrics_at_k(ids, test)
    assert got["recall_capped"] == pytest.approx((2 / 3 + 1) / 2)
    assert got["recall"] == pytest.approx((2 / 4 + 1) / 2)


# -- folding held-out users in -------------------------------------------------------------------


def numpy_fold_in(item_factors, rows, regularization, alpha):
    """Implicit ALS's user solve: (YtY + Yt (C_u - I) Y + lambda I) x = Yt C_u p_u, c = 1 + alpha r."""
    y = item_factors.astype(np.float64)
    vectors = np.zeros((rows.shape[0], y.shape[1]))
    for u in range(rows.shape[0]):
        items = rows.indices[rows.indptr[u] : rows.indptr[u + 1]]
        confidence = 1 + alpha * rows.data[rows.indptr[u] : rows.indptr[u + 1]].astype(np.float64)
        a = y.T @ y + (y[items].T * (confidence - 1)) @ y[items] + regularization * np.eye(y.shape[1])
        vectors[u] = np.linalg.solve(a, y[items].T @ confidence)
    return vectors


def test_fold_in_metrics_against_numpy():
    data = interactions(5, n_users=80, n_items=40, nnz=900)
    split = evaluation.held_out_users_split(data, 15, random_state=1)
    model = recore.ALS(factors=6, regularization=0.1, alpha=2.0, iterations=4, random_state=0, num_threads=1)
    model.fit(split.train)
    vectors = numpy_fold_in(model.item_factors_, split.fold_in, 0.1, 2.0)
    np.testing.assert_allclose(model.fold_in(split.fold_in), vectors, rtol=2e-3, atol=1e-5)
    # Every item but the fold-in ones ranked by score, ties to the lower id.
    scores = vectors @ model.item_factors_.astype(np.float64).T
    scores[split.fold_in.toarray() > 0] = -np.inf
    expected_ids = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    got = evaluation.fold_in_metrics(model, split.fold_in, split.test, k=10, num_threads=1)
    expected = evaluation.ranking_metrics_at_k(expected_ids, split.test, train=split.fold_in)
    assert got == pytest.approx(expected)
    assert got["users"] == 15


def test_several_cut_offs_from_one_search():
    data = interactions(6, n_users=80, n_items=120, nnz=1500)
    split = evaluation.held_out_users_split(data, 0.2, random_state=2)
    model = recore.ALS(factors=4, iterations=3, random_state=0, num_threads=1)
    result = evaluation.evaluate_held_out_users(model, split, k=(10, 100, 20), num_threads=1)
    # Fitted on the training users only.
    assert model.user_factors_.shape == (len(split.train_users), 4)
    assert result["fit_seconds"] > 0 and result["users"] == len(split.held_out_users)
    for k in (10, 20, 100):
        alone = evaluation.fold_in_metrics(model, split.fold_in, split.test, k=k, num_threads=1)
        for name in evaluation.RANKING_METRICS:
            assert result[f"{name}@{k}"] == pytest.approx(alone[name], abs=1e-12), (name, k)
    # No fold-in item is ever recommended back.
    ids, _ = model.recommend_vectors(model.fold_in(split.fold_in), split.fold_in, k=100)
    shown = rows_as_sets(split.fold_in)
    assert all(not (set(row.tolist()) & shown[u]) for u, row in enumerate(ids))


# -- tune ----------------------------------------------------------------------------------------


def planted_blocks(seed=0, blocks=6, users_per_block=10, items_per_block=6, items_per_user=4):
    """Users in blocks that each like their own block of items: rank 6, so 8 factors can
    rank every user's unseen block items first, and 1 or 2 cannot."""
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for block in range(blocks):
        for member in range(users_per_block):
            items = rng.choice(items_per_block, size=items_per_user, replace=False) + block * items_per_block
            rows += [block * users_per_block + member] * items_per_user
            cols += items.tolist()
    shape = (blocks * users_per_block, blocks * items_per_block)
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)


def als(**params):
    return recore.ALS(iterations=params.pop("iterations", 8), random_state=0, num_threads=1, **params)


def test_tune_finds_the_planted_best():
    train, validation = evaluation.leave_k_out(planted_blocks(), 1, random_state=0)
    space = {"factors": [1, 2, 8], "regularization": [1.0, 100.0]}
    result = evaluation.tune(als, train, validation, space, n_trials=100, random_state=0, k=5, num_threads=1)
    # A grid is drawn without replacement and ends when every point has been tried.
    assert sorted((row["params"]["factors"], row["params"]["regularization"]) for row in result.table) == sorted(
        (f, r) for f in space["factors"] for r in space["regularization"]
    )
    assert result.best_params == {"factors": 8, "regularization": 1.0}
    assert result.best_score == max(row["score"] for row in result.table)
    best = als(factors=8, regularization=1.0).fit(train)
    direct = evaluation.ranking_metrics(best, train, validation, k=5, num_threads=1)
    assert direct["ndcg"] == pytest.approx(result.best_score) and result.best_score > 0.6
    assert isinstance(result.best_model, recore.ALS) and result.best_model.factors == 8


def test_tune_is_reproducible_with_a_seed():
    split = evaluation.held_out_users_split(planted_blocks(1), 12, random_state=0)
    space = {
        "factors": [2, 4, 8],
        "regularization": lambda rng: float(10 ** rng.uniform(-2, 1)),
        "iterations": [2, 4],
    }

    def search(seed):
        result = evaluation.tune(als, split.train, split, space, n_trials=3, random_state=seed, num_threads=1)
        return result, [(row["trial"], row["params"], row["score"]) for row in result.table]

    first, table = search(7)
    again, table_again = search(7)
    assert table == table_again and first.best_params == again.best_params
    _, other = search(8)
    assert [row[1] for row in other] != [row[1] for row in table]
    # The held-out-users validation scores fold-in, as fold_in_metrics does.
    scored = evaluation.fold_in_metrics(first.best_model, split.fold_in, split.test, k=10, num_threads=1)
    assert scored["ndcg"] == pytest.approx(first.best_score)


class PeakAtThree:
    """A model whose validation lists put each user's one relevant item (item 0) at rank
    |iterations - 3| + 1: its NDCG rises up to 3 iterations and falls after."""

    fits: list[int] = []

    def __init__(self, iterations):
        self.iterations = iterations

    def fit(self, user_items):
        PeakAtThree.fits.append(self.iterations)
        self.n_users, self.n_items = user_items.shape
        return self

    def recommend_all(self, user_items, k, num_threads=None):
        rank = abs(self.iterations - 3)
        order = np.roll(np.arange(self.n_items), rank)[:k]
        return np.tile(order, (self.n_users, 1)).astype(np.int32), np.zeros((self.n_users, k), np.float32)


@pytest.mark.parametrize(
    "patience, min_improvement, fitted",
    [(1, 0.0, [1, 2, 3, 4]), (2, 0.0, [1, 2, 3, 4, 5]), (1, 0.5, [1, 2]), (10, 0.0, [1, 2, 3, 4, 5, 6, 7])],
)
def test_early_stopping_along_the_iterations(patience, min_improvement, fitted):
    train = sp.csr_matrix((5, 12), dtype=np.float32)
    validation = sp.csr_matrix((np.ones(5, np.float32), (np.arange(5), np.zeros(5, int))), shape=(5, 12))
    PeakAtThree.fits = []
    result = evaluation.tune(
        PeakAtThree, train, validation, {"iterations": [7, 1, 2, 3, 4, 5, 6, 3]}, n_trials=1,
        patience=patience, min_improvement=min_improvement,
    )  # fmt: skip
    assert PeakAtThree.fits == fitted
    assert [row["params"]["iterations"] for row in result.table] == fitted
    assert result.best_params == {"iterations": 3 if 3 in fitted else 2}
    assert all(row["fit_seconds"] >= 0 and row["trial"] == 0 for row in result.table)


def test_budget_stops_the_search_after_the_first_fit():
    PeakAtThree.fits = []
    train = sp.csr_matrix((3, 8), dtype=np.float32)
    validation = sp.csr_matrix(np.eye(3, 8, dtype=np.float32))
    rows = []
    result = evaluation.tune(
        PeakAtThree, train, validation, {"iterations": [1, 2, 3]}, budget_seconds=0.0, callback=rows.append
    )
    assert PeakAtThree.fits == [1] and rows == result.table


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: evaluation.held_out_users_split(np.eye(3), 1, fold_in_fraction=1.0), ValueError, "fold_in_fraction"),
        (lambda: evaluation.held_out_users_split(np.eye(3), "1"), TypeError, "held_out_users"),
        (lambda: evaluation.held_out_users_split(np.eye(3), True), TypeError, "held_out_users"),
        (lambda: evaluation.held_out_users_split(np.eye(3), 1.5), ValueError, "held_out_users"),
        (lambda: evaluation.held_out_users_split(np.eye(3), 0), ValueError, "held_out_users"),
        (lambda: evaluation.fold_in_metrics(object(), np.eye(3), np.eye(3)), TypeError, "model"),
        (lambda: evaluation.evaluate_held_out_users(recore.ALS(), (np.eye(2),) * 5), TypeError, "split"),
        (lambda: evaluation.tune(1, np.eye(3), np.eye(3), {}, n_trials=1), TypeError, "make_model"),
        (lambda: evaluation.tune(als, np.eye(3), np.eye(3), {}), ValueError, "n_trials"),
        (lambda: evaluation.tune(als, np.eye(3), np.eye(3), [], n_trials=1), TypeError, "space"),
        (lambda: evaluation.tune(als, np.eye(3), np.eye(3), {"factors": []}, n_trials=1), ValueError, "factors"),
        (lambda: evaluation.tune(als, np.eye(3), np.eye(3), {"factors": 4}, n_trials=1), TypeError, "factors"),
        (lambda: evaluation.tune(als, np.eye(3), np.eye(3), {"iterations": [0]}, n_trials=1), ValueError, "iterations"),
        (lambda: evaluation.tune(als, np.eye(3), np.eye(4), {}, n_trials=1), ValueError, "validation"),
        (lambda: evaluation.tune(als, np.eye(3), (np.eye(2), np.eye(2)), {}, n_trials=1), ValueError, "fold_in"),
        (lambda: evaluation.tune(als, np.eye(3), np.eye(3), {}, n_trials=1, metric="rmse"), ValueError, "metric"),
        (lambda: evaluation.tune(als, np.eye(3), np.eye(3), {}, n_trials=1, patience=0), ValueError, "patience"),
        (lambda: evaluation.tune(als, np.eye(3), np.eye(3), {}, budget_seconds=-1), ValueError, "budget_seconds"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
