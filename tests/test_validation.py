"""Bad input: a clear TypeError / ValueError / IndexError naming the argument, raised
before any work starts, and never a crash."""

import numpy as np
import pytest
import recore
import scipy.sparse as sp
from recore import kernels
from recore._validation import as_user_items


def small_matrix():
    return sp.csr_matrix(np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]], dtype=np.float32))


def raw_csr(data, indices, indptr, shape):
    """A CSR built without scipy's checks, as a careless caller could hand us."""
    matrix = sp.csr_matrix(shape, dtype=np.float32)
    matrix.data = np.asarray(data, dtype=np.float32)
    matrix.indices = np.asarray(indices, dtype=np.int32)
    matrix.indptr = np.asarray(indptr, dtype=np.int32)
    return matrix


def fit(matrix, **params):
    return recore.ALS(factors=2, iterations=1, **params).fit(matrix)


# -- the interactions ----------------------------------------------------------------------


def test_negative_index_raises_index_error():
    with pytest.raises(IndexError, match="user_items.*negative"):
        fit(raw_csr([1.0, 1.0], [0, -1], [0, 1, 2], (2, 3)))


def test_index_beyond_shape_raises_index_error():
    with pytest.raises(IndexError, match="user_items.*>= 3"):
        fit(raw_csr([1.0, 1.0], [0, 3], [0, 1, 2], (2, 3)))


@pytest.mark.parametrize("fmt", ["csc", "coo"])
def test_out_of_range_indices_in_other_formats_raise_index_error(fmt):
    if fmt == "csc":
        matrix = sp.csc_matrix((2, 3), dtype=np.float32)
        matrix.data = np.ones(1, dtype=np.float32)
        matrix.indices = np.array([5], dtype=np.int32)
        matrix.indptr = np.array([0, 1, 1, 1], dtype=np.int32)
    else:
        matrix = sp.coo_matrix((2, 3), dtype=np.float32)
        matrix.data = np.ones(1, dtype=np.float32)
        matrix.row = np.array([0], dtype=np.int32)
        matrix.col = np.array([7], dtype=np.int32)
    with pytest.raises(IndexError, match="user_items"):
        fit(matrix)


def test_malformed_indptr_raises_value_error():
    with pytest.raises(ValueError, match="user_items.indptr"):
        fit(raw_csr([1.0, 1.0], [0, 1], [0, 2, 1], (2, 3)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_raise_value_error(bad):
    matrix = small_matrix()
    matrix.data[1] = bad
    with pytest.raises(ValueError, match="user_items contains NaN or infinite"):
        fit(matrix)


def test_values_overflowing_float32_raise_value_error():
    matrix = sp.csr_matrix(np.array([[1e300, 0.0]]))
    with pytest.raises(ValueError, match="user_items contains NaN or infinite"):
        fit(matrix)


@pytest.mark.parametrize("dtype", [object, np.complex64, "U3"])
def test_non_numeric_dtype_raises_type_error(dtype):
    dense = np.array([[1, 0], [0, 1]]).astype(dtype)
    with pytest.raises(TypeError, match="user_items"):
        fit(dense)


def test_complex_sparse_matrix_raises_type_error():
    with pytest.raises(TypeError, match="user_items"):
        fit(sp.csr_matrix(np.array([[1 + 1j, 0]])))


@pytest.mark.parametrize("shape", [(3,), (2, 2, 2)])
def test_not_two_dimensional_raises_value_error(shape):
    with pytest.raises(ValueError, match="user_items must be 2-dimensional"):
        fit(np.ones(shape))


def test_not_a_matrix_raises_type_error():
    with pytest.raises(TypeError, match="user_items"):
        fit("ratings.csv")


def test_negative_values_raise_value_error_for_implicit_feedback():
    matrix = small_matrix()
    matrix.data[0] = -1.0
    with pytest.raises(ValueError, match="user_items must not contain negative"):
        fit(matrix)
    fit(matrix, feedback="explicit")  # ratings may be negative


# -- hyperparameters -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("factors", 0, ValueError),
        ("factors", -3, ValueError),
        ("factors", 2.5, TypeError),
        ("regularization", -0.1, ValueError),
        ("regularization", float("nan"), ValueError),
        ("regularization", "0.1", TypeError),
        ("alpha", -1.0, ValueError),
        ("iterations", -1, ValueError),
        ("iterations", True, TypeError),
        ("solver", "lu", ValueError),
        ("solver", None, TypeError),
        ("cg_steps", 0, ValueError),
        ("feedback", "ratings", ValueError),
        ("confidence", "log", ValueError),
        ("dtype", "int32", ValueError),
        ("dtype", "not-a-dtype", TypeError),
        ("num_threads", -1, ValueError),
        ("random_state", -5, ValueError),
        ("random_state", "seed", TypeError),
        ("weighted_regularization", "yes", TypeError),
    ],
)
def test_bad_hyperparameter_raises_naming_it(name, value, error):
    with pytest.raises(error, match=name):
        recore.ALS(**{name: value})
    model = recore.ALS()
    with pytest.raises(error, match=name):
        model.set_params(**{name: value})
    assert model.get_params() == recore.ALS().get_params()  # a refused value is not kept


def test_unknown_parameter_raises_value_error():
    with pytest.raises(ValueError, match="no parameter 'factor'"):
        recore.ALS().set_params(factor=3)


def test_callback_must_be_callable():
    with pytest.raises(TypeError, match="callback"):
        recore.ALS(iterations=1).fit(small_matrix(), callback=3)


# -- using a model -------------------------------------------------------------------------


def test_predict_before_fit_raises_value_error():
    with pytest.raises(ValueError, match="not fitted"):
        recore.ALS().predict([0], [0])


def test_predict_with_out_of_range_ids_raises_index_error():
    model = fit(small_matrix())
    with pytest.raises(IndexError, match="users"):
        model.predict([2], [0])
    with pytest.raises(IndexError, match="items"):
        model.predict([0], [-1])
    with pytest.raises(TypeError, match="users"):
        model.predict([0.5], [0])


def test_loss_on_data_of_another_shape_raises_value_error():
    model = fit(small_matrix())
    with pytest.raises(ValueError, match="user_items has shape"):
        model.loss(sp.csr_matrix((3, 3), dtype=np.float32))


# -- kernel buffers ------------------------------------------------------------------------


def kernel_buffers(dtype=np.float32):
    matrix = as_user_items(small_matrix(), dtype)
    rng = np.random.default_rng(0)
    fixed = rng.random((3, 4)).astype(dtype)
    target = rng.random((2, 4)).astype(dtype)
    return matrix, fixed, kernels.gram_matrix(fixed), target


def half_step(matrix, fixed, gram, target, **options):
    kernels.als_half_step(matrix, fixed, gram, target, regularization=0.1, **options)


def test_kernel_rejects_factors_of_another_dtype():
    matrix, fixed, gram, target = kernel_buffers()
    with pytest.raises(TypeError, match="fixed_factors must have dtype float32"):
        half_step(matrix, fixed.astype(np.float64), gram, target)
    with pytest.raises(TypeError, match="target_factors must have dtype float32"):
        half_step(matrix, fixed, gram, target.astype(np.float64))


def test_kernel_rejects_wrong_value_or_index_dtype():
    matrix, fixed, gram, target = kernel_buffers()
    as_int = sp.csr_matrix((matrix.data.astype(np.int32), matrix.indices, matrix.indptr), shape=matrix.shape)
    with pytest.raises(TypeError, match="user_items.data must have dtype float32 or float64"):
        half_step(as_int, fixed, gram, target)
    mixed = matrix.copy()
    mixed.indices = mixed.indices.astype(np.int64)
    with pytest.raises(TypeError, match="user_items.indptr and user_items.indices must have the same dtype"):
        half_step(mixed, fixed, gram, target)


def test_kernel_rejects_wrong_shapes():
    matrix, fixed, gram, target = kernel_buffers()
    with pytest.raises(ValueError, match="fixed_factors must have shape"):
        half_step(matrix, fixed[:2].copy(), gram, target)
    with pytest.raises(ValueError, match="target_factors must have shape"):
        half_step(matrix, fixed, gram, target[:, :3].copy())
    with pytest.raises(ValueError, match="fixed_gram must have shape"):
        half_step(matrix, fixed, gram[:3, :3].copy(), target)
    with pytest.raises(ValueError, match="fixed_factors must be 2-dimensional"):
        half_step(matrix, fixed.ravel(), gram, target)


def test_kernel_rejects_non_contiguous_buffers():
    matrix, fixed, gram, target = kernel_buffers()
    wide = np.zeros((3, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="fixed_factors must be C-contiguous"):
        half_step(matrix, wide[:, ::2], gram, target)
    with pytest.raises(ValueError, match="target_factors must be C-contiguous"):
        half_step(matrix, fixed, gram, np.asfortranarray(target))


def test_kernel_rejects_read_only_or_aliased_target():
    matrix, fixed, gram, target = kernel_buffers()
    target.setflags(write=False)
    with pytest.raises(ValueError, match="target_factors must be writeable"):
        half_step(matrix, fixed, gram, target)
    square = raw_csr([1.0], [0], [0, 1, 1, 1], (3, 3))
    shared = np.ones((3, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="must not share memory"):
        half_step(square, shared, kernels.gram_matrix(shared), shared)


def test_kernel_rejects_non_csr_and_out_of_range_indices():
    matrix, fixed, gram, target = kernel_buffers()
    with pytest.raises(TypeError, match="user_items must be a scipy.sparse CSR"):
        half_step(matrix.tocsc(), fixed, gram, target)
    broken = matrix.copy()
    broken.indices[0] = 3
    with pytest.raises(IndexError, match="user_items: indices must be smaller"):
        half_step(broken, fixed, gram, target)
    broken.indices[0] = -2
    with pytest.raises(IndexError, match="user_items: indices must not be negative"):
        half_step(broken, fixed, gram, target)


def test_kernel_rejects_bad_options():
    matrix, fixed, gram, target = kernel_buffers()
    with pytest.raises(ValueError, match="solver"):
        half_step(matrix, fixed, gram, target, solver="qr")
    with pytest.raises(ValueError, match="cg_steps"):
        half_step(matrix, fixed, gram, target, cg_steps=0)
    with pytest.raises(ValueError, match="fixed_gram is required"):
        half_step(matrix, fixed, None, target)
    with pytest.raises(TypeError, match="factors must have dtype"):
        kernels.gram_matrix(np.ones((3, 3), dtype=np.int64))


def test_nothing_is_written_when_a_check_fails():
    matrix, fixed, gram, target = kernel_buffers()
    before = target.copy()
    broken = matrix.copy()
    broken.indices[-1] = 99
    with pytest.raises(IndexError):
        half_step(broken, fixed, gram, target)
    np.testing.assert_array_equal(target, before)
