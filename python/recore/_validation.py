"""Argument checks shared by the estimators: every public entry point validates here,
before any engine work starts, and raises TypeError / ValueError / IndexError naming the
argument."""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp

_INT32_MAX = np.iinfo(np.int32).max


def check_int(value, name: str, minimum: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_float(value, name: str, minimum: float | None = None) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_choice(value, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {choices}, got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_bool(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__}")
    return bool(value)


def check_float_dtype(dtype, name: str = "dtype") -> np.dtype:
    try:
        resolved = np.dtype(dtype)
    except TypeError as error:
        raise TypeError(f"{name} must be float32 or float64, got {dtype!r}") from error
    if resolved not in (np.float32, np.float64):
        raise ValueError(f"{name} must be float32 or float64, got {resolved}")
    return resolved


def check_random_state(random_state) -> np.random.Generator:
    """A numpy Generator from None, an int seed, a SeedSequence or a Generator."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None or isinstance(random_state, np.random.SeedSequence):
        return np.random.default_rng(random_state)
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"random_state must be >= 0, got {random_state}")
        return np.random.default_rng(int(random_state))
    raise TypeError(
        f"random_state must be None, a non-negative integer or a numpy Generator, got {type(random_state).__name__}"
    )


def _check_index_range(values: np.ndarray, bound: int, name: str, what: str) -> None:
    if values.size == 0:
        return
    if values.min() < 0:
        raise IndexError(f"{name} has negative {what}")
    if values.max() >= bound:
        raise IndexError(f"{name} has {what} >= {bound} (its shape)")


def _check_compressed(matrix, name: str) -> None:
    """Checks a CSR/CSC matrix's structure before scipy or the engine walks it: scipy's own
    conversions trust it and would read out of bounds."""
    check_row_pointers(matrix, name)
    minor = matrix.shape[1] if matrix.format == "csr" else matrix.shape[0]
    indices = np.asarray(matrix.indices)
    _check_index_range(indices, minor, name, "column indices" if matrix.format == "csr" else "row indices")


def check_row_pointers(matrix, name: str) -> None:
    """The O(rows) part of a CSR/CSC structure check: indptr rising from 0 to nnz, and data as
    long as indices. Enough before slicing rows, whose indices are then checked alone."""
    major = matrix.shape[0] if matrix.format == "csr" else matrix.shape[1]
    indptr, indices = np.asarray(matrix.indptr), np.asarray(matrix.indices)
    if indptr.ndim != 1 or indptr.shape[0] != major + 1:
        raise ValueError(f"{name}.indptr must have {major + 1} entries, got {indptr.shape}")
    if indptr[0] != 0 or indptr[-1] != indices.shape[0] or np.any(np.diff(indptr) < 0):
        raise ValueError(f"{name}.indptr is malformed: it must rise from 0 to nnz")
    if np.asarray(matrix.data).shape != indices.shape:
        raise ValueError(f"{name}.data and {name}.indices must have the same length")


def check_taken_row_pointers(matrix, rows: np.ndarray, name: str) -> None:
    """The part of a CSR structure check that rows ``rows`` need before they are sliced: the
    pointer array's length and ends, and each taken row's bounds (O(len(rows)), so that serving
    a few users of a large matrix does not read every pointer). The rows' indices are then
    checked alone."""
    indptr, indices = np.asarray(matrix.indptr), np.asarray(matrix.indices)
    n_rows = matrix.shape[0]
    if indptr.ndim != 1 or indptr.shape[0] != n_rows + 1:
        raise ValueError(f"{name}.indptr must have {n_rows + 1} entries, got {indptr.shape}")
    nnz = indices.shape[0]
    if indptr[0] != 0 or indptr[-1] != nnz:
        raise ValueError(f"{name}.indptr is malformed: it must rise from 0 to nnz")
    if np.asarray(matrix.data).shape != indices.shape:
        raise ValueError(f"{name}.data and {name}.indices must have the same length")
    if len(rows) <= 4:  # a user or two served as they act: plain integers cost less than numpy calls
        malformed = any(not 0 <= int(indptr[row]) <= int(indptr[row + 1]) <= nnz for row in rows.tolist())
    else:
        begins, ends = indptr[rows], indptr[rows + 1]
        malformed = bool(np.any(begins < 0) or np.any(ends < begins) or np.any(ends > nnz))
    if malformed:
        raise ValueError(f"{name}.indptr is malformed: it must rise from 0 to nnz")


def _to_csr(matrix, name: str):
    if isinstance(matrix, np.ndarray) or (hasattr(matrix, "__array__") and not sp.issparse(matrix)):
        dense = np.asarray(matrix)
        if dense.ndim != 2:
            raise ValueError(f"{name} must be 2-dimensional, got {dense.ndim} dimensions")
        if not (np.issubdtype(dense.dtype, np.number) or dense.dtype == np.bool_):
            raise TypeError(f"{name} must hold numbers, got dtype {dense.dtype}")
        if np.issubdtype(dense.dtype, np.complexfloating):
            raise TypeError(f"{name} must hold real numbers, got dtype {dense.dtype}")
        if not np.isfinite(dense).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        if dense.dtype == np.float16:  # scipy.sparse has no float16
            dense = dense.astype(np.float32)
        return sp.csr_matrix(dense)
    if not sp.issparse(matrix):
        raise TypeError(f"{name} must be a scipy.sparse matrix or a 2-D numpy array, got {type(matrix).__name__}")
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional, got {matrix.ndim} dimensions")
    if matrix.format in ("csr", "csc"):
        _check_compressed(matrix, name)
    elif matrix.format == "coo":
        _check_index_range(np.asarray(matrix.row), matrix.shape[0], name, "row indices")
        _check_index_range(np.asarray(matrix.col), matrix.shape[1], name, "column indices")
    if matrix.format == "csr":
        return matrix
    try:
        return matrix.tocsr()
    except (TypeError, ValueError) as error:
        raise type(error)(f"{name} could not be converted to CSR: {error}") from None


def as_user_items(matrix, dtype, *, name: str = "user_items", allow_negative: bool = True):
    """The interactions as a canonical CSR matrix (sorted, no duplicates) with values of
    ``dtype`` and int32 indices (int64 when nnz or a dimension needs it).

    A CSR matrix already in that form is returned as it is, without a copy; anything
    else is converted once. The input is never modified.
    """
    dtype = np.dtype(dtype)
    csr = _to_csr(matrix, name)
    data = np.asarray(csr.data)
    if data.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {data.dtype}")

    wide = max(csr.nnz, *csr.shape) > _INT32_MAX
    index_dtype = np.int64 if wide else np.int32
    canonical = csr.has_canonical_format
    if not (canonical and data.dtype == dtype and csr.indices.dtype == index_dtype and csr.indptr.dtype == index_dtype):
        with np.errstate(over="ignore"):  # values beyond float32 are reported just below
            values = data.astype(dtype, copy=False)
        csr = sp.csr_matrix(
            (
                values,
                csr.indices.astype(index_dtype, copy=False),
                csr.indptr.astype(index_dtype, copy=False),
            ),
            shape=csr.shape,
        )
        if not canonical:
            # A copy first: sum_duplicates rewrites the arrays in place, and they may
            # still be the caller's.
            csr = csr.copy()
            csr.sum_duplicates()
        # Set after construction: scipy's constructor narrows int64 indices that fit in int32.
        csr.indices = csr.indices.astype(index_dtype, copy=False)
        csr.indptr = csr.indptr.astype(index_dtype, copy=False)
    # Checked after the cast: float64 values beyond float32's range become infinite.
    if not np.isfinite(csr.data).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if not allow_negative and csr.nnz and csr.data.min() < 0:
        raise ValueError(f"{name} must not contain negative values for implicit feedback")
    return csr


def transpose_csr(csr):
    """The item-user CSR of a user-item CSR, with the same index dtype."""
    transposed = csr.T.tocsr()
    index_dtype = csr.indices.dtype
    # Set after construction: scipy narrows int64 indices that fit in int32.
    transposed.indices = transposed.indices.astype(index_dtype, copy=False)
    transposed.indptr = transposed.indptr.astype(index_dtype, copy=False)
    return transposed


def check_ids(ids, bound: int, name: str) -> np.ndarray:
    """Integer ids as an int64 array, each in [0, bound)."""
    array = np.asarray(ids)
    if array.dtype.kind not in "iu":
        if array.size == 0 and array.dtype.kind == "f":
            array = array.astype(np.int64)
        else:
            raise TypeError(f"{name} must be integer ids, got dtype {array.dtype}")
    array = array.astype(np.int64, copy=False)
    _check_index_range(array, bound, name, "ids")
    return array
