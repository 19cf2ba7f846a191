"""recore.SGD against the plain-Python reference in sgd_reference.py, on planted data, and
its bad-input contract."""

from __future__ import annotations

import numpy as np
import pytest
import recore
import scipy.sparse as sp
import sgd_reference
from conftest import using_cpu_target
from hypothesis import given
from hypothesis import strategies as st
from recore import kernels


def planted_ratings(seed, users=120, items=80, rank=3, density=0.35, noise=0.1):
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(users, rank)) @ rng.normal(size=(rank, items)) / np.sqrt(rank) + 3.0
    mask = rng.random((users, items)) < density
    noisy = truth + rng.normal(scale=noise, size=truth.shape)
    rows, cols = np.nonzero(mask)
    matrix = sp.csr_matrix((noisy[rows, cols].astype(np.float32), (rows, cols)), shape=(users, items))
    return matrix, truth


def padded(matrix):
    """Factors as the kernels take them: float32, padded with zeros to a multiple of 16 columns."""
    width = -(-matrix.shape[1] // 16) * 16
    out = np.zeros((matrix.shape[0], width), np.float32)
    out[:, : matrix.shape[1]] = matrix
    return out


@pytest.mark.parametrize("target", recore.available_cpu_targets())
@given(
    seed=st.integers(0, 2**32 - 1),
    biases=st.booleans(),
    schedule=st.sampled_from(["adaptive", "constant"]),
    factors=st.integers(1, 70),
)
def test_two_epochs_match_the_reference_in_the_same_order(target, seed, biases, schedule, factors):
    """One thread, one block: recore visits the ratings in CSR order (user, then item), cut
    into runs visited round-robin; two epochs cover the first epoch of the two-speed
    schedule and a normal one. Every SIMD copy of the kernel this CPU runs is checked."""
    ratings, _ = planted_ratings(seed, users=12, items=9, density=0.5)
    options = dict(
        factors=factors, biases=biases, schedule=schedule, learning_rate=0.05, regularization=0.07,
        bias_regularization=0.03, init_scale=0.3, num_threads=1, blocks=1, random_state=seed,
    )  # fmt: skip
    start = recore.SGD(iterations=0, **options).fit(ratings)
    with using_cpu_target(target):
        model = recore.SGD(iterations=2, **options).fit(ratings)
    p, q = start.user_factors_.astype(np.float64), start.item_factors_.astype(np.float64)
    bu, bi = np.zeros(12), np.zeros(9)
    adaptive = schedule == "adaptive"
    slow = 8 if adaptive and factors > 16 else 0  # the two-speed schedule: 8 slow dimensions
    gu, gi = (np.ones((12, 2)), np.ones((9, 2))) if slow else (np.ones(12), np.ones(9))
    mu = float(np.mean(ratings.data, dtype=np.float64)) if biases else 0.0
    coo = ratings.tocoo()
    visit = sgd_reference.round_robin_runs(coo.nnz, runs=4)
    for epoch in range(2):
        sgd_reference.squared_epoch(
            coo.row[visit], coo.col[visit], coo.data[visit].astype(np.float64), p, q, bu, bi, mu, gu, gi,
            eta=0.05, lam=0.07, lam_b=0.03, biases=biases, adaptive=adaptive, slow=slow, slow_only=epoch == 0,
        )  # fmt: skip
    np.testing.assert_allclose(model.user_factors_, p, rtol=0, atol=1e-5)
    np.testing.assert_allclose(model.item_factors_, q, rtol=0, atol=1e-5)
    np.testing.assert_allclose(model.user_biases_, bu if biases else 0, rtol=0, atol=1e-5)
    np.testing.assert_allclose(model.item_biases_, bi if biases else 0, rtol=0, atol=1e-5)
    assert model.global_bias_ == pytest.approx(mu)


@pytest.mark.parametrize("target", recore.available_cpu_targets())
@pytest.mark.parametrize("factors", [17, 24, 40, 64, 128, 136])
def test_two_speed_schedule_splits_off_the_first_8_dimensions(target, factors):
    """Above 16 factors the first 8 dimensions learn alone in the first epoch and keep their
    own rate sums (LIBMF's split in its AVX build; 16 measured worse), whatever the vector
    width: inside one 16-lane vector, across whole vectors, in registers or from memory."""
    assert recore.kernels.SGD_SLOW_FACTORS == 8
    ratings, _ = planted_ratings(factors, users=12, items=9, density=0.5)
    options = dict(
        factors=factors, biases=False, learning_rate=0.05, regularization=0.07, init_scale=1.0, num_threads=1,
        blocks=1, random_state=factors,
    )  # fmt: skip
    start = recore.SGD(iterations=0, **options).fit(ratings)
    with using_cpu_target(target):
        first = recore.SGD(iterations=1, **options).fit(ratings)
        model = recore.SGD(iterations=2, **options).fit(ratings)
    # The first epoch moves the slow dimensions only, and adds to their sums only.
    np.testing.assert_array_equal(first.user_factors_[:, 8:], start.user_factors_[:, 8:])
    np.testing.assert_array_equal(first.item_factors_[:, 8:], start.item_factors_[:, 8:])
    assert (first.user_factors_[:, :8] != start.user_factors_[:, :8]).any()
    np.testing.assert_array_equal(first._user_rate_sums[:, 1], 1.0)
    p, q = start.user_factors_.astype(np.float64), start.item_factors_.astype(np.float64)
    gu, gi = np.ones((12, 2)), np.ones((9, 2))
    coo = ratings.tocoo()
    visit = sgd_reference.round_robin_runs(coo.nnz, runs=4)
    for epoch in range(2):
        sgd_reference.squared_epoch(
            coo.row[visit], coo.col[visit], coo.data[visit].astype(np.float64), p, q, None, None, 0.0, gu, gi,
            eta=0.05, lam=0.07, lam_b=0.0, biases=False, adaptive=True, slow=8, slow_only=epoch == 0,
        )  # fmt: skip
    np.testing.assert_allclose(model.user_factors_, p, rtol=0, atol=1e-5)
    np.testing.assert_allclose(model.item_factors_, q, rtol=0, atol=1e-5)
    np.testing.assert_allclose(model._user_rate_sums, gu, rtol=1e-5)
    np.testing.assert_allclose(model._item_rate_sums, gi, rtol=1e-5)


@pytest.mark.parametrize("target", recore.available_cpu_targets())
@pytest.mark.parametrize("slow", [1, 5, 13, 16, 20])
def test_engine_splits_the_rates_anywhere_below_factors(target, slow):
    """The engine takes any split of the two-speed schedule (recore.SGD asks for 8): the
    first epoch leaves the fast dimensions and their sums untouched, the next moves both."""
    rng = np.random.default_rng(slow)
    users, items, factors, count = 10, 7, 37, 40
    user_ids, item_ids = rng.integers(0, users, count), rng.integers(0, items, count)
    values = rng.uniform(1, 5, count)
    p0, q0 = rng.normal(0, 0.3, (users, factors)), rng.normal(0, 0.3, (items, factors))
    p, q = padded(p0), padded(q0)
    user_sums, item_sums = np.ones(users * 2, np.float32), np.ones(items * 2, np.float32)
    expected_p, expected_q, gu, gi = p0.copy(), q0.copy(), np.ones((users, 2)), np.ones((items, 2))
    with using_cpu_target(target):
        for epoch in range(2):
            kernels.sgd_squared_epoch(
                user_ids.astype(np.int32), item_ids.astype(np.int32), values.astype(np.float32),
                np.array([0, count], np.int64), np.zeros(1, np.int32), 1, p, q, factors,
                user_rate_sums=user_sums, item_rate_sums=item_sums, learning_rate=0.1, regularization=0.05,
                num_threads=1, slow_factors=slow, slow_only=epoch == 0,
            )  # fmt: skip
            sgd_reference.squared_epoch(
                user_ids, item_ids, values.astype(np.float32).astype(np.float64), expected_p, expected_q, None,
                None, 0.0, gu, gi, eta=0.1, lam=0.05, lam_b=0.0, biases=False, adaptive=True, slow=slow,
                slow_only=epoch == 0,
            )  # fmt: skip
            if epoch == 0:
                np.testing.assert_array_equal(p[:, slow:factors], p0[:, slow:].astype(np.float32))
                np.testing.assert_array_equal(user_sums.reshape(users, 2)[:, 1], 1.0)
            np.testing.assert_allclose(p[:, :factors], expected_p, rtol=0, atol=1e-5)
            np.testing.assert_allclose(q[:, :factors], expected_q, rtol=0, atol=1e-5)
            np.testing.assert_allclose(user_sums.reshape(users, 2), gu, rtol=1e-5)
            np.testing.assert_allclose(item_sums.reshape(items, 2), gi, rtol=1e-5)
    assert not p[:, factors:].any()  # the padding stays zero
    with pytest.raises(ValueError, match="slow_factors"):
        kernels.sgd_squared_epoch(
            user_ids.astype(np.int32), item_ids.astype(np.int32), values.astype(np.float32),
            np.array([0, count], np.int64), np.zeros(1, np.int32), 1, p, q, factors, user_rate_sums=user_sums,
            item_rate_sums=item_sums, learning_rate=0.1, regularization=0.05, slow_factors=factors,
        )  # fmt: skip


@pytest.mark.parametrize("factors", [4, 64, 256])
def test_init_scale_is_the_rows_length_whatever_the_factors(factors):
    """Initial factors are normal with standard deviation init_scale / sqrt(factors) (LIBMF
    scales by sqrt(1 / factors) too), so rows start about init_scale long at any width; the
    default, 0.08, is the 0.01 per dimension of earlier releases at 64 factors."""
    ratings = sp.random(3000, 50, density=0.05, format="csr", dtype=np.float32, random_state=factors)
    for init_scale in (0.08, 0.5):
        model = recore.SGD(factors=factors, iterations=0, init_scale=init_scale, random_state=1).fit(ratings)
        factors_drawn = np.concatenate([model.user_factors_, model.item_factors_])
        assert np.std(factors_drawn) == pytest.approx(init_scale / np.sqrt(factors), rel=0.05)
        assert np.mean(np.linalg.norm(factors_drawn, axis=1) ** 2) == pytest.approx(init_scale**2, rel=0.05)
    assert recore.SGD().init_scale == 0.08
    default = recore.SGD(factors=64, iterations=0, random_state=1).fit(ratings)
    assert np.std(default.user_factors_) == pytest.approx(0.01, rel=0.05)


@given(lengths=st.lists(st.integers(0, 40), min_size=1, max_size=12), runs=st.integers(1, 6))
def test_grid_visits_each_block_as_round_robin_runs(lengths, runs):
    from recore._sgd_plan import interleaved_runs as _interleaved_runs

    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    expected = np.concatenate(
        [start + sgd_reference.round_robin_runs(length, runs) for start, length in zip(starts, lengths)]
    )
    np.testing.assert_array_equal(_interleaved_runs(starts, runs), expected.astype(np.int64))


@given(
    seed=st.integers(0, 2**32 - 1),
    shape=st.tuples(st.integers(1, 30), st.integers(1, 30)),
    density=st.floats(0, 1),
    blocks=st.integers(1, 8),
    users_in_order=st.booleans(),
)
def test_grid_sorts_ratings_by_block_then_user_then_item(seed, shape, density, blocks, users_in_order):
    from recore._sgd_plan import ratings_by_block as _ratings_by_block

    rng = np.random.default_rng(seed)
    matrix = sp.random(*shape, density=density, format="csr", random_state=rng, dtype=np.float32)
    matrix.sum_duplicates()
    user_rank = (np.arange(shape[0]) if users_in_order else rng.permutation(shape[0])).astype(np.int32)
    item_rank = rng.permutation(shape[1]).astype(np.int32)
    given = matrix.copy()
    got = _ratings_by_block(matrix, user_rank, item_rank, blocks)
    for name in ("data", "indices", "indptr"):  # the caller's matrix is left as it was
        np.testing.assert_array_equal(getattr(matrix, name), getattr(given, name))
    for actual, expected in zip(got, sgd_reference.ratings_by_block(matrix, user_rank, item_rank, blocks)):
        np.testing.assert_array_equal(actual, expected)


@given(
    seed=st.integers(0, 2**32 - 1),
    biases=st.booleans(),
    adaptive=st.booleans(),
    factors=st.integers(1, 20),
)
def test_bpr_triples_match_the_reference(seed, biases, adaptive, factors):
    rng = np.random.default_rng(seed)
    users, items, count = 6, 9, 40
    p0, q0 = rng.normal(scale=0.3, size=(users, factors)), rng.normal(scale=0.3, size=(items, factors))
    u = rng.integers(0, users, count).astype(np.int32)
    i = rng.integers(0, items, count).astype(np.int32)
    j = ((i + rng.integers(1, items, count)) % items).astype(np.int32)  # never i
    p, q = padded(p0), padded(q0)
    b = np.zeros(items, np.float32)
    gu, gi = np.ones(users, np.float32), np.ones(items, np.float32)
    correct = kernels.sgd_bpr_triples(
        u, i, j, p, q, factors, item_biases=b if biases else None, user_rate_sums=gu if adaptive else None,
        item_rate_sums=gi if adaptive else None, learning_rate=0.1, regularization=0.02, bias_regularization=0.01,
    )  # fmt: skip
    rp, rq, rb = p0.copy(), q0.copy(), np.zeros(items)
    rgu, rgi = np.ones(users), np.ones(items)
    expected = sgd_reference.bpr_triples(
        u, i, j, rp, rq, rb, rgu, rgi, eta=0.1, lam=0.02, lam_b=0.01, biases=biases, adaptive=adaptive
    )
    assert correct == expected
    np.testing.assert_allclose(p[:, :factors], rp, rtol=0, atol=1e-5)
    np.testing.assert_allclose(q[:, :factors], rq, rtol=0, atol=1e-5)
    assert not p[:, factors:].any() and not q[:, factors:].any()  # padding stays zero
    if biases:
        np.testing.assert_allclose(b, rb, rtol=0, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
def test_planted_ratings_rmse_falls_every_epoch_to_the_noise(threads):
    ratings, truth = planted_ratings(0, users=400, items=300, rank=3, density=0.3, noise=0.1)
    rng = np.random.default_rng(1)
    mask = rng.random(ratings.nnz) < 0.1
    coo = ratings.tocoo()
    train = sp.csr_matrix((coo.data[~mask], (coo.row[~mask], coo.col[~mask])), shape=ratings.shape)
    test = sp.csr_matrix((coo.data[mask], (coo.row[mask], coo.col[mask])), shape=ratings.shape)
    model = recore.SGD(
        factors=8, iterations=60, learning_rate=0.05, regularization=0.01, init_scale=0.1, num_threads=threads,
        random_state=0,
    ).fit(train, validation=test)  # fmt: skip
    train_rmse = model.history_["train_rmse"]
    # The blocks are visited in a new random order every epoch, so near convergence an epoch
    # can come out higher by a few 1e-5; before that it falls every epoch.
    assert all(b < a + 1e-4 for a, b in zip(train_rmse, train_rmse[1:])), train_rmse
    assert all(b < a for a, b in zip(train_rmse[:20], train_rmse[1:20])), train_rmse
    assert train_rmse[-1] < 0.15 < 0.9 < train_rmse[0]
    assert model.history_["validation_rmse"][-1] < 0.2  # noise 0.1
    # Training keeps its rows in the grid's shuffled order; the fitted factors are back in id
    # order, so predictions reproduce the last epoch's validation RMSE.
    held = test.tocoo()
    served = np.sqrt(np.mean((model.predict(held.row, held.col) - held.data) ** 2))
    assert served == pytest.approx(model.history_["validation_rmse"][-1], rel=1e-5)
    assert recore.kernels is kernels


def test_one_thread_is_bitwise_reproducible_and_early_stopping_keeps_the_best():
    ratings, _ = planted_ratings(3)
    first = recore.SGD(factors=5, iterations=5, num_threads=1, random_state=7).fit(ratings)
    again = recore.SGD(factors=5, iterations=5, num_threads=1, random_state=7).fit(ratings)
    np.testing.assert_array_equal(first.user_factors_, again.user_factors_)
    np.testing.assert_array_equal(first.item_biases_, again.item_biases_)
    test, _ = planted_ratings(4)
    stopped = recore.SGD(
        factors=5, iterations=200, num_threads=1, random_state=7, learning_rate=0.3, regularization=0.0, early_stopping=2
    ).fit(ratings, validation=test)
    history = stopped.history_["validation_rmse"]
    assert len(history) < 200
    assert recore.kernels.sgd_rmse is not None


def held_out_auc(model, train, test):
    """Fraction of (held-out positive, random non-positive) pairs scored in the right order."""
    rng = np.random.default_rng(0)
    scores = model.user_factors_ @ model.item_factors_.T + model.item_biases_
    seen = (train + test).toarray() > 0
    right = total = 0
    for u, i in zip(*test.nonzero()):
        negatives = np.flatnonzero(~seen[u])
        j = rng.choice(negatives, size=min(20, len(negatives)), replace=False)
        right += np.sum(scores[u, i] > scores[u, j])
        total += len(j)
    return right / total


@pytest.mark.parametrize("negatives", ["uniform", "popularity"])
def test_bpr_ranks_held_out_items_well(negatives):
    rng = np.random.default_rng(0)
    users, items, rank = 300, 200, 4
    affinity = rng.normal(size=(users, rank)) @ rng.normal(size=(rank, items))
    positive = affinity > np.quantile(affinity, 0.9, axis=1, keepdims=True)  # each user's top 10%
    rows, cols = np.nonzero(positive)
    hold = rng.random(len(rows)) < 0.2
    train = sp.csr_matrix((np.ones((~hold).sum(), np.float32), (rows[~hold], cols[~hold])), shape=(users, items))
    test = sp.csr_matrix((np.ones(hold.sum(), np.float32), (rows[hold], cols[hold])), shape=(users, items))
    model = recore.SGD(
        loss="bpr", factors=16, iterations=40, learning_rate=0.05, regularization=0.005, negatives=negatives,
        init_scale=0.1, num_threads=1, random_state=0,
    ).fit(train)  # fmt: skip
    assert model.history_["train_auc"][-1] > 0.9
    assert held_out_auc(model, train, test) > 0.9


def test_serving_scores_are_predictions_and_files_round_trip(tmp_path):
    ratings, _ = planted_ratings(5)
    model = recore.SGD(factors=6, iterations=3, random_state=0).fit(ratings)
    ids, scores = model.recommend(4, k=5, exclude_seen=False)
    np.testing.assert_allclose(scores, model.predict(4, ids), rtol=1e-5, atol=1e-5)
    folded = model.fold_in(ratings[[4]])
    assert folded.shape == (1, 6)
    model.save(tmp_path / "sgd.npz")
    loaded = recore.load(tmp_path / "sgd.npz")
    np.testing.assert_array_equal(loaded.predict([1, 2], [3, 4]), model.predict([1, 2], [3, 4]))
    np.testing.assert_array_equal(loaded.recommend(4, k=5, exclude_seen=False)[0], ids)


@pytest.mark.parametrize(
    "params, error, match",
    [
        (dict(learning_rate=0.0), ValueError, "learning_rate"),
        (dict(learning_rate=-1.0), ValueError, "learning_rate"),
        (dict(iterations=-1), ValueError, "iterations"),
        (dict(loss="hinge"), ValueError, "loss"),
        (dict(schedule="cosine"), ValueError, "schedule"),
        (dict(negatives="hard"), ValueError, "negatives"),
        (dict(factors=0), ValueError, "factors"),
        (dict(regularization=-0.1), ValueError, "regularization"),
        (dict(factors=2.5), TypeError, "factors"),
    ],
)
def test_bad_hyperparameters(params, error, match):
    with pytest.raises(error, match=match):
        recore.SGD(**params)


def test_bad_data():
    ratings, _ = planted_ratings(6)
    model = recore.SGD(factors=2, iterations=1)
    with pytest.raises(ValueError, match="validation"):
        model.fit(ratings, validation=sp.csr_matrix((ratings.shape[0] + 1, ratings.shape[1])))
    with pytest.raises(TypeError, match="validation"):
        model.fit(ratings, validation=np.zeros(ratings.shape))
    with pytest.raises(ValueError, match="user_items"):
        model.fit(sp.csr_matrix(np.array([[np.nan, 1.0]])))
    with pytest.raises(ValueError, match="negative"):
        recore.SGD(loss="bpr").fit(sp.csr_matrix(np.array([[-1.0, 1.0]])))
    with pytest.raises(IndexError, match="users"):
        model.fit(ratings).predict([ratings.shape[0]], [0])
