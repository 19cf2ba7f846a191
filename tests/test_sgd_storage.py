"""recore.SGD(storage="float16"): factor rows kept in half precision while training, against
float32 training and a reference that rounds each updated row to float16, and the contract of
the storage argument."""

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
from test_sgd import padded, planted_ratings

# Predictions of float16 training stay within this of float32 training on the same schedule
# (one thread, the same grid and start), on planted ratings between about 0 and 6 after
# STORAGE_EPOCHS epochs. Each stored value is off by at most half a float16 step (2^-11 of
# its size); the largest gap measured over 2,100 such fits was 0.027, so 0.06 leaves room for
# examples not yet drawn while still failing on any systematic error (a wrong rounding mode
# or a misread row moves predictions by 0.1 or more).
PREDICTION_BOUND = 0.06
STORAGE_EPOCHS = 4


def as_float16(values):
    return np.asarray(values, np.float64).astype(np.float16).astype(np.float64)


def fit_pair(ratings, **options):
    """The same fit with float32 and with float16 rows."""
    return (
        recore.SGD(storage="float32", **options).fit(ratings),
        recore.SGD(storage="float16", **options).fit(ratings),
    )


@pytest.mark.parametrize("target", recore.available_cpu_targets())
@given(
    seed=st.integers(0, 2**32 - 1),
    biases=st.booleans(),
    schedule=st.sampled_from(["adaptive", "constant"]),
    factors=st.integers(1, 70),
)
def test_float16_rows_match_a_reference_rounding_every_update(target, seed, biases, schedule, factors):
    """One thread, one block, two epochs: the float32 reference of test_sgd with both rows of
    every update rounded to float16 after it. The engine computes in float32 and the reference
    in float64, so a value can round to the neighbouring float16 now and then (a relative
    2^-10); the bound allows a few such steps."""
    ratings, _ = planted_ratings(seed, users=12, items=9, density=0.5)
    options = dict(
        factors=factors, biases=biases, schedule=schedule, learning_rate=0.05, regularization=0.07,
        bias_regularization=0.03, init_scale=0.3, num_threads=1, blocks=1, random_state=seed,
    )  # fmt: skip
    start = recore.SGD(iterations=0, storage="float16", **options).fit(ratings)
    with using_cpu_target(target):
        model = recore.SGD(iterations=2, storage="float16", **options).fit(ratings)
    p, q = start.user_factors_.astype(np.float64), start.item_factors_.astype(np.float64)
    bu, bi = np.zeros(12), np.zeros(9)
    adaptive = schedule == "adaptive"
    slow = 8 if adaptive and factors > 16 else 0
    gu, gi = (np.ones((12, 2)), np.ones((9, 2))) if slow else (np.ones(12), np.ones(9))
    mu = float(np.mean(ratings.data, dtype=np.float64)) if biases else 0.0
    coo = ratings.tocoo()
    visit = sgd_reference.round_robin_runs(coo.nnz, runs=4)
    for epoch in range(2):
        for k in visit:
            u, i = coo.row[k], coo.col[k]
            sgd_reference.squared_epoch(
                [u], [i], [float(coo.data[k])], p, q, bu, bi, mu, gu, gi, eta=0.05, lam=0.07, lam_b=0.03,
                biases=biases, adaptive=adaptive, slow=slow, slow_only=epoch == 0,
            )  # fmt: skip
            p[u], q[i] = as_float16(p[u]), as_float16(q[i])
    np.testing.assert_allclose(model.user_factors_, p, rtol=0, atol=5e-3)
    np.testing.assert_allclose(model.item_factors_, q, rtol=0, atol=5e-3)
    np.testing.assert_allclose(model.user_biases_, bu if biases else 0, rtol=0, atol=5e-3)


@pytest.mark.parametrize("target", recore.available_cpu_targets())
@given(seed=st.integers(0, 2**32 - 1), factors=st.sampled_from([4, 16, 24, 32, 48, 64, 128]), biases=st.booleans())
def test_float16_predictions_stay_within_the_bound_of_float32(target, seed, factors, biases):
    """Same data, start, grid and visiting order (one thread): float16 rows predict every
    training pair within PREDICTION_BOUND of float32 rows, and the fitted factors are float32
    values that float16 holds exactly."""
    ratings, _ = planted_ratings(seed % 1000, users=90, items=70, rank=4, density=0.3)
    options = dict(
        factors=factors, iterations=STORAGE_EPOCHS, biases=biases, learning_rate=0.05, regularization=0.05,
        init_scale=0.1, num_threads=1, blocks=3, random_state=seed,
    )  # fmt: skip
    with using_cpu_target(target):
        single, half = fit_pair(ratings, **options)
    coo = ratings.tocoo()
    gap = np.abs(single.predict(coo.row, coo.col) - half.predict(coo.row, coo.col))
    assert gap.max() <= PREDICTION_BOUND, gap.max()
    for factors_ in (half.user_factors_, half.item_factors_):
        assert factors_.dtype == np.float32 and factors_.flags.c_contiguous
        np.testing.assert_array_equal(factors_.astype(np.float16).astype(np.float32), factors_)
    # It trains: the last epoch fits the ratings about as well as float32 does.
    assert half.history_["train_rmse"][-1] < half.history_["train_rmse"][0]
    assert half.history_["train_rmse"][-1] == pytest.approx(single.history_["train_rmse"][-1], abs=0.02)


def test_float16_models_validate_save_load_and_train_further(tmp_path):
    """Validation RMSE (computed by the engine from float16 rows) equals that of the fitted
    float32 factors; the model file keeps ``storage``; partial fits train the float32 rows
    of the fitted model."""
    ratings, _ = planted_ratings(3, users=80, items=60, density=0.3)
    coo = ratings.tocoo()
    held = np.arange(coo.nnz) % 10 == 0
    train = sp.csr_matrix((coo.data[~held], (coo.row[~held], coo.col[~held])), shape=ratings.shape)
    test = sp.csr_matrix((coo.data[held], (coo.row[held], coo.col[held])), shape=ratings.shape)
    model = recore.SGD(factors=24, iterations=3, storage="float16", num_threads=2, random_state=0)
    model.fit(train, validation=test)
    served = np.sqrt(np.mean((model.predict(coo.row[held], coo.col[held]) - coo.data[held]) ** 2))
    assert served == pytest.approx(model.history_["validation_rmse"][-1], rel=1e-5)
    model.save(tmp_path / "model.npz")
    loaded = recore.load(tmp_path / "model.npz")
    assert loaded.storage == "float16"
    np.testing.assert_array_equal(loaded.user_factors_, model.user_factors_)
    before = loaded.predict([0, 1], [0, 1])
    loaded.partial_fit_users([0, 80], train[[0, 1]], iterations=2)
    assert loaded.user_factors_.shape == (81, 24) and loaded.user_factors_.dtype == np.float32
    assert not np.array_equal(loaded.predict([0], [0]), before[:1])


@pytest.mark.parametrize(
    "options, error, match",
    [
        (dict(storage="float64"), ValueError, "storage"),
        (dict(storage="half"), ValueError, "storage"),
        (dict(storage="bfloat16"), ValueError, "storage"),
        (dict(storage=16), TypeError, "storage"),
        (dict(storage="float16", loss="bpr"), ValueError, "storage"),
        (dict(storage="float16", device="cuda"), ValueError, "storage"),
    ],
)
def test_bad_storage(options, error, match):
    with pytest.raises(error, match=match):
        recore.SGD(**options)
    model = recore.SGD()
    with pytest.raises(error, match=match):
        model.set_params(**options)


def test_engine_takes_float16_rows_for_squared_loss_only():
    rng = np.random.default_rng(0)
    users, items, factors = 5, 4, 3
    p = padded(rng.normal(0, 0.3, (users, factors))).astype(np.float16)
    q = padded(rng.normal(0, 0.3, (items, factors))).astype(np.float16)
    ids = np.array([0, 1, 2], np.int32)
    values = np.ones(3, np.float32)
    one_block = dict(block_starts=np.array([0, 3], np.int64), block_order=np.zeros(1, np.int32), blocks=1)
    with pytest.raises(TypeError, match="same dtype"):
        kernels.sgd_squared_epoch(
            ids, ids, values, *one_block.values(), p, q.astype(np.float32), factors, learning_rate=0.1,
            regularization=0.05,
        )  # fmt: skip
    with pytest.raises(TypeError, match="float32 or float16"):
        kernels.sgd_squared_epoch(
            ids, ids, values, *one_block.values(), p.astype(np.float64), q.astype(np.float64), factors,
            learning_rate=0.1, regularization=0.05,
        )  # fmt: skip
    with pytest.raises(TypeError, match="BPR"):
        kernels.sgd_bpr_triples(ids, ids, ids, p, q, factors, learning_rate=0.1, regularization=0.05)
    before = p.copy()
    error = kernels.sgd_squared_epoch(
        ids, ids, values, *one_block.values(), p, q, factors, learning_rate=0.1, regularization=0.05
    )
    assert error > 0 and not np.array_equal(p, before)
    assert not p[:, factors:].any()  # the padding stays zero
    predicted = (p[ids, :factors].astype(np.float64) * q[ids, :factors]).sum(axis=1)
    expected = np.sqrt(np.mean((values - predicted) ** 2))
    assert kernels.sgd_rmse(ids, ids, values, p, q, factors) == pytest.approx(expected, rel=1e-5)
