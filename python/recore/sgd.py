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
    with more than 16 factors the adaptive schedule has two speeds, as LIBMF's: the first 8
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
    init_scale : float, default 0.08
        The initial rows' typical length: each factor starts normal with standard deviation
        ``init_scale / sqrt(factors)`` (float32; 0.01 at 64 factors), so that the start does not
        grow with the number of factors; biases start at 0. Without biases (squared loss), the
        first dimension starts at sqrt(mean rating) instead, so that the first predictions are
        about the mean rating.
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
        init_scale: float = 0.08,
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

        # init_scale is the rows' typical length, whatever the number of factors (as LIBMF
        # scales its initial factors by sqrt(1 / factors)): drawn with a fixed spread per
        # dimension, rows start longer the more factors they have, which measured worse with
        # many factors (at 128, a spread of 0.1 per dimension ends 0.004 above 0.01 in test RMSE).
        spread = np.float32(self.init_scale / np.sqrt(f))

        def draw(n):
            values = rng.standard_normal((n, f), dtype=np.float32) * spread
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
        """Squared loss, adaptive schedule, more than 16 factors: the first 8 dimensions
        (``SGD_SLOW_FACTORS``, the width of LIBMF's AVX build) learn alone in the first epoch
        and keep their own rate sums (LIBMF's two-speed schedule); 0 otherwise."""
        # The slow dimensions share one sum with the first, which carries the mean (biases off)
        # and takes the largest gradients: past the first epoch they hardly move from their
        # start, so fewer of them leave more dimensions to fit with. On MovieLens-20M-shaped
        # ratings (planted rank 16, 20 epochs) 8 end with a lower test RMSE than 16 did (by 0.10
        # at 24 factors, 0.0017 at 32, 0.0008 at 128), and than LIBMF. At 16 factors or fewer
        # neither one speed nor two was better at every epoch count.
        two_speed = self.loss == "squared" and self.schedule == "adaptive" and self.factors > 16
        return backends.get("cpu").SGD_SLOW_FACTORS if two_speed else 0

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
        # The adaptive schedule's per-row sums, on the host: partial fits continue from them.
        per_row = 2 if self._slow_factors() else 1
        for side, n in (("user", self.user_factors_.shape[0]), ("item", self.item_factors_.shape[0])):
            sums = state[f"{side}_rate_sums"]
            if sums is not None:
                sums = np.asarray(backends.holding(sums).to_host(sums)).reshape(n, per_row).copy()
            setattr(self, f"_{side}_rate_sums", sums)

    # -- model files --------------------------------------------------------------------------

    def _fitted_state(self) -> dict:
        state = super()._fitted_state()
        state["global_bias_"] = np.float64(self.global_bias_)
        for side in ("user", "item"):
            sums = getattr(self, f"_{side}_rate_sums", None)
            if sums is not None:
                state[f"training.{side}_rate_sums"] = np.asarray(sums)
        return state

    def _restore_fitted_state(self, state: dict) -> None:
        state = dict(state)
        sums = {side: state.pop(f"training.{side}_rate_sums", None) for side in ("user", "item")}
        super()._restore_fitted_state(state)
        for side in ("user", "item"):
            setattr(self, f"_{side}_rate_sums", self._restored_rate_sums(sums[side], side))

    def _restored_rate_sums(self, sums, side: str):
        """A file's rate sums, checked; files without them (written before partial fits
        existed) start every row's sums at 1, as a fit does."""
        if self.schedule != "adaptive":
            if sums is not None:
                raise ValueError(f"{side} rate sums in a model with schedule={self.schedule!r}")
            return None
        shape = (getattr(self, f"{side}_factors_").shape[0], 2 if self._slow_factors() else 1)
        if sums is None:
            return np.ones(shape, np.float32)
        if sums.dtype != np.float32 or sums.shape != shape or not np.isfinite(sums).all() or (sums < 0).any():
            raise ValueError(f"{side} rate sums must be finite float32 values >= 0 of shape {shape}")
        return np.ascontiguousarray(sums)

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
        with self._serving_lock():  # partial_fit_users writes user rows in place
            user_rows, user_biases = self.user_factors_[users], self.user_biases_[users]
            item_rows, item_biases = self.item_factors_[items], self.item_biases_[items]
        dots = np.einsum("...f,...f->...", user_rows, item_rows)
        return (self.global_bias_ + user_biases + item_biases + dots).astype(np.float32)

    # Serving: queries [p_u, 1, mu + b_u] against items [q_i, b_i, 1] score exactly predict().
    def _user_vectors(self, users: np.ndarray) -> np.ndarray:
        xp = self._xp()  # numpy, or cupy for factors on the GPU
        users = xp.asarray(users)
        ones = xp.ones((len(users), 1), xp.float32)
        offsets = (self.global_bias_ + self.user_biases_[users]).astype(xp.float32)[:, None]
        return xp.ascontiguousarray(xp.hstack([self.user_factors_[users], ones, offsets]), dtype=xp.float32)

    def _queries_from_user_vectors(self, vectors: np.ndarray) -> np.ndarray:
        # Users given by their factors alone (fold_in): user bias 0.
        n = vectors.shape[0]
        return np.ascontiguousarray(
            np.hstack([vectors, np.ones((n, 1), np.float32), np.full((n, 1), self.global_bias_, np.float32)])
        )

    def _item_vectors(self) -> np.ndarray:
        xp = self._xp()

        def build():
            n = self.item_factors_.shape[0]
            return xp.ascontiguousarray(
                xp.hstack([self.item_factors_, self.item_biases_[:, None], xp.ones((n, 1), xp.float32)]),
                dtype=xp.float32,
            )

        return self._cached("items", build)

    def _item_vector_rows(self, ids: np.ndarray, arrays: dict) -> np.ndarray:
        factors, biases = arrays["item_factors_"][ids], arrays["item_biases_"][ids]
        return np.ascontiguousarray(
            np.hstack([factors, biases[:, None], np.ones((len(ids), 1), np.float32)]), dtype=np.float32
        )

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

    # -- updating a fitted model ----------------------------------------------------------------

    def partial_fit_users(self, user_ids, user_items_rows, *, iterations: int = 10) -> SGD:
        """Trains some users further on their interactions, the items held fixed, and adds
        new users: ``iterations`` epochs of this model's SGD over the given rows alone.

        Each row is the user's ratings (squared loss) or positives (BPR), complete or not:
        only the user's factors, bias and rate sums change, by the same updates as a fit
        (learning rate, schedule, regularization), each one against the items' values
        before the call. The adaptive schedule continues from the user's sums of the fit
        (an existing user takes smaller steps than a new one). Ratings are visited in a
        fresh random order each epoch, from ``random_state``. For BPR each positive is taken
        once an epoch with a negative drawn uniformly among the items outside the row (also
        with ``negatives="popularity"``: the model keeps no item counts). A user with an empty
        row is left as is.

        The items are held fixed by giving the engine a copy of each rated item's row per
        rating (the engine's epoch updates both sides; the copies' updates are thrown away):
        O(entries x factors) more memory traffic per epoch, the same order as the epoch itself.
        Large batches are trained in pieces of about 65,000 ratings.

        Ids past the end grow the model. New users start from zero factors, bias 0 and rate
        sums 1 (a fit starts from small random factors; with the items fixed, zero is as
        good a start and repeatable); rows between the old end and the new ids keep those
        values: such a user is predicted ``global_bias_ + item_biases_`` (squared loss) or
        scores 0 (BPR) until trained. Thread safety and growth are as for
        :meth:`recore.ALS.partial_fit_users`.

        Parameters
        ----------
        user_ids : int or array-like of int
            Unique ids >= 0, one per row.
        user_items_rows : sparse matrix or 2-D array (len(user_ids), n_items)
            Each user's ratings or positives (every stored entry counts, as in ``fit``).
        iterations : int >= 0, default 10
            Epochs over the rows.

        Returns
        -------
        self
        """
        return self._partial_fit("user", user_ids, user_items_rows, iterations)

    def partial_fit_items(self, item_ids, item_users_rows, *, iterations: int = 10) -> SGD:
        """Trains some items further on their interactions, the users held fixed, and adds new
        items: :meth:`partial_fit_users` with the sides swapped (the items' factors, biases and
        rate sums change).

        For BPR each (user, item) entry is a triple with a negative item drawn uniformly among
        the other items (the user's other positives are not known here), itself held fixed.
        ``item_factors_`` and ``item_biases_`` are replaced by new arrays and the serving
        indexes updated for the changed rows, as for :meth:`recore.ALS.partial_fit_items`.
        Items between the old end and new ids get zero factors and bias 0.

        Parameters
        ----------
        item_ids : int or array-like of int
            Unique ids >= 0, one per row.
        item_users_rows : sparse matrix or 2-D array (len(item_ids), n_users)
            Each item's ratings or positives, one column per user.
        iterations : int >= 0, default 10
            Epochs over the rows.

        Returns
        -------
        self
        """
        return self._partial_fit("item", item_ids, item_users_rows, iterations)

    def _partial_fit(self, side: str, ids, rows, iterations) -> SGD:
        self._check_updatable()
        iterations = check_int(iterations, "iterations", 0)
        squared = self.loss == "squared"
        with self._update_lock():
            ids, rows = self._partial_fit_arguments(side, ids, rows, np.float32, allow_negative=squared)
            other = "item" if side == "user" else "user"
            if rows.nnz and float(np.abs(rows.data).max()) > 1e15:
                raise ValueError(f"{side}_{other}s_rows values beyond 1e15 overflow float32 arithmetic; rescale them")
            target = self._partial_target(side, ids)
            fixed = (getattr(self, f"{other}_factors_"), getattr(self, f"{other}_biases_"))
            rng = check_random_state(self.random_state)
            train = _squared_rows if squared else (_bpr_users if side == "user" else _bpr_items)
            for first, last in _row_pieces(rows.indptr):
                piece = {key: None if value is None else value[first:last] for key, value in target.items()}
                train(self, piece, fixed, rows[first:last], ids[first:last], rng, iterations)
            values = {
                f"{side}_factors_": (target["factors"][:, : self.factors], 0),
                f"{side}_biases_": (target["biases"], 0),
            }
            if target["sums"] is not None:
                values[f"_{side}_rate_sums"] = (target["sums"], 1)
            self._write_rows(side, ids, values)
        return self

    def _partial_target(self, side: str, ids: np.ndarray) -> dict:
        """The rows a partial fit trains, as the engine takes them: factors padded to whole
        ``SGD_ROW_FLOATS``, biases, rate sums (the model's, or a new row's start)."""
        factors, biases = getattr(self, f"{side}_factors_"), getattr(self, f"{side}_biases_")
        known = ids < factors.shape[0]
        padded = np.zeros((len(ids), _sgd_plan.padded(self.factors, backends.get("cpu").SGD_ROW_FLOATS)), np.float32)
        padded[known, : self.factors] = factors[ids[known]]
        row_biases = np.zeros(len(ids), np.float32)
        row_biases[known] = biases[ids[known]]
        sums = None
        if self.schedule == "adaptive":
            sums = np.ones((len(ids), 2 if self._slow_factors() else 1), np.float32)
            held = getattr(self, f"_{side}_rate_sums", None)
            if held is not None:
                sums[known] = held[ids[known]]
        return {"factors": padded, "biases": row_biases, "sums": sums}


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


# -- partial fits: epochs over some rows with the other side fixed ------------------------------
#
# The engine's epochs update both sides of every rating. To hold one side fixed, each rating
# gets its own copy of its fixed row (and bias), refreshed every epoch and thrown away after:
# no copy is updated twice, so every update reads the fixed side's value before the call.

# Ratings trained at once: the copies take this many rows (16 MiB at 64 factors).
_PARTIAL_PIECE_RATINGS = 1 << 16


def _row_pieces(indptr: np.ndarray):
    """Ranges of whole rows holding about ``_PARTIAL_PIECE_RATINGS`` ratings each."""
    n, first = len(indptr) - 1, 0
    while first < n:
        last = int(np.searchsorted(indptr, indptr[first] + _PARTIAL_PIECE_RATINGS, side="right")) - 1
        last = min(n, max(last, first + 1))
        yield first, last
        first = last


def _piece_threads(model: SGD, ratings: int, rows: int) -> int:
    # A few ratings gain nothing from waking every thread.
    if ratings < 20_000:
        return 1
    return max(1, min(rows, model.num_threads or backends.get("cpu").default_threads()))


def _copies(rows: np.ndarray, width: int) -> np.ndarray:
    padded = np.zeros((rows.shape[0], width), np.float32)
    padded[:, : rows.shape[1]] = rows
    return padded


def _squared_rows(model: SGD, target: dict, fixed, rows, ids, rng, iterations: int) -> None:
    """Squared loss: ``iterations`` epochs over ``rows`` (a piece of the partial fit's rows)
    for the rows of ``target``. The formula is symmetric, so the trained side takes the
    engine's user arguments either way."""
    settings = model._settings()
    fixed_factors, fixed_biases = fixed
    n, ratings = rows.shape[0], rows.nnz
    row_of = np.repeat(np.arange(n, dtype=np.int32), np.diff(rows.indptr))
    copies = _copies(fixed_factors[rows.indices], target["factors"].shape[1])
    working = np.empty_like(copies)
    bias_copies = fixed_biases[rows.indices].astype(np.float32)
    bias_working = np.empty_like(bias_copies)
    sums = target["sums"]
    sum_copies = None if sums is None else np.ones(ratings * sums.shape[1], np.float32)
    # Threads take bands of target rows; each rating's copy belongs to its row's band, so
    # only the grid's diagonal blocks hold ratings and no two threads touch one row.
    threads = _piece_threads(model, ratings, n)
    blocks = threads
    band = row_of.astype(np.int64) * blocks // max(n, 1)
    starts = np.zeros(blocks * blocks + 1, np.int64)
    np.cumsum(np.bincount(band * (blocks + 1), minlength=blocks * blocks), out=starts[1:])
    block_order = np.arange(blocks * blocks, dtype=np.int32)
    values = rows.data.astype(np.float32, copy=False)
    for _ in range(iterations):
        np.copyto(working, copies)
        np.copyto(bias_working, bias_copies)
        if sum_copies is not None:
            sum_copies.fill(1)
        visit = rng.permutation(ratings)
        visit = visit[np.argsort(band[visit], kind="stable")]
        backends.get("cpu").sgd_squared_epoch(
            row_of[visit], visit.astype(np.int32), values[visit], starts, block_order, blocks,
            target["factors"], working, settings.factors,
            user_biases=target["biases"] if settings.biases else None,
            item_biases=bias_working if settings.biases else None,
            global_mean=model.global_bias_ if settings.biases else 0.0,
            user_rate_sums=None if sums is None else sums.reshape(-1), item_rate_sums=sum_copies,
            learning_rate=settings.learning_rate, regularization=settings.regularization,
            bias_regularization=settings.bias_regularization, num_threads=threads, slow_factors=settings.slow_factors,
        )  # fmt: skip


def _bpr_users(model: SGD, target: dict, fixed, rows, ids, rng, iterations: int) -> None:
    """BPR for users: each positive once an epoch, with a negative outside the row; both
    items are copies (``2t`` and ``2t + 1`` for triple ``t``)."""
    settings = model._settings()
    item_factors, item_biases = fixed
    n_items = item_factors.shape[0]
    row_of = np.repeat(np.arange(rows.shape[0], dtype=np.int32), np.diff(rows.indptr))
    positives = rows.indices.astype(np.int64)
    keep = np.diff(rows.indptr)[row_of] < n_items  # a row holding every item has no negative
    row_of, positives = row_of[keep], positives[keep]
    triples = len(row_of)
    working = np.zeros((2 * triples, target["factors"].shape[1]), np.float32)
    bias_working = np.zeros(2 * triples, np.float32) if settings.biases else None
    sums = target["sums"]
    sum_copies = None if sums is None else np.ones(2 * triples, np.float32)
    even = np.arange(0, 2 * triples, 2, dtype=np.int32)
    for _ in range(iterations):
        visit = rng.permutation(triples)
        users, chosen = row_of[visit], positives[visit]
        negatives = _negatives(rng, rows, users, n_items)
        working[0::2, : settings.factors] = item_factors[chosen]
        working[1::2, : settings.factors] = item_factors[negatives]
        if bias_working is not None:
            bias_working[0::2], bias_working[1::2] = item_biases[chosen], item_biases[negatives]
        if sum_copies is not None:
            sum_copies.fill(1)
        backends.get("cpu").sgd_bpr_triples(
            users, even, even + 1, target["factors"], working, settings.factors, item_biases=bias_working,
            user_rate_sums=None if sums is None else sums.reshape(-1), item_rate_sums=sum_copies,
            learning_rate=settings.learning_rate, regularization=settings.regularization,
            bias_regularization=settings.bias_regularization,
        )  # fmt: skip


def _bpr_items(model: SGD, target: dict, fixed, rows, ids, rng, iterations: int) -> None:
    """BPR for items: each (user, item) entry once an epoch as the positive of a triple whose
    user and negative item are copies. The engine's item array holds the trained rows first
    (kept across epochs), then one negative copy per triple."""
    settings = model._settings()
    user_factors, _ = fixed
    item_factors, item_biases = model.item_factors_, model.item_biases_
    n, n_items = rows.shape[0], item_factors.shape[0]
    row_of = np.repeat(np.arange(n, dtype=np.int32), np.diff(rows.indptr))
    users = rows.indices.astype(np.int64)
    own = ids[row_of]
    keep = (n_items > 1) | (own >= n_items)  # an item needs another item as its negative
    row_of, users, own = row_of[keep], users[keep], own[keep]
    triples, width = len(row_of), target["factors"].shape[1]
    user_copies = _copies(user_factors[users], width)
    working_users = np.empty_like(user_copies)
    items = np.zeros((n + triples, width), np.float32)
    items[:n] = target["factors"]
    item_bias_rows = np.zeros(n + triples, np.float32)
    item_bias_rows[:n] = target["biases"]
    sums = target["sums"]
    user_sums, item_sums = np.ones(triples, np.float32), np.ones(n + triples, np.float32)
    if sums is not None:
        item_sums[:n] = sums[:, 0]
    for _ in range(iterations):
        visit = rng.permutation(triples)
        negatives = _other_items(rng, own[visit], n_items)
        np.copyto(working_users, user_copies)
        items[n:, : settings.factors] = item_factors[negatives]
        item_bias_rows[n:] = item_biases[negatives]
        user_sums.fill(1)
        item_sums[n:] = 1
        backends.get("cpu").sgd_bpr_triples(
            visit.astype(np.int32), row_of[visit], (n + np.arange(triples)).astype(np.int32),
            working_users, items, settings.factors, item_biases=item_bias_rows if settings.biases else None,
            user_rate_sums=None if sums is None else user_sums, item_rate_sums=None if sums is None else item_sums,
            learning_rate=settings.learning_rate, regularization=settings.regularization,
            bias_regularization=settings.bias_regularization,
        )  # fmt: skip
    target["factors"][:] = items[:n]
    if settings.biases:
        target["biases"][:] = item_bias_rows[:n]
    if sums is not None:
        sums[:, 0] = item_sums[:n]


def _negatives(rng, rows, users: np.ndarray, n_items: int) -> np.ndarray:
    """One item per entry of ``users`` (rows of ``rows``), uniform among the items outside
    that row, by rejection (each row has at least one such item)."""
    # Entries as keys row * n_items + item, sorted (canonical rows): membership by search.
    row_of = np.repeat(np.arange(rows.shape[0], dtype=np.int64), np.diff(rows.indptr))
    keys = row_of * n_items + rows.indices
    drawn = rng.integers(0, n_items, len(users))
    pending = np.arange(len(users))
    while len(pending):
        wanted = users[pending].astype(np.int64) * n_items + drawn[pending]
        place = np.minimum(np.searchsorted(keys, wanted), max(len(keys) - 1, 0))
        taken = (keys[place] == wanted) if len(keys) else np.zeros(len(pending), bool)
        pending = pending[taken]
        drawn[pending] = rng.integers(0, n_items, len(pending))
    return drawn


def _other_items(rng, own: np.ndarray, n_items: int) -> np.ndarray:
    """One item per entry, uniform among the catalog's items other than ``own`` (an id past
    the catalog has every item to choose from)."""
    drawn = rng.integers(0, n_items - 1 if n_items > 1 else 1, len(own))
    inside = own < n_items
    drawn[inside] += drawn[inside] >= own[inside]  # skip the item itself
    return drawn
