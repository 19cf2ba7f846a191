"""Matrix factorization by stochastic gradient descent: biased MF for ratings (squared loss)
and BPR for implicit feedback."""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import scipy.sparse as sp

from recore import _sgd_plan, backends
from recore._estimator import Estimator
from recore._iterations import iteration_callback, renamed_parameter, run_iterations
from recore._recommend import Recommender
from recore._threads import engine_threads
from recore._validation import (
    as_user_items,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_random_state,
)

# The grid's helpers, under the names earlier releases had here.
_interleaved_runs = _sgd_plan.interleaved_runs
_ratings_by_block = _sgd_plan.ratings_by_block


class SGD(Recommender, Estimator):
    """Matrix factorization by stochastic gradient descent.

    ``loss="squared"`` fits ratings with biased MF, r_hat = mu + b_u + b_i + p_u . q_i
    (``biases=False`` drops mu and the biases), one rating at a time. Ratings are cut into a
    grid of blocks over shuffled user and item ids; threads take blocks whose user band and
    item band no other thread holds, so no two threads touch the same factor row and the
    factors need no locks (FPSGD, Zhuang et al. 2013). Blocks are taken in a random order,
    anew every epoch; one thread takes them band by band of the side with more rows (each
    band's blocks in a random order), so that band's rows stay in cache. While training, the
    factor rows are stored in the shuffled order, so each band is one stretch of memory and
    a block, sorted by user then item, walks its rows forwards; the fitted factors are in id
    order. Within a block ratings go by user, then item, cut into four runs visited in turn,
    so that consecutive updates touch different rows and need not wait for each other.

    ``loss="bpr"`` fits implicit feedback with Bayesian Personalized Ranking (Rendle et al.
    2009): per epoch, as many (user, positive, negative) triples as there are stored
    entries, drawn and applied by Hogwild threads; negatives are uniform over items or, with
    ``negatives="popularity"``, proportional to item popularity, and are never one of the
    user's items (checked by binary search in the user's sorted row).

    Learning rate: ``schedule="adaptive"`` (default) gives every user and item row its own
    rate eta / sqrt(G), G starting at 1 and growing by the mean squared gradient of that row
    after each update (Chin et al. 2015); ``"constant"`` uses eta throughout. For squared loss
    with more than 16 factors the adaptive schedule has two speeds, as LIBMF's: the first 16
    dimensions learn alone in the first epoch, and they and the other dimensions keep separate
    sums G (so the others start the second epoch at full rate).

    Reproducibility: with ``num_threads=1`` and a fixed ``random_state`` training is bitwise
    reproducible. With more threads the order in which blocks (squared loss) or samples
    (BPR) are processed depends on thread timing, so the factors differ from run to run in
    their last digits and beyond; the data, the grid, the initial factors and the samples
    each thread draws do not.

    The defaults reach a test RMSE of 0.919 on MovieLens 100K (u1.base -> u1.test).

    Parameters
    ----------
    factors : int, default 64
    loss : {"squared", "bpr"}
    iterations : int, default 40
        Epochs: passes over the ratings (squared loss) or over as many sampled triples as
        there are stored entries (BPR).
    learning_rate : float, default 0.03 (the adaptive schedule's eta)
    regularization : float, default 0.1 (L2 on factors)
    bias_regularization : float, default 0.05
    biases : bool, default True
        Squared loss: global mean and user and item biases. BPR: item biases.
    schedule : {"adaptive", "constant"}
    negatives : {"uniform", "popularity"}, BPR only
    init_scale : float, default 0.01
        Initial factors are normal with this standard deviation (float32); biases start at 0.
        Without biases (squared loss), the first dimension starts at sqrt(mean rating)
        instead, so that the first predictions are about the mean rating.
    blocks : int, default 0
        Grid side for squared loss; 0 picks max(20, 2 * threads + 2). ``blocks=1`` visits the
        ratings in user-then-item order, one at a time.
    early_stopping : int, default 0
        With a validation set, stop after this many epochs without a better validation RMSE
        and keep the best epoch's model; 0 never stops early.
    num_threads : int, default 0 (all cores)
    random_state : None, int or numpy.random.Generator
    device : {"auto", "cpu", "cuda"}, default "auto"
        Where to train: ``"auto"`` follows the data (a ``cupyx.scipy.sparse`` matrix trains on
        the GPU), ``"cuda"`` trains on the current GPU (RuntimeError when the CUDA engine is
        unavailable). On the GPU, updates run batch-Hogwild (a warp per update, runs of
        consecutive ratings of the grid order per warp), with the same losses, schedules and
        hyperparameters; the grid is built on the host once. Factors stay cupy arrays (see
        :meth:`to_device`).

    epochs : int, optional
        Deprecated alias of ``iterations`` (a FutureWarning).

    Attributes
    ----------
    user_factors_, item_factors_ : float32 ndarrays (n, factors), C-contiguous
    user_biases_, item_biases_ : float32 ndarrays (zeros without biases)
    global_bias_ : float (mu; 0 without biases or for BPR)
    iterations_completed_ : int
        Epochs the factors went through (fewer than ``iterations`` after early stopping or Ctrl-C).
    history_ : dict of lists
        Per epoch: ``"seconds"``; ``"train_rmse"`` (each rating's error just before its
        update) and ``"validation_rmse"`` (with a validation set) for squared loss;
        ``"train_auc"`` (sampled, before each update) for BPR.
    """

    _fitted_attributes = ("user_factors_", "item_factors_", "user_biases_", "item_biases_", "global_bias_")

    def __init__(
        self,
        factors: int = 64,
        loss: str = "squared",
        iterations: int = 40,
        learning_rate: float = 0.03,
        regularization: float = 0.1,
        bias_regularization: float = 0.05,
        biases: bool = True,
        schedule: str = "adaptive",
        negatives: str = "uniform",
        init_scale: float = 0.01,
        blocks: int = 0,
        early_stopping: int = 0,
        num_threads: int = 0,
        random_state=None,
        device: str = "auto",
        *,
        epochs: int | None = None,
    ):
        self.factors = factors
        self.loss = loss
        self.iterations = renamed_parameter(iterations, epochs, "iterations", "epochs", 40)
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.bias_regularization = bias_regularization
        self.biases = biases
        self.schedule = schedule
        self.negatives = negatives
        self.init_scale = init_scale
        self.blocks = blocks
        self.early_stopping = early_stopping
        self.num_threads = num_threads
        self.random_state = random_state
        self.device = device
        self._check_params()

    def _check_params(self) -> None:
        check_int(self.factors, "factors", 1)
        check_choice(self.loss, "loss", ("squared", "bpr"))
        check_int(self.iterations, "iterations", 0)
        if check_float(self.learning_rate, "learning_rate") <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        check_float(self.regularization, "regularization", 0.0)
        check_float(self.bias_regularization, "bias_regularization", 0.0)
        check_bool(self.biases, "biases")
        check_choice(self.schedule, "schedule", ("adaptive", "constant"))
        check_choice(self.negatives, "negatives", ("uniform", "popularity"))
        check_float(self.init_scale, "init_scale", 0.0)
        check_int(self.blocks, "blocks", 0)
        check_int(self.early_stopping, "early_stopping", 0)
        check_int(self.num_threads, "num_threads", 0)
        check_random_state(self.random_state)
        check_choice(self.device, "device", backends.DEVICES)

    # Names kept working, with a FutureWarning, for one release.
    _deprecated_parameters = ("epochs",)

    @property
    def epochs(self) -> int:
        """Deprecated: ``iterations``."""
        warnings.warn("epochs is deprecated: use iterations", FutureWarning, stacklevel=2)
        return self.iterations

    @property
    def epochs_completed_(self) -> int:
        """Deprecated: ``iterations_completed_``."""
        warnings.warn("epochs_completed_ is deprecated: use iterations_completed_", FutureWarning, stacklevel=2)
        return self.iterations_completed_

    # -- fitting ------------------------------------------------------------------------------

    def fit(self, user_items, validation=None, *, callback: Callable | None = None, progress: bool = False) -> SGD:
        """Learn the factors.

        Parameters
        ----------
        user_items : sparse matrix or 2-D array (n_users, n_items)
            Ratings (squared loss: every stored entry is a rating, stored zeros included) or
            interactions (BPR: every stored entry is a positive). A ``cupyx.scipy.sparse``
            matrix trains on the GPU.
        validation : sparse matrix (n_users, n_items), optional
            Held-out ratings: their RMSE is computed after every epoch (squared loss).
        callback : callable, optional
            ``callback(iteration, metrics)`` after each epoch, ``metrics`` a dict with
            ``"seconds"`` and the epoch's entries of :attr:`history_`.
        progress : bool
            Show a tqdm progress bar.

        Returns
        -------
        self
        """
        self._check_params()
        callback = iteration_callback(callback, _legacy_callback, 4)
        squared = self.loss == "squared"
        backend = backends.select(self.device, user_items, validation, names=("user_items", "validation"))
        # The grid is built on the host for either engine.
        matrix = _host_ratings(backend, user_items, allow_negative=squared)
        if matrix.nnz and float(np.abs(matrix.data).max()) > 1e15:
            raise ValueError("user_items values beyond 1e15 overflow float32 arithmetic; rescale them")
        held_out = None
        if validation is not None:
            if not (sp.issparse(validation) or backends._device.is_gpu_sparse(validation)):
                raise TypeError(f"validation must be a sparse matrix, got {type(validation).__name__}")
            if not squared:
                raise ValueError("validation applies to loss='squared' only")
            held_out = self._validation_triples(_host_ratings(backend, validation, name="validation"), matrix.shape)
        rng = check_random_state(self.random_state)
        threads = self.num_threads or backends.get("cpu").default_threads()
        mean_value = float(np.mean(matrix.data, dtype=np.float64)) if squared and matrix.nnz else 0.0
        row_floats = backends.get("cpu").SGD_ROW_FLOATS
        n_users, n_items = matrix.shape
        stride = _sgd_plan.padded(self.factors, row_floats)
        state = self._initial_state(rng, n_users, n_items, self.factors, stride, mean_value)
        if squared and self.biases:
            state["global_mean"] = mean_value
        state = backend.sgd_state(state)
        settings = self._settings()
        if squared:
            blocks = self.blocks or max(20, 2 * threads + 2)
            grid = _sgd_plan.rating_grid(matrix, rng, blocks)
            epoch = backend.sgd_squared_epochs(grid, state, settings, rng, threads)
        else:
            epoch = backend.sgd_bpr_epochs(matrix, state, settings, rng)
        if held_out is not None:
            held_out = backend.sgd_held_out(held_out, state)  # after the epochs have placed the rows
        run = _SgdRun(self, backend, state, settings, epoch, held_out)
        history: dict = {}
        try:
            with engine_threads():
                label = "SGD" if backend.name == "cpu" else f"SGD ({backend.name})"
                run_iterations(run, self.iterations, history, callback=callback, progress=progress, label=label)
        except KeyboardInterrupt:
            # Each epoch is one engine call: an interrupt surfaces between epochs, and the
            # model keeps the factors of the last completed one.
            self._set_fitted(run.state, history)
            raise
        run.keep_best()
        self._set_fitted(run.state, history)
        return self

    def _settings(self) -> _sgd_plan.SgdSettings:
        return _sgd_plan.SgdSettings(
            factors=self.factors,
            biases=self.biases,
            learning_rate=float(self.learning_rate),
            regularization=float(self.regularization),
            bias_regularization=float(self.bias_regularization),
            slow_factors=self._slow_factors(),
            num_threads=self.num_threads,
            popularity_negatives=self.negatives == "popularity",
        )

    def _initial_state(self, rng, n_users, n_items, f, fp, mean_value: float) -> dict:
        # Factors start small and centred. Without biases (squared loss) p_u . q_i must carry
        # the ratings' mean from the start: the first dimension of every row starts at
        # sqrt(mean), so the first predictions are about the mean and the other dimensions,
        # small and random, break the symmetry.
        offset = (
            np.float32(np.sqrt(mean_value)) if (not self.biases and self.loss == "squared" and mean_value > 0) else None
        )

        def draw(n):
            values = rng.standard_normal((n, f), dtype=np.float32) * np.float32(self.init_scale)
            if offset is not None:
                values[:, 0] = offset
            return values

        def factors(n):
            padded = np.zeros((n, fp), dtype=np.float32)
            padded[:, :f] = draw(n)
            return padded

        adaptive = self.schedule == "adaptive"
        sums = 2 if self._slow_factors() else 1
        return {
            "user_factors": factors(n_users),
            "item_factors": factors(n_items),
            "user_biases": np.zeros(n_users, np.float32),
            "item_biases": np.zeros(n_items, np.float32),
            "global_mean": 0.0,
            # Epochs applied to the factors, counted by the engine before it returns.
            "epochs_done": np.zeros(1, np.int64),
            "user_rate_sums": np.ones(n_users * sums, np.float32) if adaptive else None,
            "item_rate_sums": np.ones(n_items * sums, np.float32) if adaptive else None,
        }

    def _slow_factors(self) -> int:
        """Squared loss, adaptive schedule: the first 16 dimensions learn alone in the first
        epoch and keep their own rate sums (LIBMF's two-speed schedule); 0 below 17 factors."""
        return 16 if self.loss == "squared" and self.schedule == "adaptive" and self.factors > 16 else 0

    def _validation_triples(self, validation, shape):
        if not sp.issparse(validation):
            raise TypeError(f"validation must be a scipy.sparse matrix, got {type(validation).__name__}")
        if validation.ndim != 2 or validation.shape[0] > shape[0] or validation.shape[1] > shape[1]:
            raise ValueError(f"validation has shape {validation.shape}, outside the training shape {shape}")
        held = as_user_items(validation, np.float32, name="validation").tocoo()
        return held.row.astype(np.int32), held.col.astype(np.int32), held.data.astype(np.float32)

    def _set_fitted(self, state: dict, history: dict) -> None:
        state = _sgd_plan.in_id_order(state)
        f = self.factors
        xp = backends.holding(state["user_factors"]).xp
        self.user_factors_ = xp.ascontiguousarray(state["user_factors"][:, :f])
        self.item_factors_ = xp.ascontiguousarray(state["item_factors"][:, :f])
        squared = self.loss == "squared"
        self.user_biases_ = (
            state["user_biases"].copy() if squared and self.biases else xp.zeros_like(state["user_biases"])
        )
        self.item_biases_ = state["item_biases"].copy() if self.biases else xp.zeros_like(state["item_biases"])
        self.global_bias_ = float(state["global_mean"])
        self.iterations_completed_ = int(state["epochs_done"][0])
        self.history_ = history

    # -- model files --------------------------------------------------------------------------

    def _fitted_state(self) -> dict:
        state = super()._fitted_state()
        state["global_bias_"] = np.float64(self.global_bias_)
        return state

    def _check_restored(self, state: dict) -> None:
        super()._check_restored(state)
        users, items = state["user_factors_"], state["item_factors_"]
        for name, value in (("user_factors_", users), ("item_factors_", items)):
            if value.dtype != np.float32 or value.ndim != 2 or value.shape[1] != self.factors:
                raise ValueError(f"{name} must be float32 of shape (n, {self.factors})")
            if not np.isfinite(value).all():
                raise ValueError(f"{name} contains NaN or infinity")
        for name, n in (("user_biases_", users.shape[0]), ("item_biases_", items.shape[0])):
            if state[name].dtype != np.float32 or state[name].shape != (n,) or not np.isfinite(state[name]).all():
                raise ValueError(f"{name} must be {n} finite float32 values")
        bias = state["global_bias_"]
        if bias.shape != () or not np.isfinite(bias):
            raise ValueError("global_bias_ must be a finite number")
        state["global_bias_"] = float(bias)

    # -- using a fitted model -----------------------------------------------------------------

    def predict(self, users, items) -> np.ndarray:
        """Predicted ratings (squared loss) or scores (BPR) for pairs of ids.

        Parameters
        ----------
        users, items : int or array-like of int, broadcastable to one shape

        Returns
        -------
        float32 ndarray of the broadcast shape
            ``global_bias_ + user_biases_[u] + item_biases_[i] + user_factors_[u] . item_factors_[i]``.
        """
        from recore._validation import check_ids

        self._check_fitted()
        users = check_ids(users, self.user_factors_.shape[0], "users")
        items = check_ids(items, self.item_factors_.shape[0], "items")
        try:
            users, items = np.broadcast_arrays(users, items)
        except ValueError as error:
            raise ValueError(f"users and items must have broadcastable shapes: {error}") from None
        dots = np.einsum("...f,...f->...", self.user_factors_[users], self.item_factors_[items])
        return (self.global_bias_ + self.user_biases_[users] + self.item_biases_[items] + dots).astype(np.float32)

    # Serving: queries [p_u, 1, mu + b_u] against items [q_i, b_i, 1] score exactly predict().
    def _user_vectors(self, users: np.ndarray) -> np.ndarray:
        ones = np.ones((len(users), 1), np.float32)
        offsets = (self.global_bias_ + self.user_biases_[users]).astype(np.float32)[:, None]
        return np.ascontiguousarray(np.hstack([self.user_factors_[users], ones, offsets]), dtype=np.float32)

    def _queries_from_user_vectors(self, vectors: np.ndarray) -> np.ndarray:
        # Users given by their factors alone (fold_in): user bias 0.
        n = vectors.shape[0]
        return np.ascontiguousarray(
            np.hstack([vectors, np.ones((n, 1), np.float32), np.full((n, 1), self.global_bias_, np.float32)])
        )

    def _item_vectors(self) -> np.ndarray:
        def build():
            n = self.item_factors_.shape[0]
            return np.ascontiguousarray(
                np.hstack([self.item_factors_, self.item_biases_[:, None], np.ones((n, 1), np.float32)]),
                dtype=np.float32,
            )

        return self._cached("items", build)

    def _fold_in_objective(self) -> dict:
        if self.loss == "squared":
            return dict(regularization=self.regularization, feedback="explicit")
        return dict(regularization=self.regularization, feedback="implicit", alpha=1.0)

    def fold_in(self, user_items_rows) -> np.ndarray:
        """Factors for new or changed users with the item factors fixed.

        For squared loss, the least-squares fit of their ratings minus mu and the item biases
        (user bias 0); for BPR, an implicit-feedback least-squares solve (a stand-in for the
        ranking loss).

        Parameters
        ----------
        user_items_rows : sparse matrix or array (n_rows, n_items)

        Returns
        -------
        float32 ndarray (n_rows, factors)
            Use it with :meth:`recommend_vectors`.
        """
        self._check_fitted()
        if self.loss != "squared" or not self.biases:
            return super().fold_in(user_items_rows)
        rows = as_user_items(user_items_rows, np.float32, name="user_items_rows")
        if rows.shape[1] != self.item_factors_.shape[0]:
            raise ValueError(
                f"user_items_rows must have {self.item_factors_.shape[0]} columns (one per item), got {rows.shape[1]}"
            )
        residuals = rows.copy()
        residuals.data = residuals.data - np.float32(self.global_bias_) - self.item_biases_[residuals.indices]
        return super().fold_in(residuals)


def _legacy_callback(function, iteration: int, metrics: dict):
    """A callback of earlier releases: (epoch, seconds, train metric, validation RMSE)."""
    train = metrics.get("train_rmse", metrics.get("train_auc"))
    return function(iteration, metrics["seconds"], train, metrics.get("validation_rmse"))


def _host_ratings(backend, matrix, *, name: str = "user_items", allow_negative: bool = True):
    """Ratings as a canonical float32 host CSR (SGD builds its grid on the host, whichever
    engine trains)."""
    if backend.name == "cuda":
        return backend.host_csr(matrix, name, allow_negative=allow_negative)
    return as_user_items(matrix, np.float32, name=name, allow_negative=allow_negative)


class _SgdRun:
    """One SGD fit, on either backend (see recore._iterations): an iteration is one epoch."""

    def __init__(self, model: SGD, backend, state: dict, settings, epoch, held_out):
        self.backend, self.state, self.settings = backend, state, settings
        self.epoch, self.held_out = epoch, held_out
        self.squared = model.loss == "squared"
        self.early_stopping = model.early_stopping
        if self.squared:
            self.metric_names = ("train_rmse", "validation_rmse") if held_out is not None else ("train_rmse",)
        else:
            self.metric_names = ("train_auc",)
        self.best = (np.inf, None)
        self.stale = 0

    def begin_iteration(self) -> None:
        pass  # an epoch is one engine call: nothing to put back

    def roll_back(self) -> None:
        pass

    def iteration(self) -> dict:
        metric = self.epoch()
        return {"train_rmse": metric} if self.squared else {"train_auc": metric}

    def evaluate(self) -> dict:
        if self.held_out is None:
            return {}
        return {"validation_rmse": self.backend.sgd_rmse_of(self.held_out, self.state, self.settings)}

    def stop(self, metrics: dict) -> bool:
        """Early stopping: after ``early_stopping`` epochs without a better validation RMSE."""
        rmse = metrics.get("validation_rmse")
        if rmse is None or not self.early_stopping:
            return False
        if rmse < self.best[0]:
            self.best, self.stale = (rmse, self._snapshot()), 0
            return False
        self.stale += 1
        return self.stale >= self.early_stopping

    def keep_best(self) -> None:
        """The best epoch's model, when early stopping has stopped the fit."""
        if self.best[1] is not None and self.stale >= self.early_stopping:
            self.state.update(self.best[1])

    def _snapshot(self) -> dict:
        holding = backends.holding
        return {
            key: (value.copy() if isinstance(value, np.ndarray) or holding(value).name == "cuda" else value)
            for key, value in self.state.items()
        }
