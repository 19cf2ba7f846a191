"""The estimator's contract: parameters, input formats, outputs, callbacks."""

import time

import numpy as np
import pytest
import recore
import scipy.sparse as sp
from recore._validation import as_user_items


def interactions():
    return recore.datasets.synthetic(60, 40, 500, random_state=3)


def test_get_params_and_set_params_round_trip():
    model = recore.ALS(factors=8, solver="cholesky", random_state=1)
    params = model.get_params()
    assert params["factors"] == 8 and params["solver"] == "cholesky"
    clone = recore.ALS(**params)
    assert clone.get_params() == params
    assert model.set_params(factors=4, cg_steps=5) is model
    assert model.factors == 4 and model.cg_steps == 5
    assert "ALS(factors=4" in repr(model)


def test_fit_returns_self_with_contiguous_factors():
    matrix = interactions()
    for dtype in (np.float32, np.float64):
        model = recore.ALS(factors=5, iterations=2, dtype=dtype, random_state=0)
        assert model.fit(matrix) is model
        for factors, rows in ((model.user_factors_, 60), (model.item_factors_, 40)):
            assert factors.shape == (rows, 5)
            assert factors.dtype == dtype
            assert factors.flags.c_contiguous


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "lil", "dok"])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("value_dtype", [np.float32, np.float64, np.int64])
def test_every_input_format_gives_the_same_model(fmt, index_dtype, value_dtype):
    reference = interactions()
    matrix = reference.astype(value_dtype).asformat(fmt)
    if fmt in ("csr", "csc"):
        matrix.indices = matrix.indices.astype(index_dtype)
        matrix.indptr = matrix.indptr.astype(index_dtype)
    expected = recore.ALS(factors=4, iterations=2, random_state=0).fit(reference)
    model = recore.ALS(factors=4, iterations=2, random_state=0).fit(matrix)
    np.testing.assert_array_equal(model.user_factors_, expected.user_factors_)
    np.testing.assert_array_equal(model.item_factors_, expected.item_factors_)


def test_dense_arrays_and_sparse_arrays_are_accepted():
    reference = interactions()
    expected = recore.ALS(factors=4, iterations=2, random_state=0).fit(reference)
    for matrix in (reference.toarray(), sp.csr_array(reference)):
        model = recore.ALS(factors=4, iterations=2, random_state=0).fit(matrix)
        np.testing.assert_array_equal(model.user_factors_, expected.user_factors_)


def test_canonical_float32_csr_is_used_without_a_copy():
    matrix = interactions()
    assert as_user_items(matrix, np.float32) is matrix


def test_duplicates_are_summed_and_the_input_is_never_modified():
    rows, cols = np.array([0, 0, 1, 0]), np.array([1, 1, 2, 0])
    data = np.array([1.0, 2.0, 4.0, 1.0], dtype=np.float32)
    duplicated = sp.csr_matrix((data, (rows, cols)), shape=(2, 3))
    duplicated.has_canonical_format = False
    raw = sp.csr_matrix((2, 3), dtype=np.float32)
    raw.data = np.array([2.0, 1.0, 2.0, 4.0], dtype=np.float32)
    raw.indices = np.array([1, 0, 1, 2], dtype=np.int32)
    raw.indptr = np.array([0, 3, 4], dtype=np.int32)
    snapshot = (raw.data.copy(), raw.indices.copy(), raw.indptr.copy())
    converted = as_user_items(raw, np.float32)
    np.testing.assert_array_equal(converted.toarray(), [[1.0, 4.0, 0.0], [0.0, 0.0, 4.0]])
    assert converted.has_canonical_format
    for before, after in zip(snapshot, (raw.data, raw.indices, raw.indptr)):
        np.testing.assert_array_equal(before, after)
    recore.ALS(factors=2, iterations=1).fit(raw)
    np.testing.assert_array_equal(snapshot[0], raw.data)


def test_callback_receives_iteration_and_metrics():
    calls = []
    model = recore.ALS(factors=3, iterations=4, calculate_training_loss=True, random_state=0)
    model.fit(interactions(), callback=lambda *args: calls.append(args))
    assert [c[0] for c in calls] == [0, 1, 2, 3]
    assert all(c[1]["seconds"] >= 0 for c in calls)
    assert [c[1]["loss"] for c in calls] == model.history_["loss"]
    assert model.history_["loss"][-1] == pytest.approx(model.loss(interactions()))
    calls.clear()
    recore.ALS(factors=3, iterations=2).fit(interactions(), callback=lambda *args: calls.append(args))
    assert [sorted(c[1]) for c in calls] == [["seconds"], ["seconds"]]


def test_progress_bar_runs(capsys):
    recore.ALS(factors=3, iterations=2, calculate_training_loss=True).fit(interactions(), progress=True)
    assert "ALS" in capsys.readouterr().err


def test_zero_iterations_keep_the_initial_factors():
    model = recore.ALS(factors=3, iterations=0, random_state=5).fit(interactions())
    assert model.user_factors_.max() < 0.01 and model.user_factors_.min() >= 0


def test_empty_rows_get_zero_factors():
    matrix = sp.csr_matrix(np.array([[0, 0, 0], [1, 0, 2], [0, 0, 0]], dtype=np.float32))
    for solver in ("cg", "cholesky"):
        model = recore.ALS(factors=2, iterations=2, solver=solver, random_state=0).fit(matrix)
        assert not model.user_factors_[[0, 2]].any()
        assert not model.item_factors_[1].any()


def test_same_seed_same_model_and_generator_accepted():
    a = recore.ALS(factors=3, iterations=2, random_state=11).fit(interactions())
    b = recore.ALS(factors=3, iterations=2, random_state=np.random.default_rng(11)).fit(interactions())
    np.testing.assert_array_equal(a.user_factors_, b.user_factors_)


def test_predict_broadcasts_and_matches_dot_products():
    model = recore.ALS(factors=3, iterations=2, random_state=0).fit(interactions())
    expected = model.user_factors_[4] @ model.item_factors_[[1, 2, 3]].T
    np.testing.assert_allclose(model.predict(4, [1, 2, 3]), expected, rtol=1e-6)
    assert model.predict(0, 0).shape == ()


def test_synthetic_data_is_reproducible_and_power_law():
    a = recore.datasets.synthetic(2000, 500, 40_000, random_state=9)
    b = recore.datasets.synthetic(2000, 500, 40_000, random_state=9)
    assert (a != b).nnz == 0
    assert a.has_canonical_format and a.dtype == np.float32
    assert abs(a.nnz - 40_000) < 400
    popularity = np.sort(np.asarray((a > 0).sum(axis=0)).ravel())[::-1]
    assert popularity[:50].sum() > 5 * popularity[-50:].sum()  # a long tail
    with pytest.raises(ValueError, match="nnz"):
        recore.datasets.synthetic(3, 3, 10)


def test_cpu_target_selection():
    targets = recore.available_cpu_targets()
    assert "baseline" in targets and recore.cpu_target() in targets
    with pytest.raises(ValueError, match="unknown CPU target"):
        recore.set_cpu_target("sse9")


def test_kernels_release_the_gil():
    # While a kernel runs in another thread, this thread keeps running: the longest pause it
    # sees is far shorter than the kernel call (holding the GIL would stall it throughout).
    import threading

    from recore import kernels

    user_items = recore.datasets.synthetic(40_000, 4_000, 800_000, random_state=2)
    item_factors = np.random.default_rng(0).random((4_000, 64), dtype=np.float32)
    user_factors = np.zeros((40_000, 64), dtype=np.float32)
    gram = kernels.gram_matrix(item_factors)
    elapsed = []

    def solve():
        start = time.perf_counter()
        kernels.als_half_step(
            user_items, item_factors, gram, user_factors, regularization=0.1, solver="cholesky", num_threads=1
        )
        elapsed.append(time.perf_counter() - start)

    worker = threading.Thread(target=solve)
    longest_pause, last = 0.0, time.perf_counter()
    worker.start()
    while worker.is_alive():
        now = time.perf_counter()
        longest_pause, last = max(longest_pause, now - last), now
    worker.join()
    assert elapsed[0] > 0.1
    assert longest_pause < elapsed[0] / 3


def test_blas_is_limited_to_one_thread_while_fitting():
    """A multithreaded BLAS would compete with the engine's threads: fit limits it to one
    thread and restores it after."""
    from threadpoolctl import threadpool_info

    def blas_threads():
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    before = blas_threads()
    seen = []
    data = recore.datasets.synthetic(50, 20, 300, random_state=0)
    recore.ALS(factors=2, iterations=2).fit(data, callback=lambda *args: seen.append(blas_threads()))
    assert seen and all(all(n == 1 for n in threads) for threads in seen)
    assert blas_threads() == before


def test_wide_indices_path_gives_the_same_model(monkeypatch):
    """Matrices with more than 2**31 - 1 entries or ids get int64 indices end to end; the same
    path, forced here on a small matrix by lowering the threshold."""
    from recore import _validation

    data = recore.datasets.synthetic(60, 30, 500, random_state=1)
    narrow = recore.ALS(factors=4, iterations=2, random_state=0).fit(data)
    monkeypatch.setattr(_validation, "_INT32_MAX", 10)
    converted = _validation.as_user_items(data, np.float32)
    assert converted.indices.dtype == np.int64 and converted.indptr.dtype == np.int64
    transposed = _validation.transpose_csr(converted)
    assert transposed.indices.dtype == np.int64 and transposed.indptr.dtype == np.int64
    wide = recore.ALS(factors=4, iterations=2, random_state=0).fit(data)
    np.testing.assert_array_equal(wide.user_factors_, narrow.user_factors_)
    np.testing.assert_array_equal(wide.item_factors_, narrow.item_factors_)
    np.testing.assert_array_equal(wide.recommend_all(data, k=5)[0], narrow.recommend_all(data, k=5)[0])
