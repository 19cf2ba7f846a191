"""Alternating least squares for implicit feedback (Hu, Koren & Volinsky 2008, with the
unobserved weight and frequency-scaled regularization of Rendle et al. 2022 and the iALS++
subspace solver of Rendle et al. 2021) and for explicit ratings."""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

from recore import backends
from recore._estimator import Estimator
from recore._iterations import iteration_callback, run_iterations
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
)

__all__ = ["ALS"]


class ALS(Recommender, Estimator):
    """Matrix factorization by alternating least squares.

    ``fit`` learns ``user_factors_`` (n_users x factors) and ``item_factors_``
    (n_items x factors) so that ``user_factors_ @ item_factors_.T`` approximates the
    interactions, alternating exact (or iterative) least-squares solves of one side with
    the other held fixed.

    The objective for implicit feedback, with confidence ``c_ui`` on every observed entry
    and weight ``alpha0`` (``unobserved_weight``) on every unobserved one, is::

        L = sum_{(u,i) observed} c_ui (1 - x_u . y_i)^2 + alpha0 sum_{(u,i) unobserved} (x_u . y_i)^2
            + sum_u lambda_u |x_u|^2 + sum_i lambda_i |y_i|^2,
        lambda_u = regularization * (n_u + alpha0 * n_items) ** nu,
        lambda_i = regularization * (n_i + alpha0 * n_users) ** nu,

    ``n_u`` (``n_i``) the user's (item's) observed entries and ``nu`` the
    ``regularization_exponent`` (Rendle et al. 2022, "Revisiting the Performance of iALS on
    Item Recommendation Benchmarks"). The defaults ``alpha0 = 1``, ``nu = 0`` are the model of
    Hu et al. with plain L2. Each user then solves
    ``(alpha0 YtY + Y_u^T (C_u - alpha0 I) Y_u + lambda_u I) x_u = Y_u^T C_u 1``.
    For explicit feedback ``L = sum_{observed} (r_ui - x_u . y_i)^2 + sum_u lambda_u |x_u|^2
    + sum_i lambda_i |y_i|^2`` with ``lambda_u = regularization * n_u ** nu`` (no unobserved
    entries, so no ``alpha0``).

    Parameters
    ----------
    factors : int, default 64
        Latent dimensions.
    regularization : float, default 0.01
        L2 weight ``lambda`` on both factor matrices (scaled per row by
        ``regularization_exponent`` or ``weighted_regularization``).
    alpha : float, default 1.0
        Confidence scale for implicit feedback (see ``confidence``).
    iterations : int, default 15
        Full iterations (users, then items).
    solver : {"cg", "cholesky", "subspace"}, default "cg"
        ``"cg"``: conjugate gradient warm-started from the current factors, ``cg_steps`` steps
        per row. ``"cholesky"``: the exact solve per row (``f^3 / 3`` a row). ``"subspace"``:
        iALS++ (Rendle et al. 2021, "iALS++: Speeding up Matrix Factorization with Subspace
        Optimization"): block coordinate descent warm-started from the current factors,
        ``subspace_sweeps`` passes over blocks of ``block_size`` factors, each block's small
        system solved exactly with the other factors fixed, keeping every row's predictions of
        its entries up to date between blocks. Every block step lowers the objective (the
        training loss never increases), and more sweeps converge to the exact solve.
    cg_steps : int, default 3
        Conjugate-gradient steps per row and half-iteration (``solver="cg"``).
    feedback : {"implicit", "explicit"}, default "implicit"
        ``"implicit"``: every stored entry (u, i) is an observation with preference 1, every
        other entry has preference 0 and weight ``unobserved_weight``; values must be >= 0.
        ``"explicit"``: stored values are ratings, fitted by least squares over stored
        entries only.
    confidence : {"linear", "scaled"}, default "linear"
        How an implicit value r becomes a confidence: ``"linear"`` c = 1 + alpha * r (Hu et
        al.); ``"scaled"`` c = alpha * r, for values that already are confidences (with
        alpha=1 they are used as given). A stored zero is an observation with c = 1
        (linear) or c = 0 (scaled). An observed entry's confidence replaces the unobserved
        weight, it is not added to it: with ``"scaled"`` confidences below
        ``unobserved_weight`` an observed entry counts less than an unobserved one (and a
        stored zero not at all), which is allowed.
    weighted_regularization : bool, default False
        Scale lambda by each row's number of entries (weighted-lambda regularization,
        Zhou et al. 2008). Meant for explicit feedback, where it equals
        ``regularization_exponent=1``; not together with ``regularization_exponent``.
    dtype : {"float32", "float64"}, default "float32"
        Precision of the factors and of the arithmetic.
    num_threads : int, default 0
        Threads; 0 uses all cores. The factors are bitwise identical for any value.
    random_state : None, int or numpy.random.Generator
        Seeds the initial factors: uniform in [0, 0.01), drawn in float32 whatever the
        dtype, users first.
    calculate_training_loss : bool, default False
        Compute the full training objective after each iteration (reported to the
        callback and the progress bar, kept in ``history_["loss"]``).
    device : {"auto", "cpu", "cuda"}, default "auto"
        Where to train. ``"auto"`` follows the data: host (numpy / scipy) data trains on the
        CPU, GPU data (a ``cupyx.scipy.sparse`` matrix) on the GPU. ``"cuda"`` trains on the
        current GPU whatever the data (host data is copied there once) and raises
        RuntimeError when the CUDA engine is unavailable (see :mod:`recore.cuda`). A GPU fit
        uses float32 and keeps the factors as cupy arrays; see :meth:`to_device`. The
        hyperparameters mean the same on both devices; GPU results are deterministic on a
        given GPU and agree with the CPU's to float32 rounding. ``solver="subspace"`` runs on
        the CPU only (a GPU fit refuses it with ValueError).
    unobserved_weight : float, default 1.0
        ``alpha0``, the weight of every unobserved entry (implicit feedback; explicit feedback
        has none and refuses any other value than 1.0). Rendle et al. tune it well below 1
        on MovieLens-20M and the Million Song Dataset.
    regularization_exponent : float, default 0.0
        ``nu`` >= 0 in ``lambda_u = regularization * (n_u + alpha0 * n_items) ** nu``
        (frequency-scaled regularization); 0 is plain L2. Typical values: 0.5 to 1.
    block_size : int, default 32
        Factors per block of the subspace solver (``factors`` or more: a single block, the
        exact solve). Smaller blocks make a sweep cheaper and each sweep's progress smaller.
    subspace_sweeps : int, default 1
        Passes over all blocks per row and half-iteration (``solver="subspace"``).

    Attributes
    ----------
    user_factors_ : ndarray (n_users, factors), C-contiguous
    item_factors_ : ndarray (n_items, factors), C-contiguous
    history_ : dict of lists
        Per iteration: ``"seconds"`` (the time of both half-steps) and, with
        ``calculate_training_loss``, ``"loss"`` (the objective after the iteration).
    iterations_completed_ : int
        Iterations the factors went through (fewer than ``iterations`` after Ctrl-C).
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
        unobserved_weight: float = 1.0,
        regularization_exponent: float = 0.0,
        block_size: int = 32,
        subspace_sweeps: int = 1,
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
        self.unobserved_weight = unobserved_weight
        self.regularization_exponent = regularization_exponent
        self.block_size = block_size
        self.subspace_sweeps = subspace_sweeps
        self._check_params()

    def _check_params(self) -> None:
        check_int(self.factors, "factors", 1)
        check_float(self.regularization, "regularization")
        check_float(self.alpha, "alpha")
        check_int(self.iterations, "iterations", 0)
        check_choice(self.solver, "solver", ("cg", "cholesky", "subspace"))
        check_int(self.cg_steps, "cg_steps")
        check_choice(self.feedback, "feedback", ("implicit", "explicit"))
        check_choice(self.confidence, "confidence", ("linear", "scaled"))
        check_bool(self.weighted_regularization, "weighted_regularization")
        check_float_dtype(self.dtype)
        check_int(self.num_threads, "num_threads")
        check_random_state(self.random_state)  # type check only; the generator is made in fit
        check_bool(self.calculate_training_loss, "calculate_training_loss")
        check_choice(self.device, "device", backends.DEVICES)
        check_float(self.unobserved_weight, "unobserved_weight")
        check_float(self.regularization_exponent, "regularization_exponent")
        check_int(self.block_size, "block_size")
        check_int(self.subspace_sweeps, "subspace_sweeps")
        # The values: the engines' own check, the one every ALS entry point makes.
        backends.get("cpu").check_als_options(**self._solver_options(), **self._objective())

    def _solver_options(self) -> dict:
        """The keyword arguments that choose how the kernels solve each row."""
        return dict(
            solver=self.solver, cg_steps=self.cg_steps, block_size=self.block_size, subspace_sweeps=self.subspace_sweeps
        )

    # -- fitting --------------------------------------------------------------------------

    def fit(self, user_items, *, callback: Callable | None = None, progress: bool = False) -> ALS:
        """Learn the factors from a users x items interaction matrix.

        Parameters
        ----------
        user_items : scipy.sparse matrix or array, or 2-D numpy array (n_users, n_items)
            Any format; int32 or int64 indices; any real dtype. Converted once to a
            canonical CSR of ``dtype`` (duplicates summed); a canonical CSR of that dtype
            is used without a copy. A ``cupyx.scipy.sparse`` matrix trains on the GPU.
        callback : callable, optional
            Called after each iteration as ``callback(iteration, metrics)``, ``metrics`` a
            dict with ``"seconds"`` and, with ``calculate_training_loss``, ``"loss"``.
        progress : bool, default False
            Show a tqdm progress bar.

        Returns
        -------
        self
        """
        self._check_params()
        callback = iteration_callback(
            callback, lambda function, iteration, metrics: function(iteration, metrics["seconds"], metrics.get("loss")), 3
        )
        dtype = check_float_dtype(self.dtype)
        backend = backends.select(self.device, user_items, names=("user_items",))
        backend.check_als_options(**self._solver_options(), **self._objective())  # what this engine lacks
        rows = backend.interactions(user_items, dtype, allow_negative=self.feedback != "implicit")
        self._check_largest_value(backend.largest_abs(rows), dtype, remedy=self._overflow_remedy(backend, dtype))
        columns = backend.transpose(rows)
        n_users, n_items = rows.shape
        users, items = (backend.from_host(f) for f in self._initial_factors(n_users, n_items, dtype))
        run = _AlsRun(self, backend, rows, columns, users, items)
        label = "ALS" if backend.name == "cpu" else f"ALS ({backend.name})"
        self._iterate(run, callback, progress, label, self._overflow_remedy(backend, dtype))
        return self

    def _iterate(self, run, callback, progress: bool, label: str, overflow_remedy: str) -> None:
        """The iterations of a fit (``run``: this process's, or a cluster's), then the fitted
        state; after Ctrl-C the factors of the last completed iteration."""
        history: dict = {}
        try:
            with engine_threads():
                run_iterations(run, self.iterations, history, callback=callback, progress=progress, label=label)
        except KeyboardInterrupt:
            self._set_fitted(run.users, run.items, history)
            raise
        for factors in (run.users, run.items):
            if not bool(backends.holding(factors).xp.isfinite(factors).all()):
                raise ValueError(
                    "training overflowed: user_items and the hyperparameters give factors beyond the range of "
                    f"{factors.dtype}; {overflow_remedy}"
                )
        self._set_fitted(run.users, run.items, history)

    @staticmethod
    def _overflow_remedy(backend, dtype) -> str:
        if backend.name == "cuda" or np.dtype(dtype) == np.float64:
            return "rescale the values"
        return "rescale the values or use dtype='float64'"

    # Values (or confidences) beyond these overflow the normal equations, whose entries
    # grow with their squares times the number of entries in a row.
    _MAGNITUDE_LIMITS = {np.dtype(np.float32): 1e15, np.dtype(np.float64): 1e150}

    def _check_largest_value(self, largest: float, dtype, remedy: str = "rescale the values or use dtype='float64'") -> None:
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

    def _set_fitted(self, user_factors, item_factors, history: dict) -> None:
        self.user_factors_ = user_factors
        self.item_factors_ = item_factors
        self.history_ = history
        self.iterations_completed_ = len(history.get("seconds", []))

    @property
    def loss_history_(self) -> list:
        """Deprecated: ``history_["loss"]``."""
        warnings.warn(
            "loss_history_ is deprecated and will be removed in a future release: use history_['loss']",
            FutureWarning,
            stacklevel=2,
        )
        return list(self.history_.get("loss", []))

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
            unobserved_weight=self.unobserved_weight,
            regularization_exponent=self.regularization_exponent,
        )

    _fitted_attributes = ("user_factors_", "item_factors_")

    def _restore_fitted_state(self, state: dict) -> None:
        state = dict(state)
        if "loss_history_" in state:  # a file of an earlier release: the losses under their old name
            losses = state.pop("loss_history_")
            if losses.size:
                state["record.history.loss"] = losses
        super()._restore_fitted_state(state)

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

    def _fold_in_objective(self) -> dict:
        return self._objective()

    def _loss(self, user_items, user_factors, item_factors) -> float:
        return backends.get("cpu").als_loss(user_items, user_factors, item_factors, **self._objective())

    # -- using a fitted model -------------------------------------------------------------

    def loss(self, user_items) -> float:
        """The training objective of the fitted factors on ``user_items``.

        Parameters
        ----------
        user_items : sparse matrix or 2-D array (n_users, n_items)
            The interactions, of the shape the model was fitted on.

        Returns
        -------
        float
            The full objective (see :func:`recore.kernels.als_loss`).
        """
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
        with self._serving_lock():  # partial_fit_users writes user rows in place
            user_rows, item_rows = self.user_factors_[users], self.item_factors_[items]
        return np.einsum("...f,...f->...", user_rows, item_rows)

    # -- updating a fitted model ----------------------------------------------------------

    def partial_fit_users(self, user_ids, user_items_rows) -> ALS:
        """Refits some users to their interactions, the item factors held fixed, and adds
        new users: one exact solve per user (the user half of an ALS iteration restricted to
        those rows, by Cholesky whatever ``solver`` is), written into ``user_factors_``.

        Each row is the user's complete interactions (not only the newest): the user's
        factors become the exact least-squares fit to it, with this model's objective
        (``alpha``, ``confidence``, ``regularization``, ...). The Gram matrix of the item
        factors is computed once and kept until the items change, so a user with n
        interactions costs O(n f^2 + f^3): well under a millisecond at f = 64.

        Ids past the end grow the model: ``user_factors_`` gets rows up to the largest id.
        Rows between the old end and the new ids are zero vectors, which is what a solve
        gives a user without interactions: such a user scores 0 on every item until a
        partial fit gives them interactions. Growth keeps spare rows, so adding users one at
        a time does not copy the matrix each time; the rows already there are not changed.

        Thread safety: ``recommend``, ``recommend_all``, ``recommend_vectors``,
        ``similar_items``, ``similar_users``, ``predict`` and ``fold_in`` may run in other
        threads meanwhile; each query is answered from the user's old row or the new one,
        never from a partly written row. Partial fits run one at a time. The rows are
        written in place (so ``loss`` and code reading ``user_factors_`` directly are not
        synchronized with the update); a prepared ``similar_users`` index is updated for
        the changed rows only.

        Parameters
        ----------
        user_ids : int or array-like of int
            Unique ids >= 0, one per row.
        user_items_rows : sparse matrix or 2-D array (len(user_ids), n_items)
            Each user's interactions. A matrix with fewer columns than the model has items
            (made before :meth:`partial_fit_items` added some) has no entries for the
            newer items.

        Returns
        -------
        self

        Raises
        ------
        TypeError, ValueError, IndexError
            Ids that are not unique integers >= 0, rows of the wrong shape or with values
            an implicit model refuses, before anything changes.
        """
        return self._partial_fit("user", user_ids, user_items_rows)

    def partial_fit_items(self, item_ids, item_users_rows) -> ALS:
        """Refits some items to their interactions, the user factors held fixed, and adds
        new items: :meth:`partial_fit_users` with the sides swapped.

        Each row is the item's complete interactions (its column of the user-item matrix).
        The Gram matrix of the user factors is kept until the users change (a partial fit of
        users invalidates it: the next item update computes it again, O(n_users f^2)).
        ``item_factors_`` is replaced by a new array (searches and fold-ins under way keep
        the old one; the cost is one copy of the item factors per call), and the prepared
        serving indexes (``recommend``'s, and ``similar_items``') are updated for the changed
        rows only, in place when no search is reading them. Items between the old end and
        new ids get zero vectors: they score 0 for every user, so they can be recommended
        where every other score is negative; deny them until they have interactions.

        Parameters
        ----------
        item_ids : int or array-like of int
            Unique ids >= 0, one per row.
        item_users_rows : sparse matrix or 2-D array (len(item_ids), n_users)
            Each item's interactions, one column per user.

        Returns
        -------
        self
        """
        return self._partial_fit("item", item_ids, item_users_rows)

    def _partial_fit(self, side: str, ids, rows) -> ALS:
        self._check_updatable()
        with self._update_lock():
            fixed = self.item_factors_ if side == "user" else self.user_factors_
            implicit = self.feedback == "implicit"
            ids, rows = self._partial_fit_arguments(side, ids, rows, fixed.dtype, allow_negative=not implicit)
            cpu = backends.get("cpu")
            self._check_largest_value(cpu.largest_abs(rows), fixed.dtype)
            gram = self._gram("item" if side == "user" else "user", fixed) if implicit else None
            target = np.zeros((len(ids), fixed.shape[1]), dtype=fixed.dtype)
            # A few rows gain nothing from waking every thread (the result is the same for any count).
            options = {**self._objective(), "num_threads": 1 if rows.nnz < 20_000 else self.num_threads}
            cpu.als_half_step(rows, fixed, gram, target, solver="cholesky", **options)
            self._write_rows(side, ids, {f"{side}_factors_": (target, 0)})
        return self


class _AlsRun:
    """One ALS fit in this process, on either backend (see recore._iterations)."""

    def __init__(self, model: ALS, backend, rows, columns, users, items):
        self.backend = backend
        self.rows, self.columns = rows, columns
        self.users, self.items = users, items
        self.implicit = model.feedback == "implicit"
        self.num_threads = model.num_threads
        self.objective = model._objective()
        self.solver = model._solver_options()
        self.metric_names = ("loss",) if model.calculate_training_loss else ()
        # Both factor matrices as they were before the current iteration: on Ctrl-C inside an
        # iteration they are put back, so the model always holds the factors of the last
        # completed iteration.
        xp = backend.xp
        self.users_before, self.items_before = xp.empty_like(users), xp.empty_like(items)

    def begin_iteration(self) -> None:
        xp = self.backend.xp
        xp.copyto(self.users_before, self.users)
        xp.copyto(self.items_before, self.items)

    def _half_step(self, rows, fixed, target) -> None:
        gram = self.backend.gram_matrix(fixed, num_threads=self.num_threads) if self.implicit else None
        self.backend.als_half_step(rows, fixed, gram, target, **self.solver, **self.objective)

    def iteration(self) -> dict:
        self._half_step(self.rows, self.items, self.users)
        self._half_step(self.columns, self.users, self.items)
        return {}

    def evaluate(self) -> dict:
        if not self.metric_names:
            return {}
        return {"loss": self.backend.als_loss(self.rows, self.users, self.items, **self.objective)}

    def roll_back(self) -> None:
        xp = self.backend.xp
        xp.copyto(self.users, self.users_before)
        xp.copyto(self.items, self.items_before)

    def stop(self, metrics: dict) -> bool:
        return False
