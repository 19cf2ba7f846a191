"""Alternating least squares for implicit feedback (Hu, Koren & Volinsky 2008) and for
explicit ratings."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from recore import _device, kernels
from recore._estimator import Estimator
from recore._recommend import Recommender
from recore._threads import engine_threads
from recore._validation import (
    as_user_items,
    check_bool,
    check_choice,
    check_float,
    check_float_dtype,
    check_ids,
    check_int,
    check_random_state,
    transpose_csr,
)

__all__ = ["ALS"]


class ALS(Recommender, Estimator):
    """Matrix factorization by alternating least squares.

    ``fit`` learns ``user_factors_`` (n_users x factors) and ``item_factors_``
    (n_items x factors) so that ``user_factors_ @ item_factors_.T`` approximates the
    interactions, alternating exact (or conjugate-gradient) least-squares solves of one
    side with the other held fixed.

    Parameters
    ----------
    factors : int, default 64
        Latent dimensions.
    regularization : float, default 0.01
        L2 weight ``lambda`` on both factor matrices.
    alpha : float, default 1.0
        Confidence scale for implicit feedback (see ``confidence``).
    iterations : int, default 15
        Full iterations (users, then items).
    solver : {"cg", "cholesky"}, default "cg"
        Conjugate gradient warm-started from the current factors, or an exact Cholesky
        solve per row.
    cg_steps : int, default 3
        Conjugate-gradient steps per row and half-iteration.
    feedback : {"implicit", "explicit"}, default "implicit"
        ``"implicit"``: every stored entry (u, i) is an observation with preference 1, every
        other entry has preference 0 and confidence 1; values must be >= 0. ``"explicit"``:
        stored values are ratings, fitted by least squares over stored entries only.
    confidence : {"linear", "scaled"}, default "linear"
        How an implicit value r becomes a confidence: ``"linear"`` c = 1 + alpha * r (Hu et
        al.); ``"scaled"`` c = alpha * r, for values that already are confidences (with
        alpha=1 they are used as given). A stored zero is an observation with c = 1
        (linear) or c = 0 (scaled).
    weighted_regularization : bool, default False
        Scale lambda by each row's number of entries (weighted-lambda regularization,
        Zhou et al. 2008). Meant for explicit feedback.
    dtype : {"float32", "float64"}, default "float32"
        Precision of the factors and of the arithmetic.
    num_threads : int, default 0
        Threads; 0 uses all cores. The factors are bitwise identical for any value.
    random_state : None, int or numpy.random.Generator
        Seeds the initial factors: uniform in [0, 0.01), drawn in float32 whatever the
        dtype, users first.
    calculate_training_loss : bool, default False
        Compute the full training objective after each iteration (reported to the
        callback and the progress bar, kept in ``loss_history_``).
    device : {"auto", "cpu", "cuda"}, default "auto"
        Where to train. ``"auto"`` follows the data: host (numpy / scipy) data trains on the
        CPU, GPU data (a ``cupyx.scipy.sparse`` matrix) on the GPU. ``"cuda"`` trains on the
        current GPU whatever the data (host data is copied there once) and raises
        RuntimeError when the CUDA engine is unavailable (see :mod:`recore.cuda`). A GPU fit
        uses float32 and keeps the factors as cupy arrays; see :meth:`to_device`. The
        hyperparameters mean the same on both devices; GPU results are deterministic on a
        given GPU and agree with the CPU's to float32 rounding.

    Attributes
    ----------
    user_factors_ : ndarray (n_users, factors), C-contiguous
    item_factors_ : ndarray (n_items, factors), C-contiguous
    loss_history_ : list of float
        The objective after each iteration, when ``calculate_training_loss`` is set.
    """

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.01,
        alpha: float = 1.0,
        iterations: int = 15,
        solver: str = "cg",
        cg_steps: int = 3,
        feedback: str = "implicit",
        confidence: str = "linear",
        weighted_regularization: bool = False,
        dtype="float32",
        num_threads: int = 0,
        random_state=None,
        calculate_training_loss: bool = False,
        device: str = "auto",
    ):
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.solver = solver
        self.cg_steps = cg_steps
        self.feedback = feedback
        self.confidence = confidence
        self.weighted_regularization = weighted_regularization
        self.dtype = dtype
        self.num_threads = num_threads
        self.random_state = random_state
        self.calculate_training_loss = calculate_training_loss
        self.device = device
        self._check_params()

    def _check_params(self) -> None:
        check_int(self.factors, "factors", 1)
        check_float(self.regularization, "regularization", 0.0)
        check_float(self.alpha, "alpha", 0.0)
        check_int(self.iterations, "iterations", 0)
        check_choice(self.solver, "solver", ("cg", "cholesky"))
        check_int(self.cg_steps, "cg_steps", 1)
        check_choice(self.feedback, "feedback", ("implicit", "explicit"))
        check_choice(self.confidence, "confidence", ("linear", "scaled"))
        check_bool(self.weighted_regularization, "weighted_regularization")
        check_float_dtype(self.dtype)
        check_int(self.num_threads, "num_threads", 0)
        check_random_state(self.random_state)  # type check only; the generator is made in fit
        check_bool(self.calculate_training_loss, "calculate_training_loss")
        check_choice(self.device, "device", _device.DEVICES)

    # -- fitting --------------------------------------------------------------------------

    def fit(self, user_items, *, callback: Callable | None = None, progress: bool = False) -> ALS:
        """Learn the factors from a users x items interaction matrix.

        Parameters
        ----------
        user_items : scipy.sparse matrix or array, or 2-D numpy array (n_users, n_items)
            Any format; int32 or int64 indices; any real dtype. Converted once to a
            canonical CSR of ``dtype`` (duplicates summed); a canonical CSR of that dtype
            is used without a copy.
        callback : callable, optional
            Called after each iteration as ``callback(iteration, elapsed_seconds, loss)``
            (loss is None unless ``calculate_training_loss``).
        progress : bool, default False
            Show a tqdm progress bar.

        Returns
        -------
        self
        """
        self._check_params()
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        dtype = check_float_dtype(self.dtype)
        implicit = self.feedback == "implicit"
        if _device.resolve_device(self.device, user_items, names=("user_items",)) == "cuda":
            return self._fit_cuda(user_items, dtype, callback, progress)
        user_items = as_user_items(user_items, dtype, allow_negative=not implicit)
        self._check_magnitudes(user_items, dtype)
        item_users = transpose_csr(user_items)
        n_users, n_items = user_items.shape

        user_factors, item_factors = self._initial_factors(n_users, n_items, dtype)

        def half_steps():
            self._half_step(user_items, item_factors, user_factors)
            self._half_step(item_users, user_factors, item_factors)

        with engine_threads():
            self._iterate(
                np, user_factors, item_factors, half_steps, lambda: self._loss(user_items, user_factors, item_factors),
                callback, progress, "ALS", f"{dtype}; rescale the values or use dtype='float64'",
            )  # fmt: skip
        return self

    def _iterate(self, xp, user_factors, item_factors, half_steps, loss_now, callback, progress, label, overflow_hint):
        """The iterations of a fit, on either device (``xp``: numpy or cupy): both half-steps,
        the loss, progress and callback, then the fitted state."""
        from tqdm.auto import tqdm

        history = []
        # Both factor matrices as they were before the current iteration: on Ctrl-C inside an
        # iteration they are put back, so the model always holds the factors of the last
        # completed iteration.
        users_before, items_before = xp.empty_like(user_factors), xp.empty_like(item_factors)
        in_iteration = False
        try:
            with tqdm(total=self.iterations, disable=not progress, unit="it", desc=label) as bar:
                for iteration in range(self.iterations):
                    start = time.perf_counter()
                    xp.copyto(users_before, user_factors)
                    xp.copyto(items_before, item_factors)
                    in_iteration = True
                    half_steps()
                    in_iteration = False
                    elapsed = time.perf_counter() - start
                    loss = None
                    if self.calculate_training_loss:
                        loss = loss_now()
                        history.append(loss)
                        bar.set_postfix(loss=f"{loss:.6g}")
                    bar.update(1)
                    if callback is not None:
                        callback(iteration, elapsed, loss)
        except KeyboardInterrupt:
            if in_iteration:
                xp.copyto(user_factors, users_before)
                xp.copyto(item_factors, items_before)
            self._set_fitted(user_factors, item_factors, history)
            raise
        if not (bool(xp.isfinite(user_factors).all()) and bool(xp.isfinite(item_factors).all())):
            raise ValueError(
                "training overflowed: user_items and the hyperparameters give factors beyond the range of "
                + overflow_hint
            )
        self._set_fitted(user_factors, item_factors, history)

    def _fit_cuda(self, user_items, dtype, callback, progress) -> ALS:
        """fit on the GPU: the same iterations, initial factors and objective as on the CPU."""
        from recore import _gpu

        if dtype != np.float32:
            raise ValueError(f"the CUDA engine trains in float32: dtype must be 'float32' with device='cuda', got {dtype}")
        import cupy as cp

        implicit = self.feedback == "implicit"
        rows = _gpu.device_csr(user_items, "user_items", allow_negative=not implicit)
        if rows.nnz:
            self._check_largest_value(float(cp.abs(rows.data).max()), np.float32, remedy="rescale them")
        columns = rows.transpose()
        n_users, n_items = rows.shape
        users_host, items_host = self._initial_factors(n_users, n_items, np.float32)
        user_factors, item_factors = cp.asarray(users_host), cp.asarray(items_host)
        objective = self._objective()
        del objective["num_threads"]

        def half_steps():
            for fixed, target, matrix in ((item_factors, user_factors, rows), (user_factors, item_factors, columns)):
                gram = _gpu.gram_matrix(fixed) if implicit else None
                _gpu.als_half_step(matrix, fixed, gram, target, solver=self.solver, cg_steps=self.cg_steps, **objective)

        self._iterate(
            cp, user_factors, item_factors, half_steps,
            lambda: _gpu.als_loss(rows, user_factors, item_factors, **objective),
            callback, progress, "ALS (cuda)", "float32; rescale the values",
        )  # fmt: skip
        return self

    # Values (or confidences) beyond these overflow the normal equations, whose entries
    # grow with their squares times the number of entries in a row.
    _MAGNITUDE_LIMITS = {np.dtype(np.float32): 1e15, np.dtype(np.float64): 1e150}

    def _check_magnitudes(self, user_items, dtype) -> None:
        if user_items.nnz == 0:
            return
        self._check_largest_value(float(np.abs(user_items.data).max()), dtype)

    def _check_largest_value(self, largest: float, dtype, remedy: str = "rescale them or use dtype='float64'") -> None:
        """Raises ValueError when values up to ``largest`` would overflow the arithmetic
        (shared with the GPU fit and the distributed fit, which learns the largest value
        shard by shard)."""
        if self.feedback == "implicit":
            largest = max(largest, float(self.alpha) * largest + 1.0)
        if largest > self._MAGNITUDE_LIMITS[np.dtype(dtype)]:
            raise ValueError(
                f"user_items values (times alpha for implicit feedback) up to {largest:.3g} overflow "
                f"{np.dtype(dtype)} arithmetic; {remedy}"
            )

    def _set_fitted(self, user_factors, item_factors, history) -> None:
        self.user_factors_ = user_factors
        self.item_factors_ = item_factors
        self.loss_history_ = history

    def _initial_factors(self, n_users: int, n_items: int, dtype: np.dtype):
        # Drawn in float32 whatever the dtype, so that float32 and float64 fits start from
        # the same numbers.
        rng = check_random_state(self.random_state)
        scale = np.float32(0.01)
        users = (rng.random((n_users, self.factors), dtype=np.float32) * scale).astype(dtype, copy=False)
        items = (rng.random((n_items, self.factors), dtype=np.float32) * scale).astype(dtype, copy=False)
        return users, items

    def _objective(self) -> dict:
        """The keyword arguments that define the objective, as the kernels take them."""
        return dict(
            regularization=self.regularization,
            alpha=self.alpha,
            feedback=self.feedback,
            confidence=self.confidence,
            weighted_regularization=self.weighted_regularization,
            num_threads=self.num_threads,
        )

    _fitted_attributes = ("user_factors_", "item_factors_", "loss_history_")

    def _fitted_state(self) -> dict:
        state = super()._fitted_state()
        state["loss_history_"] = np.asarray(self.loss_history_, dtype=np.float64)
        return state

    def _check_restored(self, state: dict) -> None:
        super()._check_restored(state)
        dtype = check_float_dtype(self.dtype)
        for name in ("user_factors_", "item_factors_"):
            factors = state[name]
            if factors.dtype != dtype or factors.ndim != 2 or factors.shape[1] != self.factors:
                raise ValueError(
                    f"{name} must be {dtype} of shape (n, {self.factors}), got {factors.dtype} {factors.shape}"
                )
            if not np.isfinite(factors).all():
                raise ValueError(f"{name} contains NaN or infinity")
            state[name] = np.ascontiguousarray(factors)
        history = state["loss_history_"]
        if history.dtype != np.float64 or history.ndim != 1:
            raise ValueError("loss_history_ must be a 1-D float64 array")
        state["loss_history_"] = [float(v) for v in history]

    def _fold_in_objective(self) -> dict:
        return self._objective()

    def _half_step(self, rows, fixed, target) -> None:
        gram = kernels.gram_matrix(fixed, num_threads=self.num_threads) if self.feedback == "implicit" else None
        kernels.als_half_step(
            rows, fixed, gram, target, solver=self.solver, cg_steps=self.cg_steps, **self._objective()
        )

    def _loss(self, user_items, user_factors, item_factors) -> float:
        return kernels.als_loss(user_items, user_factors, item_factors, **self._objective())

    # -- using a fitted model -------------------------------------------------------------

    def loss(self, user_items) -> float:
        """The training objective of the fitted factors on ``user_items`` (see
        :func:`recore.kernels.als_loss`)."""
        self._check_fitted()
        dtype = self.user_factors_.dtype
        user_items = as_user_items(user_items, dtype, allow_negative=self.feedback != "implicit")
        if user_items.shape != (self.user_factors_.shape[0], self.item_factors_.shape[0]):
            raise ValueError(
                f"user_items has shape {user_items.shape}, the model was fitted on "
                f"{(self.user_factors_.shape[0], self.item_factors_.shape[0])}"
            )
        return self._loss(user_items, self.user_factors_, self.item_factors_)

    def predict(self, users, items) -> np.ndarray:
        """Predicted values ``user_factors_[u] . item_factors_[i]`` for pairs of ids.

        For explicit feedback these are predicted ratings; for implicit feedback, scores
        (predicted preferences).

        Parameters
        ----------
        users, items : int or array-like of int, broadcastable to one shape

        Returns
        -------
        ndarray of the factors' dtype, of the broadcast shape
        """
        self._check_fitted()
        users = check_ids(users, self.user_factors_.shape[0], "users")
        items = check_ids(items, self.item_factors_.shape[0], "items")
        try:
            users, items = np.broadcast_arrays(users, items)
        except ValueError as error:
            raise ValueError(f"users and items must have broadcastable shapes: {error}") from None
        return np.einsum("...f,...f->...", self.user_factors_[users], self.item_factors_[items])
