"""recore.evaluation against plain numpy definitions."""

from __future__ import annotations

import numpy as np
import pytest
import recore
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from recore import evaluation


def reference(ids, relevant_sets, n_items, train_sets):
    """The module docstring's definitions, one user at a time."""
    k = ids.shape[1]
    sums = dict(precision=0.0, recall=0.0, recall_capped=0.0, ndcg=0.0, map=0.0, hit_rate=0.0)
    auc_sum, auc_users, users = 0.0, 0, 0
    for u, relevant in enumerate(relevant_sets):
        if not relevant:
            continue
        users += 1
        listed = [i for i in ids[u] if i >= 0]
        hit_flags = [i in relevant for i in ids[u]]
        hits = sum(f for f, i in zip(hit_flags, ids[u]) if i >= 0)
        sums["precision"] += hits / k
        sums["recall"] += hits / len(relevant)
        sums["recall_capped"] += hits / min(k, len(relevant))
        dcg = sum(1 / np.log2(r + 2) for r, (f, i) in enumerate(zip(hit_flags, ids[u])) if f and i >= 0)
        idcg = sum(1 / np.log2(r + 2) for r in range(min(k, len(relevant))))
        sums["ndcg"] += dcg / idcg
        precisions, seen_hits = [], 0
        for r, i in enumerate(ids[u]):
            if i >= 0 and i in relevant:
                seen_hits += 1
                precisions.append(seen_hits / (r + 1))
        sums["map"] += sum(precisions) / min(k, len(relevant))
        sums["hit_rate"] += hits > 0
        candidates = [i for i in range(n_items) if i not in train_sets[u] or i in relevant]
        negatives = [i for i in candidates if i not in relevant]
        if negatives:
            position = {i: r for r, i in enumerate(listed)}
            right = 0.0
            for i in relevant:
                for j in negatives:
                    if i in position and (j not in position or position[i] < position[j]):
                        right += 1
                    elif i not in position and j not in position:
                        right += 0.5
            auc_sum += right / (len(relevant) * len(negatives))
            auc_users += 1
    result = {name: value / users if users else 0.0 for name, value in sums.items()}
    result["auc"] = auc_sum / auc_users if auc_users else 0.0
    result["coverage"] = len({i for i in ids.ravel() if i >= 0}) / n_items
    result["users"] = users
    return result


@st.composite
def problems(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    users, n_items, k = draw(st.integers(1, 12)), draw(st.integers(1, 15)), draw(st.integers(1, 20))
    ids = np.full((users, k), -1, dtype=np.int32)
    relevant_sets, train_sets = [], []
    for u in range(users):
        relevant = set(rng.choice(n_items, size=draw(st.integers(0, n_items)), replace=False).tolist())
        train = set(rng.choice(n_items, size=draw(st.integers(0, n_items)), replace=False).tolist()) - relevant
        # Lists come from recommend with the training items excluded.
        candidates = rng.permutation([i for i in range(n_items) if i not in train])
        length = draw(st.integers(0, min(k, len(candidates))))
        ids[u, :length] = candidates[:length]
        relevant_sets.append(relevant)
        train_sets.append(train)
    return ids, relevant_sets, train_sets, n_items


def as_matrix(sets, n_items):
    rows = [u for u, s in enumerate(sets) for _ in s]
    cols = [i for s in sets for i in sorted(s)]
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(sets), n_items))


@given(problem=problems(), threads=st.sampled_from([1, 2]))
def test_metrics_match_the_definitions(problem, threads):
    ids, relevant_sets, train_sets, n_items = problem
    got = evaluation.ranking_metrics_at_k(
        ids, as_matrix(relevant_sets, n_items), train=as_matrix(train_sets, n_items), num_threads=threads
    )
    expected = reference(ids, relevant_sets, n_items, train_sets)
    assert got["users"] == expected["users"]
    for name in ("precision", "recall", "recall_capped", "ndcg", "map", "hit_rate", "auc", "coverage"):
        assert got[name] == pytest.approx(expected[name], abs=1e-12), name


def test_ranking_metrics_of_a_model_exclude_training_items():
    data = recore.datasets.synthetic(400, 200, 8000, random_state=0)
    train, test = evaluation.random_split(data, 0.2, random_state=0)
    model = recore.ALS(factors=16, iterations=5, random_state=0).fit(train)
    metrics = evaluation.ranking_metrics(model, train, test, k=10)
    ids, _ = model.recommend_all(train, k=10)
    assert metrics == evaluation.ranking_metrics_at_k(ids, test, train=train)
    assert 0 < metrics["precision"] <= 1 and 0.5 < metrics["auc"] <= 1


def test_rating_metrics():
    ratings = recore.datasets.synthetic_ratings(300, 100, 5000, random_state=1)
    train, test = evaluation.random_split(ratings, 0.1, random_state=2)
    model = recore.SGD(factors=8, iterations=5, random_state=0).fit(train)
    metrics = evaluation.rating_metrics(model, test)
    coo = test.tocoo()
    errors = model.predict(coo.row, coo.col) - coo.data
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean(errors.astype(np.float64) ** 2)))
    assert metrics["mae"] == pytest.approx(np.mean(np.abs(errors.astype(np.float64))))


@given(seed=st.integers(0, 2**32 - 1), fraction=st.floats(0.05, 0.95))
def test_random_split_partitions_and_is_reproducible(seed, fraction):
    data = recore.datasets.synthetic(50, 30, 400, random_state=seed % 1000)
    train, test = evaluation.random_split(data, fraction, random_state=seed)
    assert (train + test != data).nnz == 0 and train.multiply(test).nnz == 0
    again = evaluation.random_split(data, fraction, random_state=seed)
    assert (again[0] != train).nnz == 0


@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 3))
def test_leave_k_out(seed, k):
    data = recore.datasets.synthetic(40, 30, 300, random_state=seed % 1000)
    train, test = evaluation.leave_k_out(data, k, random_state=seed)
    counts = np.diff(data.indptr)
    np.testing.assert_array_equal(np.diff(test.indptr), np.where(counts > k, k, 0))
    assert (train + test != data).nnz == 0 and train.multiply(test).nnz == 0


def test_time_split_holds_out_the_latest():
    data = recore.datasets.synthetic(30, 20, 200, random_state=0)
    times = np.random.default_rng(0).permutation(data.nnz)
    train, test = evaluation.time_split(data, times, 0.25)
    assert test.nnz == data.nnz - round(data.nnz * 0.75)
    cutoff = np.sort(times)[round(data.nnz * 0.75)]
    coo = data.tocoo()
    held = {(r, c) for r, c, t in zip(coo.row, coo.col, times) if t >= cutoff}
    assert held == set(zip(*test.nonzero()))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: evaluation.ranking_metrics_at_k(np.zeros((2, 0), np.int32), sp.csr_matrix((2, 3))),
            ValueError,
            "k >= 1",
        ),
        (lambda: evaluation.ranking_metrics_at_k(np.array([[5]]), sp.csr_matrix((1, 3))), IndexError, "ids"),
        (lambda: evaluation.ranking_metrics_at_k(np.zeros((2, 2)), sp.csr_matrix((2, 3))), TypeError, "ids"),
        (lambda: evaluation.ranking_metrics_at_k(np.zeros((2, 2), int), sp.csr_matrix((3, 3))), ValueError, "test"),
        (lambda: evaluation.ranking_metrics_at_k(np.zeros((2, 2), int), np.zeros((2, 3))), TypeError, "test"),
        (lambda: evaluation.random_split(sp.csr_matrix((2, 2)), 1.5), ValueError, "test_fraction"),
        (lambda: evaluation.leave_k_out(sp.csr_matrix((2, 2)), 0), ValueError, "k"),
        (lambda: evaluation.time_split(sp.csr_matrix(np.eye(2)), [1], 0.5), ValueError, "timestamps"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_ranking_metrics_of_no_users_with_any_list_width():
    """No users: nothing to rank, whatever width (k) the empty lists have, with no memory
    sized by that width."""
    test = sp.csr_matrix((0, 5), dtype=np.float32)
    wide = evaluation.ranking_metrics_at_k(np.empty((0, 2**40), np.int32), test)
    assert wide == evaluation.ranking_metrics_at_k(np.empty((0, 3), np.int32), test)
