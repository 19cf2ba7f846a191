"""recore.SGD's epochs on the GPU (see recore.SGD, device="cuda"): the training state as
cupy arrays and one CUDA engine call per epoch."""

from __future__ import annotations

import numpy as np

from recore import _device


def _engine():
    from recore import _cuda

    return _cuda


def _pointer(array) -> int:
    return 0 if array is None else int(array.__cuda_array_interface__["data"][0])


def to_device_state(state: dict) -> dict:
    """The state with every array but the epoch counter on the current GPU."""
    import cupy as cp

    return {
        key: (cp.asarray(value) if isinstance(value, np.ndarray) and key != "epochs_done" else value)
        for key, value in state.items()
    }


def device_triples(triples):
    import cupy as cp

    return tuple(cp.asarray(np.ascontiguousarray(t)) for t in triples)


def _model_arguments(model, state: dict, *, user_biases: bool) -> dict:
    users = _device.require_array(state["user_factors"], "user_factors", np.float32, 2, writable=True)
    items = _device.require_array(state["item_factors"], "item_factors", np.float32, 2, writable=True)
    device = _device.check_same_device({"user_factors": users, "item_factors": items})
    return dict(
        device=device,
        users=users,
        items=items,
        user_biases=state["user_biases"] if (model.biases and user_biases) else None,
        item_biases=state["item_biases"] if model.biases else None,
    )


def squared_epochs(model, matrix, rng, threads: int, state: dict):
    """The ratings in the CPU engine's grid order (the same random bands), on the GPU, and a
    function running one epoch."""
    import cupy as cp

    n_users, n_items = matrix.shape
    _, ranked_users, ranked_items, values, _, user_rank, item_rank = model._rating_grid(matrix, rng, threads)
    # The GPU keeps its rows in id order: the grid's ranks back to ids.
    users = np.argsort(user_rank).astype(np.int32)[ranked_users]
    items = np.argsort(item_rank).astype(np.int32)[ranked_items]
    d_users = cp.asarray(users)
    d_items = cp.asarray(items)
    d_values = cp.asarray(values)
    count = len(values)
    slow_factors = model._slow_factors()

    def epoch() -> float:
        arguments = _model_arguments(model, state, user_biases=True)
        users_array, items_array = arguments["users"], arguments["items"]
        squared_error = _engine().sgd_squared_epoch(
            arguments["device"], _device.current_stream(), _pointer(d_users), _pointer(d_items), _pointer(d_values),
            count, users_array.pointer, n_users, items_array.pointer, n_items, model.factors, users_array.shape[1],
            _pointer(arguments["user_biases"]), _pointer(arguments["item_biases"]), float(state["global_mean"]),
            _pointer(state["user_rate_sums"]), _pointer(state["item_rate_sums"]), slow_factors,
            bool(state["epochs_done"][0] == 0), float(model.learning_rate), float(model.regularization),
            float(model.bias_regularization), int(rng.integers(0, 2**63)),
        )  # fmt: skip
        state["epochs_done"][0] += 1
        return float(np.sqrt(squared_error / max(count, 1)))

    return epoch


def bpr_epochs(model, matrix, rng, state: dict):
    import cupy as cp

    n_users, n_items = matrix.shape
    indptr = cp.asarray(matrix.indptr.astype(np.int64))
    indices = cp.asarray(matrix.indices.astype(np.int32))
    nnz = int(matrix.nnz)
    popularity = model.negatives == "popularity"

    def epoch() -> float:
        arguments = _model_arguments(model, state, user_biases=False)
        users_array, items_array = arguments["users"], arguments["items"]
        auc = _engine().sgd_bpr_epoch(
            arguments["device"], _device.current_stream(), _pointer(indptr), _pointer(indices), nnz, nnz,
            popularity, int(rng.integers(0, 2**63)), users_array.pointer, n_users, items_array.pointer, n_items,
            model.factors, users_array.shape[1], _pointer(arguments["item_biases"]),
            _pointer(state["user_rate_sums"]), _pointer(state["item_rate_sums"]), float(model.learning_rate),
            float(model.regularization), float(model.bias_regularization),
        )  # fmt: skip
        state["epochs_done"][0] += 1
        return float(auc)

    return epoch


def rmse(model, triples, state: dict) -> float:
    users, items, values = triples
    arguments = _model_arguments(model, state, user_biases=True)
    users_array, items_array = arguments["users"], arguments["items"]
    return float(
        _engine().sgd_rmse(
            arguments["device"], _device.current_stream(), _pointer(users), _pointer(items), _pointer(values),
            int(values.shape[0]), users_array.pointer, users_array.shape[0], items_array.pointer,
            items_array.shape[0], model.factors, users_array.shape[1], _pointer(arguments["user_biases"]),
            _pointer(arguments["item_biases"]), float(state["global_mean"]),
        )  # fmt: skip
    )
