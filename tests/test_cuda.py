"""The CUDA engine: host-side logic (device dispatch, GPU buffer checks on objects that
expose __cuda_array_interface__, clear errors when CUDA is unavailable, the build) runs
everywhere; parity with the CPU engine runs only where a GPU is usable and is skipped
elsewhere with the reason."""

from __future__ import annotations

import importlib
import os
import pathlib

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

import recore
from recore.backends import _device

GPU = recore.cuda.is_available()
needs_gpu = pytest.mark.skipif(not GPU, reason=f"needs a usable CUDA GPU: {recore.cuda.unavailable_reason()}")
needs_no_gpu = pytest.mark.skipif(GPU, reason="checks the errors raised where CUDA is unavailable")


class FakeCudaArray:
    """Exposes a __cuda_array_interface__ dict, as cupy / torch / numba arrays do."""

    def __init__(self, shape=(4, 3), typestr="<f4", pointer=0x10000, readonly=False, strides=None, version=3, **extra):
        self.__cuda_array_interface__ = dict(
            shape=shape, typestr=typestr, data=(pointer, readonly), strides=strides, version=version, **extra
        )


class FakeDlpack:
    def __init__(self, device_type):
        self.device_type = device_type

    def __dlpack__(self, stream=None):
        raise AssertionError("not consumed in these tests")

    def __dlpack_device__(self):
        return (self.device_type, 0)


def fake_from_numpy(array: np.ndarray) -> FakeCudaArray:
    interface = array.__array_interface__
    return FakeCudaArray(
        shape=interface["shape"], typestr=interface["typestr"], pointer=interface["data"][0] or 0x10000,
        strides=interface["strides"],
    )  # fmt: skip


# -- the build and availability ----------------------------------------------------------------


def test_build_flag_is_a_bool_and_ci_builds_the_cuda_module():
    assert isinstance(recore.cuda.built, bool)
    if os.environ.get("RECORE_EXPECT_CUDA") == "1":
        assert recore.cuda.built, "RECORE_EXPECT_CUDA=1 but recore._cuda was not built"


@pytest.mark.skipif(not recore.cuda.built, reason="this installation was built without CUDA")
def test_cuda_module_imports_without_a_driver_and_reports_its_status():
    module = importlib.import_module("recore._cuda")  # no missing symbol or library
    from recore import _core

    assert pathlib.Path(module.__file__).parent == pathlib.Path(_core.__file__).parent  # installed with _core
    assert module.runtime_version() >= 12000
    assert isinstance(module.cublas, bool)
    assert module.run_ratings == 32
    status = module.status()
    assert isinstance(status, str) and status
    if status != "ok":
        assert recore.cuda.unavailable_reason().endswith(status)


def test_availability_has_a_reason_exactly_when_unavailable():
    reason = recore.cuda.unavailable_reason()
    assert recore.cuda.is_available() == (reason is None)
    if reason is not None:
        assert isinstance(reason, str) and len(reason) > 10
        assert recore.cuda.device_count() == 0


@needs_no_gpu
def test_require_raises_runtime_error_with_the_reason():
    with pytest.raises(RuntimeError, match="device='cuda' needs the CUDA engine, which is unavailable") as info:
        recore.cuda.require("device")
    assert recore.cuda.unavailable_reason() in str(info.value)


@pytest.mark.skipif(not recore.cuda.built or GPU, reason="needs the CUDA module on a machine without a usable GPU")
def test_engine_calls_without_a_driver_raise_runtime_error_with_cudas_message():
    from recore import _cuda

    assert _cuda.pointer_device(0x12345678) == -1
    with pytest.raises(RuntimeError, match="CUDA error cuda"):
        _cuda.gram_matrix(0, 0, 0x10000, 4, 4, 0x20000)
    with pytest.raises(RuntimeError, match="CUDA error"):
        _cuda.device_count()
    assert issubclass(_cuda.CudaError, RuntimeError)


# -- device dispatch -----------------------------------------------------------------------------


def test_gpu_objects_are_recognised_by_interface():
    assert _device.is_gpu_array(FakeCudaArray())
    assert _device.is_gpu_array(FakeDlpack(2)) and _device.is_gpu_array(FakeDlpack(13))
    assert not _device.is_gpu_array(FakeDlpack(1))  # DLPack on the CPU
    assert not _device.is_gpu_array(np.zeros((2, 2), np.float32))
    assert not _device.on_gpu(sp.csr_matrix((2, 2)))
    assert not _device.on_gpu(None)

    class csr_matrix:  # noqa: N801 - named as cupyx's
        format = "csr"

    csr_matrix.__module__ = "cupyx.scipy.sparse._csr"
    assert _device.is_gpu_sparse(csr_matrix()) and _device.on_gpu(csr_matrix())


def test_resolve_device_follows_the_data_and_refuses_hidden_copies():
    host = sp.random(5, 4, density=0.5, format="csr", dtype=np.float32, random_state=0)
    assert _device.resolve_device("auto", host) == "cpu"
    assert _device.resolve_device("cpu", host, None) == "cpu"
    with pytest.raises(ValueError, match="device='cpu' but user_items lives on a GPU"):
        _device.resolve_device("cpu", FakeCudaArray(), names=("user_items",))
    with pytest.raises(ValueError, match="device must be one of"):
        _device.resolve_device("gpu", host)
    with pytest.raises(TypeError, match="device must be one of"):
        _device.resolve_device(0, host)


@needs_no_gpu
def test_cuda_asked_for_and_unavailable_is_a_clear_runtime_error():
    host = sp.random(6, 5, density=0.5, format="csr", dtype=np.float32, random_state=0)
    with pytest.raises(RuntimeError, match="device='cuda' needs the CUDA engine"):
        _device.resolve_device("auto", FakeCudaArray())
    with pytest.raises(RuntimeError, match="device='cuda' needs the CUDA engine"):
        recore.ALS(factors=4, iterations=1, device="cuda").fit(host)
    with pytest.raises(RuntimeError, match="device='cuda' needs the CUDA engine"):
        recore.SGD(factors=4, iterations=1, device="cuda").fit(host)
    with pytest.raises(RuntimeError, match="device='cuda' needs the CUDA engine"):
        recore.topk(FakeCudaArray((2, 3)), FakeCudaArray((5, 3)), 2)
    model = recore.ALS(factors=4, iterations=1, random_state=0).fit(host)
    with pytest.raises(RuntimeError, match="device='cuda' needs the CUDA engine"):
        model.to_device("cuda")
    assert isinstance(model.user_factors_, np.ndarray)  # a refused move changes nothing


def test_device_parameter_is_checked_and_defaults_to_auto():
    assert recore.ALS().device == "auto" and recore.SGD().device == "auto"
    with pytest.raises(ValueError, match="device must be one of"):
        recore.ALS(device="gpu")
    with pytest.raises(TypeError, match="device must be one of"):
        recore.SGD(device=None)


def test_cpu_models_stay_on_the_cpu_and_move_nowhere():
    host = sp.random(8, 6, density=0.5, format="csr", dtype=np.float32, random_state=1)
    model = recore.ALS(factors=3, iterations=2, random_state=0, device="cpu").fit(host)
    before = model.user_factors_.copy()
    assert model.fitted_device_ == "cpu"
    assert model.to_device("cpu") is model
    np.testing.assert_array_equal(model.user_factors_, before)
    with pytest.raises(ValueError, match="device must be one of"):
        model.to_device("tpu")
    with pytest.raises(ValueError, match="not fitted"):
        recore.SGD().to_device("cpu")


def test_a_model_whose_factors_live_on_a_gpu_refuses_host_only_methods():
    host = sp.random(8, 6, density=0.5, format="csr", dtype=np.float32, random_state=2)
    model = recore.ALS(factors=3, iterations=1, random_state=0).fit(host)
    model.user_factors_ = FakeCudaArray((8, 3))
    assert model.fitted_device_ == "cuda"
    with pytest.raises(RuntimeError, match="live on the GPU.*to_device\\('cpu'\\)"):
        model.fold_in(host[:2])


@needs_no_gpu
def test_serving_factors_that_live_on_a_gpu_needs_the_cuda_engine():
    # recommend and similar_* serve a GPU model on the GPU; where it cannot run, they say so
    # before any work (a model unpickled on a machine without one, say).
    host = sp.random(8, 6, density=0.5, format="csr", dtype=np.float32, random_state=2)
    model = recore.ALS(factors=3, iterations=1, random_state=0).fit(host)
    model.user_factors_ = FakeCudaArray((8, 3))
    for serve in (lambda: model.recommend(0, host), lambda: model.similar_users(0), lambda: model.recommend_all()):
        with pytest.raises(RuntimeError, match="live on the GPU, but the CUDA engine is unavailable"):
            serve()


def test_gpu_topk_refuses_mixed_host_and_gpu_arrays():
    with pytest.raises(TypeError, match="both be GPU arrays or both numpy arrays; items is ndarray"):
        recore.topk(FakeCudaArray((2, 3)), np.zeros((5, 3), np.float32), 2)


# -- __cuda_array_interface__ checks -------------------------------------------------------------


def test_describe_reads_a_well_formed_interface():
    array = _device.describe(FakeCudaArray((4, 3), "<f4", pointer=0xABC00, readonly=True), "x")
    assert array.pointer == 0xABC00 and array.shape == (4, 3) and array.dtype == np.float32
    assert array.readonly and array.strides is None and array.c_contiguous() and array.size == 12


@pytest.mark.parametrize(
    ("fake", "message"),
    [
        (FakeCudaArray(version=7), "unsupported version 7"),
        (FakeCudaArray(version="3"), "unsupported version"),
        (FakeCudaArray(shape=[4, 3]), "invalid shape"),
        (FakeCudaArray(shape=(4, -1)), "invalid shape"),
        (FakeCudaArray(typestr="<q9"), "invalid typestr"),
        (FakeCudaArray(typestr=4), "invalid typestr"),
        (FakeCudaArray(pointer=-8), "negative device pointer"),
        (FakeCudaArray(pointer=0), "null device pointer but 12 elements"),
        (FakeCudaArray(strides=(4,)), "do not match its shape"),
        (FakeCudaArray(strides=(12.0, 4)), "do not match its shape"),
        (FakeCudaArray(mask=FakeCudaArray()), "has a mask"),
        (FakeCudaArray(typestr=">f4"), "non-native byte order"),
    ],
)
def test_describe_rejects_malformed_interfaces_naming_the_argument(fake, message):
    with pytest.raises(ValueError, match=f"queries.*{message}|{message}") as info:
        _device.describe(fake, "queries")
    assert "queries" in str(info.value)


def test_describe_rejects_missing_keys_and_non_gpu_objects():
    fake = FakeCudaArray()
    del fake.__cuda_array_interface__["data"]
    with pytest.raises(ValueError, match="items.__cuda_array_interface__ has no 'data'"):
        _device.describe(fake, "items")
    odd = FakeCudaArray()
    odd.__cuda_array_interface__ = [("shape", (1,))]
    with pytest.raises(TypeError, match="must be a dict"):
        _device.describe(odd, "items")
    with pytest.raises(TypeError, match="items must be a GPU array"):
        _device.describe(np.zeros(3), "items")


def test_empty_arrays_may_have_a_null_pointer():
    assert _device.describe(FakeCudaArray((0, 3), pointer=0), "x").size == 0


def test_require_array_checks_dtype_shape_layout_and_writability():
    good = FakeCudaArray((4, 3))
    assert _device.require_array(good, "items", np.float32, 2, shape=(None, 3)).shape == (4, 3)
    with pytest.raises(TypeError, match="items must have dtype float32, got float64"):
        _device.require_array(FakeCudaArray(typestr="<f8"), "items", np.float32, 2)
    with pytest.raises(ValueError, match="items must be 2-dimensional, got 1"):
        _device.require_array(FakeCudaArray((12,)), "items", np.float32, 2)
    with pytest.raises(ValueError, match="items must have 5 entries along axis 1, got 3"):
        _device.require_array(good, "items", np.float32, 2, shape=(None, 5))
    with pytest.raises(ValueError, match="items must be C-contiguous"):
        _device.require_array(FakeCudaArray((4, 3), strides=(4, 16)), "items", np.float32, 2)
    with pytest.raises(ValueError, match="target must be writeable"):
        _device.require_array(FakeCudaArray(readonly=True), "target", np.float32, 2, writable=True)
    # Explicit C strides, and any stride on an axis of extent 1, are contiguous.
    assert _device.require_array(FakeCudaArray((4, 3), strides=(12, 4)), "x", np.float32, 2)
    assert _device.require_array(FakeCudaArray((1, 3), strides=(999, 4)), "x", np.float32, 2)


@given(
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=4),
    dtype=st.sampled_from([np.float32, np.float64, np.int32, np.int64, np.uint16]),
    transpose=st.booleans(),
    step=st.integers(1, 3),
)
def test_contiguity_from_strides_agrees_with_numpy(shape, dtype, transpose, step):
    array = np.zeros(shape, dtype=dtype)
    if transpose:
        array = array.T
    array = array[(slice(None, None, step),) + (slice(None),) * (array.ndim - 1)]
    described = _device.describe(fake_from_numpy(array), "x")
    assert described.shape == array.shape and described.dtype == array.dtype
    assert described.c_contiguous() == array.flags.c_contiguous


# -- on a GPU ----------------------------------------------------------------------------------


def tie_free(n, f, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, f)) * (1 + rng.random((n, 1)))).astype(np.float32)


@needs_gpu
@pytest.mark.parametrize("k", [1, 3, 10, 97, 500, 2050, 5000])
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_gpu_topk_equals_cpu_with_exclusion(k, precision):
    import cupy as cp

    queries, items = tie_free(300, 24, 0), tie_free(4100, 24, 1)
    exclude = sp.random(300, 4100, density=0.01, format="csr", random_state=3, dtype=np.float32)
    cpu_ids, cpu_scores = recore.topk(queries, items, k, exclude=exclude)
    gpu_ids, gpu_scores = recore.topk(cp.asarray(queries), cp.asarray(items), k, exclude=exclude, precision=precision)
    assert isinstance(gpu_ids, cp.ndarray) and gpu_ids.dtype == cpu_ids.dtype
    np.testing.assert_array_equal(gpu_ids.get(), cpu_ids)
    np.testing.assert_array_equal(gpu_scores.get(), cpu_scores)


@needs_gpu
def test_gpu_topk_deny_cosine_and_cupyx_exclusions():
    import cupy as cp
    import cupyx.scipy.sparse as cusp

    queries, items = tie_free(50, 16, 4), tie_free(700, 16, 5)
    exclude = sp.random(50, 700, density=0.05, format="csr", random_state=6, dtype=np.float32)
    deny = [0, 5, 699]
    for metric in ("dot", "cosine"):
        cpu = recore.topk(queries, items, 20, exclude=exclude, deny=deny, metric=metric)
        gpu = recore.topk(cp.asarray(queries), cp.asarray(items), 20, exclude=cusp.csr_matrix(exclude), deny=deny,
                          metric=metric)  # fmt: skip
        np.testing.assert_array_equal(gpu[0].get(), cpu[0])
        np.testing.assert_allclose(gpu[1].get(), cpu[1], rtol=1e-6)


@needs_gpu
def test_gpu_topk_on_a_side_stream_and_through_dlpack():
    import cupy as cp

    queries, items = tie_free(40, 8, 7), tie_free(300, 8, 8)
    expected = recore.topk(queries, items, 7)[0]
    with cp.cuda.Stream(non_blocking=True):
        ids, _ = recore.topk(cp.asarray(queries), cp.asarray(items), 7)
    np.testing.assert_array_equal(ids.get(), expected)

    class DlpackOnly:
        def __init__(self, array):
            self.array = array

        def __dlpack__(self, stream=None, **kwargs):
            return self.array.__dlpack__(stream=stream, **kwargs)

        def __dlpack_device__(self):
            return self.array.__dlpack_device__()

    ids, _ = recore.topk(DlpackOnly(cp.asarray(queries)), DlpackOnly(cp.asarray(items)), 7)
    np.testing.assert_array_equal(ids.get(), expected)


@needs_gpu
def test_gpu_topk_bad_inputs_raise_clear_errors():
    import cupy as cp

    items = cp.asarray(tie_free(30, 4, 9))
    with pytest.raises(TypeError, match="queries must have dtype float32"):
        recore.topk(cp.zeros((2, 4), cp.float64), items, 3)
    with pytest.raises(ValueError, match="items must be C-contiguous"):
        recore.topk(cp.zeros((2, 30), cp.float32), cp.asarray(tie_free(4, 30, 1)).T, 3)
    with pytest.raises(ValueError, match="queries and items must have the same number of factors, got 5 and 4"):
        recore.topk(cp.zeros((2, 5), cp.float32), items, 3)
    with pytest.raises(ValueError, match="queries must not contain NaN"):
        recore.topk(cp.full((2, 4), cp.nan, cp.float32), items, 3)
    if cp.cuda.runtime.getDeviceCount() > 1:
        with cp.cuda.Device(1):
            other = cp.zeros((2, 4), cp.float32)
        with pytest.raises(ValueError, match="on CUDA device"):
            recore.topk(other, items, 3)


def implicit_data(seed=0, users=300, items=200):
    matrix = sp.random(users, items, density=0.05, format="csr", random_state=seed, dtype=np.float32)
    matrix.data = (matrix.data * 5).astype(np.float32)
    return matrix


def assert_as_close_as_cpu(gpu, params, data):
    """The GPU's float32 factors and losses are as near the CPU engine's float64 fit as its
    float32 fit is (within 1e-3, or twice the CPU's own float32 error where the systems are so
    ill-conditioned that float32 rounding alone moves the result further: a few entries per row
    against many factors and little regularization, where CG's three steps also stop far from
    the solution). Both devices start from the same initialization."""
    cpu32 = recore.ALS(**params).fit(data)
    cpu64 = recore.ALS(**params, dtype="float64").fit(data)
    for name in ("user_factors_", "item_factors_"):
        want = getattr(cpu64, name)
        cpu_error = np.linalg.norm(getattr(cpu32, name) - want)
        gpu_error = np.linalg.norm(getattr(gpu, name).get() - want)
        assert gpu_error <= max(1e-3 * np.linalg.norm(want), 2 * cpu_error), (name, gpu_error, cpu_error)
    want = np.asarray(cpu64.history_["loss"])
    cpu_error = np.abs(np.asarray(cpu32.history_["loss"]) - want)
    gpu_error = np.abs(np.asarray(gpu.history_["loss"]) - want)
    assert (gpu_error <= np.maximum(1e-3 * np.abs(want), 2 * cpu_error)).all(), (gpu_error, cpu_error)


@needs_gpu
@pytest.mark.parametrize("solver", ["cg", "cholesky"])
@pytest.mark.parametrize("feedback", ["implicit", "explicit"])
@pytest.mark.parametrize("factors", [8, 37, 130])
def test_gpu_als_matches_cpu_from_the_same_initialization(solver, feedback, factors):
    import cupyx.scipy.sparse as cusp

    data = implicit_data()
    params = dict(factors=factors, iterations=3, solver=solver, feedback=feedback, alpha=2.5, regularization=0.1,
                  random_state=0, calculate_training_loss=True)  # fmt: skip
    gpu = recore.ALS(**params).fit(cusp.csr_matrix(data))
    assert gpu.fitted_device_ == "cuda"
    assert_as_close_as_cpu(gpu, params, data)
    gpu.to_device("cpu")
    np.testing.assert_array_equal(gpu.recommend(0, data)[0].shape, (10,))


@needs_gpu
@pytest.mark.parametrize("solver", ["cg", "cholesky"])
@pytest.mark.parametrize(
    "weighting",
    [
        dict(unobserved_weight=0.2, regularization_exponent=0.7),
        dict(unobserved_weight=3.0, regularization_exponent=1.0, confidence="scaled"),
        dict(feedback="explicit", regularization_exponent=0.5),
    ],
)
def test_gpu_ials_weighting_matches_cpu(solver, weighting):
    # The unobserved weight and frequency-scaled regularization mean the same on both devices:
    # in the solves and in the training loss (whose item penalties count each item's entries).
    import cupyx.scipy.sparse as cusp

    data = implicit_data()
    # Explicit ratings with this little regularization leave rows of ~10 entries against 24
    # factors nearly singular: three CG steps stop far from the solution, wherever float32
    # rounding steers them (the CPU's float32 and float64 fits differ by 4.6 %). Run to
    # convergence there (2 f steps), so that the weighting, not the rounding, is compared.
    steps = 48 if weighting.get("feedback") == "explicit" else 3
    params = dict(factors=24, iterations=3, solver=solver, alpha=2.5, regularization=0.01, random_state=0,
                  calculate_training_loss=True, cg_steps=steps, **weighting)  # fmt: skip
    gpu = recore.ALS(**params).fit(cusp.csr_matrix(data))
    assert_as_close_as_cpu(gpu, params, data)


@needs_gpu
def test_gpu_refuses_the_subspace_solver_before_any_work():
    import cupyx.scipy.sparse as cusp

    data = cusp.csr_matrix(implicit_data())
    with pytest.raises(ValueError, match=r"solver='subspace' is not available on the GPU"):
        recore.ALS(solver="subspace").fit(data)
    with pytest.raises(ValueError, match=r"solver='subspace' is not available on the GPU"):
        recore.ALS(solver="subspace", device="cuda").fit(implicit_data())


@needs_gpu
def test_gpu_als_large_factor_counts_and_weighted_regularization():
    data = implicit_data(1, 60, 40)
    for factors, solver in ((1100, "cholesky"), (2700, "cg")):
        params = dict(factors=factors, iterations=1, solver=solver, random_state=0, weighted_regularization=True,
                      regularization=0.5)  # fmt: skip
        cpu = recore.ALS(**params).fit(data)
        gpu = recore.ALS(device="cuda", **params).fit(data)
        got = gpu.user_factors_.get()
        assert np.linalg.norm(got - cpu.user_factors_) <= 1e-3 * np.linalg.norm(cpu.user_factors_)


@needs_gpu
@pytest.mark.xfail(
    strict=True,
    reason="known: the GPU's lock-free SGD loses item updates when thousands of warps write the same "
    "rows (H200: train RMSE flat at 1.44 here while the CPU's falls to 1.35; planted ratings 20k x 5k, "
    "12 epochs: test RMSE 0.951 against the CPU's 0.927); the GPU needs the CPU's conflict-free grid",
)
def test_gpu_sgd_rmse_trajectory_is_close_to_cpu():
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 500, 20000), rng.integers(0, 300, 20000)
    ratings = sp.csr_matrix((rng.integers(1, 6, 20000).astype(np.float32), (users, items)), shape=(500, 300))
    ratings.sum_duplicates()
    ratings.data = np.clip(ratings.data, 1, 5)
    for factors in (8, 40):
        params = dict(factors=factors, iterations=12, random_state=0)
        cpu = recore.SGD(**params).fit(ratings)
        gpu = recore.SGD(device="cuda", **params).fit(ratings)
        assert gpu.iterations_completed_ == 12
        np.testing.assert_allclose(gpu.history_["train_rmse"], cpu.history_["train_rmse"], rtol=0.05)
    cpu = recore.SGD(factors=16, loss="bpr", iterations=8, random_state=0).fit(ratings)
    gpu = recore.SGD(factors=16, loss="bpr", iterations=8, random_state=0, device="cuda").fit(ratings)
    assert abs(gpu.history_["train_auc"][-1] - cpu.history_["train_auc"][-1]) < 0.05


@needs_gpu
def test_model_moves_between_devices():
    import cupy as cp

    data = implicit_data(2)
    model = recore.ALS(factors=6, iterations=2, random_state=0).fit(data)
    host = model.user_factors_.copy()
    model.to_device("cuda")
    assert isinstance(model.user_factors_, cp.ndarray)
    model.to_device("cpu")
    np.testing.assert_array_equal(model.user_factors_, host)


def _host_copy(model):
    import copy

    return copy.deepcopy(model).to_device("cpu")


def _assert_same_results(gpu_result, cpu_result):
    ids, scores = gpu_result
    assert isinstance(ids, np.ndarray) and isinstance(scores, np.ndarray)  # lists come back to the host
    np.testing.assert_array_equal(ids, cpu_result[0])
    np.testing.assert_allclose(scores, cpu_result[1], rtol=1e-6, atol=1e-6)


@needs_gpu
@pytest.mark.parametrize("estimator", ["als", "sgd"])
def test_a_gpu_model_serves_on_the_gpu_as_its_host_copy_does(estimator):
    import cupy as cp
    import cupyx.scipy.sparse as cusp

    data = implicit_data(3, 400, 300)
    if estimator == "als":
        model = recore.ALS(factors=16, iterations=3, random_state=0).fit(cusp.csr_matrix(data))
    else:
        model = recore.SGD(factors=16, iterations=3, random_state=0, device="cuda").fit(data)
    assert model.fitted_device_ == "cuda"
    host = _host_copy(model)
    users = np.array([0, 7, 399, 12])
    allow, deny = np.arange(0, 300, 3), [3, 6, 9, 4]
    for user_items in (data, cusp.csr_matrix(data)):
        _assert_same_results(model.recommend(users, user_items, 10), host.recommend(users, data, 10))
        _assert_same_results(model.recommend(5, user_items, 10), host.recommend(5, data, 10))
        _assert_same_results(
            model.recommend(users, user_items, 10, allow=allow, deny=deny),
            host.recommend(users, data, 10, allow=allow, deny=deny),
        )
    rows = data[users]
    _assert_same_results(
        model.recommend(users, cusp.csr_matrix(rows), 7, user_items_layout="per_query"),
        host.recommend(users, rows, 7, user_items_layout="per_query"),
    )
    # More than the allowed items asked for: the rest is -1 / -inf on both devices.
    few = [1, 2, 5]
    _assert_same_results(model.recommend(users, data, 20, allow=few), host.recommend(users, data, 20, allow=few))
    _assert_same_results(model.recommend_all(data, 5), host.recommend_all(data, 5))
    _assert_same_results(model.recommend(users, None, 10, precision="bfloat16"), host.recommend(users, None, 10))
    for exclude_self in (False, True):
        _assert_same_results(
            model.similar_items([0, 5, 299], 8, exclude_self=exclude_self),
            host.similar_items([0, 5, 299], 8, exclude_self=exclude_self),
        )
        _assert_same_results(
            model.similar_users(3, 8, exclude_self=exclude_self), host.similar_users(3, 8, exclude_self=exclude_self)
        )
    assert isinstance(model.user_factors_, cp.ndarray)  # serving moved nothing
    with pytest.raises(IndexError):
        model.recommend(400, data)
    with pytest.raises(ValueError, match="columns"):
        model.recommend(0, cusp.csr_matrix(data[:, :10]))


@needs_gpu
def test_gpu_topk_allow_and_deny_equal_cpu():
    import cupy as cp

    queries, items = tie_free(60, 12, 10), tie_free(900, 12, 11)
    exclude = sp.random(60, 900, density=0.02, format="csr", random_state=12, dtype=np.float32)
    allow = np.unique(np.random.default_rng(1).integers(0, 900, 200))
    for deny in (None, allow[::4]):
        for k in (5, 250):
            cpu = recore.topk(queries, items, k, exclude=exclude, allow=allow, deny=deny)
            gpu = recore.topk(
                cp.asarray(queries), cp.asarray(items), k, exclude=exclude, allow=cp.asarray(allow), deny=deny
            )
            np.testing.assert_array_equal(gpu[0].get(), cpu[0])
            np.testing.assert_array_equal(gpu[1].get(), cpu[1])
