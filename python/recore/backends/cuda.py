"""The CUDA backend: recore's CUDA engine (``recore._cuda``) over cupy arrays, what the
estimators and recore.topk call when the data lives on a GPU. With the CPU backend it is the
only module that imports a compiled engine (and, with ``_device``, the only one that imports
cupy). Every buffer is checked (``recore.backends._device``) before the engine runs; outputs
are cupy arrays on the inputs' device, made on the caller's current stream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from recore._validation import as_user_items
from recore.backends import _device

_INT32_MAX = np.iinfo(np.int32).max


name = "cuda"


def _cupy():
    import cupy

    return cupy


def __getattr__(attribute):
    # ``xp`` is cupy, imported on first use: this module is imported to check GPU arguments
    # even where cupy is missing (the check then says so).
    if attribute == "xp":
        return _cupy()
    raise AttributeError(attribute)


def _engine():
    from recore import _cuda

    return _cuda


@dataclass
class DeviceCsr:
    """A canonical CSR matrix on the GPU: float32 data, int32 (or int64) indices."""

    indptr: Any  # cupy arrays (cupy has no type stubs)
    indices: Any
    data: Any
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


def interactions(matrix, dtype, *, name: str = "user_items", allow_negative: bool = True) -> DeviceCsr:
    """Interactions as the CUDA engine takes them (float32 only)."""
    if np.dtype(dtype) != np.float32:
        raise ValueError(f"the CUDA engine trains in float32: dtype must be 'float32' with device='cuda', got {dtype}")
    return device_csr(matrix, name, allow_negative=allow_negative)


def transpose(rows: DeviceCsr) -> DeviceCsr:
    return rows.transpose()


def largest_abs(rows: DeviceCsr) -> float:
    return float(_cupy().abs(rows.data).max()) if rows.nnz else 0.0


def from_host(array):
    return to_gpu(array)


def all_finite(array) -> bool:
    return bool(_cupy().isfinite(array).all())


# The CUDA engine has no subspace solver; its C++ entry refuses it in the same words.
SUBSPACE_REFUSAL = (
    "solver='subspace' is not available on the GPU (the CUDA engine has CG and Cholesky): use solver='cg' or "
    "'cholesky', or device='cpu'"
)


def check_als_options(**options) -> None:
    """The engines' one check of the ALS options, then what this engine lacks."""
    from recore.backends import cpu

    cpu.check_als_options(**options)
    if options.get("solver") == "subspace":
        raise ValueError(SUBSPACE_REFUSAL)


def _pointer(array) -> int:
    return 0 if array is None else int(array.__cuda_array_interface__["data"][0])


def _factors(obj, name: str, rows=None, f=None, writable=False):
    array = _device.require_array(obj, name, np.float32, 2, writable=writable, shape=(rows, f))
    return array


def gram_matrix(factors, *, num_threads: int = 0):
    """factors.T @ factors on the GPU (``num_threads`` is the CPU's and is ignored)."""
    cp = _cupy()
    array = _factors(factors, "factors")
    n, f = array.shape
    device = _device.check_same_device({"factors": array})
    with cp.cuda.Device(device):
        gram = cp.empty((f, f), dtype=np.float32)
        _engine().gram_matrix(device, _device.current_stream(), array.pointer, n, f, _pointer(gram))
    return gram


def als_half_step(rows: DeviceCsr, fixed, gram, target, *, regularization, alpha=1.0, feedback="implicit",
                  confidence="linear", solver="cg", cg_steps=3, weighted_regularization=False,
                  num_threads=0, unobserved_weight=1.0, regularization_exponent=0.0, block_size=32,
                  subspace_sweeps=1):  # fmt: skip
    if solver == "subspace":
        raise ValueError(SUBSPACE_REFUSAL)
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
        bool(weighted_regularization), float(unobserved_weight), float(regularization_exponent), int(block_size),
        int(subspace_sweeps),
    )  # fmt: skip


def als_loss(rows: DeviceCsr, user_factors, item_factors, *, regularization, alpha=1.0, feedback="implicit",
             confidence="linear", weighted_regularization=False, num_threads=0, unobserved_weight=1.0,
             regularization_exponent=0.0) -> float:  # fmt: skip
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
            float(unobserved_weight), float(regularization_exponent),
        )  # fmt: skip
    )


def topk(queries, items, k: int, *, exclude=None, deny=None, allow=None, precision: str = "float32"):
    """Exact top-k on the GPU: (ids, scores) as cupy arrays of shape (n_queries, k).

    ``allow`` and ``deny`` are lists of item ids (numpy, cupy or any sequence); the engine
    takes one bitmap of the items never returned, so an allow list reaches it as the bitmap
    of every other item (joined with the denied ones)."""
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
        bits = _filter_bits(allow, deny, n_items)
        if bits is not None:
            denied = cp.asarray(bits)
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


def _filter_bits(allow, deny, n_items: int):
    """The host bitmap of items never returned (see recore._filters.denied_bits), or None."""
    from recore._filters import denied_bits, item_ids

    bits = None
    if deny is not None:
        bits = denied_bits(item_ids(to_host(deny), n_items, "deny"), n_items)
    if allow is not None:
        # Every item but the allowed ones; bits past the last item are never read.
        others = ~denied_bits(item_ids(to_host(allow), n_items, "allow"), n_items)
        bits = others if bits is None else bits | others
    return bits


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


# -- SGD epochs, as recore.SGD runs them ------------------------------------------------------


def sgd_state(state: dict) -> dict:
    """The state with every array but the epoch counter on the current GPU."""
    cp = _cupy()
    return {
        key: (cp.asarray(value) if isinstance(value, np.ndarray) and key != "epochs_done" else value)
        for key, value in state.items()
    }


def sgd_held_out(triples, state: dict):
    """Held-out ratings on the GPU (the GPU keeps its rows in id order)."""
    cp = _cupy()
    return tuple(cp.asarray(np.ascontiguousarray(t)) for t in triples)


def _model_arguments(settings, state: dict, *, user_biases: bool) -> dict:
    users = _device.require_array(state["user_factors"], "user_factors", np.float32, 2, writable=True)
    items = _device.require_array(state["item_factors"], "item_factors", np.float32, 2, writable=True)
    device = _device.check_same_device({"user_factors": users, "item_factors": items})
    return dict(
        device=device,
        users=users,
        items=items,
        user_biases=state["user_biases"] if (settings.biases and user_biases) else None,
        item_biases=state["item_biases"] if settings.biases else None,
    )


def sgd_squared_epochs(grid, state: dict, settings, rng, threads: int):
    """The ratings in the CPU engine's grid order (the same random bands), on the GPU, and a
    function running one epoch."""
    cp = _cupy()

    n_users, n_items = len(grid.user_rank), len(grid.item_rank)
    # The GPU keeps its rows in id order: the grid's ranks back to ids.
    users = np.argsort(grid.user_rank).astype(np.int32)[grid.users]
    items = np.argsort(grid.item_rank).astype(np.int32)[grid.items]
    d_users = cp.asarray(users)
    d_items = cp.asarray(items)
    d_values = cp.asarray(grid.values)
    count = len(grid.values)
    slow_factors = settings.slow_factors

    def epoch() -> float:
        arguments = _model_arguments(settings, state, user_biases=True)
        users_array, items_array = arguments["users"], arguments["items"]
        squared_error = _engine().sgd_squared_epoch(
            arguments["device"], _device.current_stream(), _pointer(d_users), _pointer(d_items), _pointer(d_values),
            count, users_array.pointer, n_users, items_array.pointer, n_items, settings.factors, users_array.shape[1],
            _pointer(arguments["user_biases"]), _pointer(arguments["item_biases"]), float(state["global_mean"]),
            _pointer(state["user_rate_sums"]), _pointer(state["item_rate_sums"]), slow_factors,
            bool(state["epochs_done"][0] == 0), float(settings.learning_rate), float(settings.regularization),
            float(settings.bias_regularization), int(rng.integers(0, 2**63)),
        )  # fmt: skip
        state["epochs_done"][0] += 1
        return float(np.sqrt(squared_error / max(count, 1)))

    return epoch


def sgd_bpr_epochs(matrix, state: dict, settings, rng):
    cp = _cupy()

    n_users, n_items = matrix.shape
    indptr = cp.asarray(matrix.indptr.astype(np.int64))
    indices = cp.asarray(matrix.indices.astype(np.int32))
    nnz = int(matrix.nnz)
    popularity = settings.popularity_negatives

    def epoch() -> float:
        arguments = _model_arguments(settings, state, user_biases=False)
        users_array, items_array = arguments["users"], arguments["items"]
        auc = _engine().sgd_bpr_epoch(
            arguments["device"], _device.current_stream(), _pointer(indptr), _pointer(indices), nnz, nnz,
            popularity, int(rng.integers(0, 2**63)), users_array.pointer, n_users, items_array.pointer, n_items,
            settings.factors, users_array.shape[1], _pointer(arguments["item_biases"]),
            _pointer(state["user_rate_sums"]), _pointer(state["item_rate_sums"]), float(settings.learning_rate),
            float(settings.regularization), float(settings.bias_regularization),
        )  # fmt: skip
        state["epochs_done"][0] += 1
        return float(auc)

    return epoch


def sgd_rmse_of(triples, state: dict, settings) -> float:
    users, items, values = triples
    arguments = _model_arguments(settings, state, user_biases=True)
    users_array, items_array = arguments["users"], arguments["items"]
    return float(
        _engine().sgd_rmse(
            arguments["device"], _device.current_stream(), _pointer(users), _pointer(items), _pointer(values),
            int(values.shape[0]), users_array.pointer, users_array.shape[0], items_array.pointer,
            items_array.shape[0], settings.factors, users_array.shape[1], _pointer(arguments["user_biases"]),
            _pointer(arguments["item_biases"]), float(state["global_mean"]),
        )  # fmt: skip
    )


# -- recore.topk on GPU arrays ----------------------------------------------------------------


def search(queries, items, k, *, metric, exclude, allow, deny, precision, check_finite):
    """:func:`recore.topk` for GPU arrays: checked here, searched by the CUDA engine, cupy out."""
    from recore import cuda
    from recore._filters import unit_rows
    from recore._validation import check_bool, check_choice, check_int

    for argument, value in (("queries", queries), ("items", items)):
        if not _device.is_gpu_array(value):
            raise TypeError(
                f"queries and items must both be GPU arrays or both numpy arrays; {argument} is {type(value).__name__}"
            )
    cuda.require("device")
    cp = _cupy()
    k = check_int(k, "k", minimum=1)
    check_choice(metric, "metric", ("dot", "cosine"))
    precision = check_choice(precision, "precision", ("float32", "bfloat16"))
    check_finite = check_bool(check_finite, "check_finite")
    single = len(_device.describe(queries, "queries").shape) == 1
    queries, items = _device.as_cupy(queries), _device.as_cupy(items)
    if single:
        queries = queries[None, :]
    _device.require_array(queries, "queries", np.float32, 2)
    _device.require_array(items, "items", np.float32, 2)
    if queries.shape[1] != items.shape[1]:  # in the CPU engine's words
        raise ValueError(
            f"queries and items must have the same number of factors, got {queries.shape[1]} and {items.shape[1]}"
        )
    if check_finite:
        for argument, value in (("queries", queries), ("items", items)):
            if not bool(cp.isfinite(value).all()):
                raise ValueError(f"{argument} must not contain NaN or infinity")
    if metric == "cosine":
        # The CPU's normalization, operation for operation: equal cosine scores on both devices.
        queries, items = unit_rows(cp, queries), unit_rows(cp, items)
    ids, scores = topk(queries, items, k, exclude=exclude, deny=deny, allow=allow, precision=precision)
    return (ids[0], scores[0]) if single else (ids, scores)
