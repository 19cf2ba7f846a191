"""The CUDA engine's kernels over cupy arrays: what the estimators and recore.topk call
when the data lives on a GPU. Every buffer is checked (recore._device) before the engine
runs; outputs are cupy arrays on the inputs' device, made on the caller's current stream."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recore import _device
from recore._validation import as_user_items

_INT32_MAX = np.iinfo(np.int32).max


def _cupy():
    import cupy

    return cupy


def _engine():
    from recore import _cuda

    return _cuda


@dataclass
class DeviceCsr:
    """A canonical CSR matrix on the GPU: float32 data, int32 (or int64) indices."""

    indptr: object
    indices: object
    data: object
    shape: tuple

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    @property
    def wide(self) -> bool:
        return self.indices.dtype == np.int64

    def transpose(self) -> DeviceCsr:
        import cupyx.scipy.sparse as cusp

        matrix = cusp.csr_matrix((self.data, self.indices, self.indptr), shape=self.shape).T.tocsr()
        matrix.sort_indices()
        index_dtype = self.indices.dtype
        return DeviceCsr(
            matrix.indptr.astype(index_dtype, copy=False),
            matrix.indices.astype(index_dtype, copy=False),
            matrix.data.astype(np.float32, copy=False),
            (self.shape[1], self.shape[0]),
        )


def device_csr(matrix, name: str = "user_items", *, allow_negative: bool = True) -> DeviceCsr:
    """Interactions on the GPU. A cupyx sparse matrix stays there (converted to canonical
    float32 CSR on the device); host data (scipy / numpy) is made canonical by the CPU
    checks and copied to the GPU once."""
    cp = _cupy()
    if _device.is_gpu_sparse(matrix):
        if matrix.ndim != 2:
            raise ValueError(f"{name} must be 2-dimensional")
        csr = matrix.tocsr()
        if csr is matrix:
            csr = csr.copy()  # canonicalised in place below: never the caller's arrays
        csr.sum_duplicates()
        csr.sort_indices()
        data = csr.data.astype(np.float32, copy=False)
        if data.size and not bool(cp.isfinite(data).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
        if not allow_negative and data.size and float(data.min()) < 0:
            raise ValueError(f"{name} must not contain negative values for implicit feedback")
        wide = max(csr.nnz, *csr.shape) > _INT32_MAX
        index_dtype = np.int64 if wide else np.int32
        return DeviceCsr(
            cp.ascontiguousarray(csr.indptr.astype(index_dtype, copy=False)),
            cp.ascontiguousarray(csr.indices.astype(index_dtype, copy=False)),
            cp.ascontiguousarray(data),
            tuple(int(n) for n in csr.shape),
        )
    if _device.is_gpu_array(matrix):
        raise TypeError(f"{name} on the GPU must be a cupyx.scipy.sparse matrix, got {type(matrix).__name__}")
    host = as_user_items(matrix, np.float32, name=name, allow_negative=allow_negative)
    return DeviceCsr(cp.asarray(host.indptr), cp.asarray(host.indices), cp.asarray(host.data), host.shape)


def _pointer(array) -> int:
    return 0 if array is None else int(array.__cuda_array_interface__["data"][0])


def _factors(obj, name: str, rows=None, f=None, writable=False):
    array = _device.require_array(obj, name, np.float32, 2, writable=writable, shape=(rows, f))
    return array


def gram_matrix(factors):
    cp = _cupy()
    array = _factors(factors, "factors")
    n, f = array.shape
    device = _device.check_same_device({"factors": array})
    with cp.cuda.Device(device):
        gram = cp.empty((f, f), dtype=np.float32)
        _engine().gram_matrix(device, _device.current_stream(), array.pointer, n, f, _pointer(gram))
    return gram


def als_half_step(rows: DeviceCsr, fixed, gram, target, *, regularization, alpha=1.0, feedback="implicit",
                  confidence="linear", solver="cg", cg_steps=3, weighted_regularization=False):  # fmt: skip
    n_rows, n_cols = rows.shape
    target_array = _factors(target, "target_factors", rows=n_rows, writable=True)
    f = target_array.shape[1]
    fixed_array = _factors(fixed, "fixed_factors", rows=n_cols, f=f)
    gram_array = None
    if feedback == "implicit":
        if gram is None:
            raise ValueError("fixed_gram is required for implicit feedback")
        gram_array = _device.require_array(gram, "fixed_gram", np.float32, 2, shape=(f, f))
    device = _device.check_same_device(
        {"target_factors": target_array, "fixed_factors": fixed_array, "fixed_gram": gram_array,
         "user_items.indices": _device.describe(rows.indices, "user_items.indices")}
    )  # fmt: skip
    _engine().als_solve(
        device, _device.current_stream(), rows.wide, n_rows, n_cols, rows.nnz, _pointer(rows.indptr),
        _pointer(rows.indices), _pointer(rows.data), fixed_array.pointer, 0 if gram_array is None else gram_array.pointer,
        target_array.pointer, f, feedback, confidence, solver, float(regularization), float(alpha), int(cg_steps),
        bool(weighted_regularization),
    )  # fmt: skip


def als_loss(rows: DeviceCsr, user_factors, item_factors, *, regularization, alpha=1.0, feedback="implicit",
             confidence="linear", weighted_regularization=False) -> float:  # fmt: skip
    n_rows, n_cols = rows.shape
    users = _factors(user_factors, "user_factors", rows=n_rows)
    f = users.shape[1]
    items = _factors(item_factors, "item_factors", rows=n_cols, f=f)
    gram = gram_matrix(item_factors) if feedback == "implicit" else None
    device = _device.check_same_device({"user_factors": users, "item_factors": items})
    return float(
        _engine().als_loss(
            device, _device.current_stream(), rows.wide, n_rows, n_cols, rows.nnz, _pointer(rows.indptr),
            _pointer(rows.indices), _pointer(rows.data), users.pointer, items.pointer, _pointer(gram), f,
            feedback, confidence, float(regularization), float(alpha), bool(weighted_regularization),
        )  # fmt: skip
    )


def topk(queries, items, k: int, *, exclude=None, deny=None, precision: str = "float32"):
    """Exact top-k on the GPU: (ids, scores) as cupy arrays of shape (n_queries, k)."""
    cp = _cupy()
    query_array = _device.require_array(queries, "queries", np.float32, 2)
    n_queries, f = query_array.shape
    item_array = _device.require_array(items, "items", np.float32, 2, shape=(None, f))
    n_items = item_array.shape[0]
    excl = None
    if exclude is not None:
        excl = device_csr(exclude, "exclude")
        if excl.shape != (n_queries, n_items):
            raise ValueError(
                f"exclude must have one row per query and one column per item: shape {(n_queries, n_items)}, "
                f"got {excl.shape}"
            )
    device = _device.check_same_device({"queries": query_array, "items": item_array})
    denied = None
    with cp.cuda.Device(device):
        if deny is not None:
            from recore.topk import _item_ids, denied_bits

            ids = deny.get() if _device.is_gpu_array(deny) else deny
            denied = cp.asarray(denied_bits(_item_ids(ids, n_items, "deny"), n_items))
        wide_ids = n_items > _INT32_MAX
        ids = cp.empty((n_queries, k), dtype=np.int64 if wide_ids else np.int32)
        scores = cp.empty((n_queries, k), dtype=np.float32)
        _engine().topk(
            device, _device.current_stream(), query_array.pointer, n_queries, item_array.pointer, n_items, f, k,
            _pointer(excl.indptr) if excl else 0, _pointer(excl.indices) if excl else 0, excl.nnz if excl else 0,
            bool(excl and excl.wide), _pointer(denied), 0, n_items, precision == "bfloat16", _pointer(ids),
            wide_ids, _pointer(scores),
        )  # fmt: skip
    return ids, scores


def to_host(value):
    """numpy from a GPU array (a copy), anything else unchanged."""
    if _device.is_gpu_array(value):
        return _cupy().asnumpy(value)
    return value


def to_gpu(value):
    """cupy from a numpy array (a copy), anything else unchanged."""
    if isinstance(value, np.ndarray):
        return _cupy().asarray(value)
    return value


def host_csr(matrix, name: str, *, allow_negative: bool):
    """Host CSR of interactions given on the GPU or the host (SGD builds its grid there)."""
    if _device.is_gpu_sparse(matrix):
        matrix = matrix.get()
    elif _device.is_gpu_array(matrix):
        raise TypeError(f"{name} on the GPU must be a cupyx.scipy.sparse matrix, got {type(matrix).__name__}")
    if not (sp.issparse(matrix) or isinstance(matrix, np.ndarray) or hasattr(matrix, "__array__")):
        raise TypeError(f"{name} must be a sparse matrix, got {type(matrix).__name__}")
    return as_user_items(matrix, np.float32, name=name, allow_negative=allow_negative)
