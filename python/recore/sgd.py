"""Matrix factorization by stochastic gradient descent: biased MF for ratings (squared loss)
and BPR for implicit feedback."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import scipy.sparse as sp

from recore import _core, _device
from recore._estimator import Estimator
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

# Factor rows are stored padded to whole 64-byte vectors inside fit (never visible).
_PAD = 16


def _padded(n: int) -> int:
    return (n + _PAD - 1) // _PAD * _PAD


# Runs per block in the visiting order.
_RUNS = 4


def _interleaved_runs(starts: np.ndarray, runs: int = _RUNS) -> np.ndarray:
    """The visiting order of a grid whose block ``b`` holds positions ``[starts[b], starts[b + 1])``.

    Each block's ratings (sorted by user, then item) are cut into ``runs`` consecutive runs
    of ``ceil(length / runs)`` ratings, and the runs are visited round-robin: run 0's first
    rating, run 1's first, ..., run 0's second, and so on. Each run still walks its users in
    order (their rows stay in cache), while consecutive updates mostly touch different users
    and items, so the processor can overlap them instead of waiting for one update's stores
    before the next can read. Returns ``perm`` with ``perm[visit] = position``.
    """
    perm = np.empty(starts[-1], dtype=np.int64)
    for first, last in zip(starts[:-1].tolist(), starts[1:].tolist()):
        length = last - first
        if length == 0:
            continue
        run_length = -(-length // runs)
        # The block's positions as a (runs, run_length) table padded with -1, read column by
        # column: each run's first rating, then each run's second, ...
        table = np.full(runs * run_length, -1, dtype=np.int64)
        table[:length] = np.arange(first, last)
        column_wise = table.reshape(runs, run_length).T.ravel()
        perm[first:last] = column_wise[column_wise >= 0]
    return perm


def _block_order(rng: np.random.Generator, blocks: int, by_items: bool) -> np.ndarray:
    """One epoch's block order: the bands of one side in a random order, and for each the
    blocks of its row of the grid, the other side's bands in a fresh random order.

    Block ``b`` covers user band ``b // blocks`` and item band ``b % blocks``. Grouping by
    the side whose bands hold more bytes of factors (``by_items``: the item bands) keeps one
    band's rows in cache over ``blocks`` consecutive blocks, where a free order would load
    them again for every block.
    """
    outer = rng.permutation(blocks).astype(np.int64)
    inner = np.argsort(rng.random((blocks, blocks)), axis=1).astype(np.int64)
    if by_items:
        order = inner * blocks + outer[:, None]  # item band fixed along each row
    else:
        order = outer[:, None] * blocks + inner
    return order.ravel().astype(np.int32)


def _ratings_by_block(matrix: sp.csr_matrix, user_rank: np.ndarray, item_rank: np.ndarray, blocks: int):
    """The ratings of a canonical CSR matrix as ranks, sorted by block, then user rank, then
    item rank: (users, items, values, starts), block ``b`` at ``[starts[b], starts[b + 1])``.

    Rather than sorting three keys, the rows are taken in rank order and each row's ranks
    sorted (scipy's per-row sort), which leaves the ratings in (user, item) rank order; a
    stable sort on the block alone (a radix sort for so few blocks) then groups them.
    """
    n_users, n_items = matrix.shape
    by_rank = matrix if _is_identity(user_rank) else matrix[np.argsort(user_rank)]
    # A copy of the values: sorting each row moves them, and they may be the caller's.
    values = by_rank.data.copy() if by_rank is matrix else by_rank.data
    ranked = sp.csr_matrix((values, item_rank[by_rank.indices], by_rank.indptr), shape=matrix.shape)
    if not _is_identity(item_rank):
        ranked.has_sorted_indices = False
        ranked.sort_indices()
    users = np.repeat(np.arange(n_users, dtype=np.int32), np.diff(ranked.indptr))
    items = ranked.indices.astype(np.int32, copy=False)
    user_band = users.astype(np.int64) * blocks // max(n_users, 1)
    item_band = items.astype(np.int64) * blocks // max(n_items, 1)
    block = user_band * blocks + item_band
    key_type = np.int16 if blocks * blocks <= np.iinfo(np.int16).max else np.int64
    order = np.argsort(block.astype(key_type), kind="stable")
    starts = np.zeros(blocks * blocks + 1, dtype=np.int64)
    np.cumsum(np.bincount(block, minlength=blocks * blocks), out=starts[1:])
    return users[order], items[order], ranked.data[order].astype(np.float32, copy=False), starts


def _is_identity(rank: np.ndarray) -> bool:
    return bool(np.array_equal(rank, np.arange(len(rank), dtype=rank.dtype)))


# Per-row training state: each array holds one row (or, for split rate sums, two values) per
# user or item.
_USER_ROWS = ("user_factors", "user_biases", "user_rate_sums")
_ITEM_ROWS = ("item_factors", "item_biases", "item_rate_sums")


def _rows_of(value: np.ndarray, n: int) -> np.ndarray:
    return value.reshape(n, value.size // n if n else 0)


def _to_rank_order(state: dict, user_rank: np.ndarray, item_rank: np.ndarray) -> None:
    """Moves the per-row state into the grid's rank order (row ``rank[u]`` holds user ``u``'s),
    and records the ranks as ``state["ranks"]`` for :func:`_in_id_order`."""
    for keys, rank in ((_USER_ROWS, user_rank), (_ITEM_ROWS, item_rank)):
        for key in keys:
            if state[key] is None:
                continue
            moved = np.empty_like(state[key])
            _rows_of(moved, len(rank))[rank] = _rows_of(state[key], len(rank))
            state[key] = moved
    state["ranks"] = (user_rank, item_rank)


def _in_id_order(state: dict) -> dict:
    """The state with its per-row arrays back in the caller's id order."""
    if "ranks" not in state:
        return state
    user_rank, item_rank = state["ranks"]
    restored = dict(state)
    for keys, rank in ((_USER_ROWS, user_rank), (_ITEM_ROWS, item_rank)):
        for key in keys:
            if state[key] is not None:
                restored[key] = _rows_of(state[key], len(rank))[rank].reshape(state[key].shape)
    return restored


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
    epochs : int, default 40
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

    Attributes
    ----------
    user_factors_, item_factors_ : float32 ndarrays (n, factors), C-contiguous
    user_biases_, item_biases_ : float32 ndarrays (zeros without biases)
    global_bias_ : float (mu; 0 without biases or for BPR)
    epochs_completed_ : int
        Epochs the factors went through (fewer than ``epochs`` after early stopping or Ctrl-C).
    history_ : dict of lists
        Per epoch: ``train_rmse`` (each rating's error just before its update) and
        ``validation_rmse`` for squared loss; ``train_auc`` (sampled, before each update) for BPR.
    """

    _fitted_attributes = ("user_factors_", "item_factors_", "user_biases_", "item_biases_", "global_bias_")

    def __init__(
        self,
        factors: int = 64,
        loss: str = "squared",
        epochs: int = 40,
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
    ):
        self.factors = factors
        self.loss = loss
        self.epochs = epochs
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
        check_int(self.epochs, "epochs", 0)
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
        check_choice(self.device, "device", _device.DEVICES)

    # -- fitting ------------------------------------------------------------------------------

    def fit(self, user_items, validation=None, *, callback: Callable | None = None, progress: bool = False) -> SGD:
        """Learn the factors.

        Parameters
        ----------
        user_items : sparse matrix or 2-D array (n_users, n_items)
            Ratings (squared loss: every stored entry is a rating, stored zeros included) or
            interactions (BPR: every stored entry is a positive).
        validation : sparse matrix (n_users, n_items), optional
            Held-out ratings: their RMSE is computed after every epoch (squared loss).
        callback : callable, optional
            ``callback(epoch, elapsed_seconds, train_metric, validation_rmse)`` after each
            epoch (train RMSE for squared loss, sampled AUC for BPR; validation_rmse None
            without a validation set).
        progress : bool
            Show a tqdm progress bar.
        """
        self._check_params()
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        squared = self.loss == "squared"
        on_gpu = _device.resolve_device(self.device, user_items, validation, names=("user_items", "validation")) == "cuda"
        if on_gpu:
            from recore import _gpu

            matrix = _gpu.host_csr(user_items, "user_items", allow_negative=squared)
            if validation is not None and _device.is_gpu_sparse(validation):
                validation = validation.get()
        else:
            matrix = as_user_items(user_items, np.float32, allow_negative=squared)
        if matrix.nnz and float(np.abs(matrix.data).max()) > 1e15:
            raise ValueError("user_items values beyond 1e15 overflow float32 arithmetic; rescale them")
        n_users, n_items = matrix.shape
        held_out = None
        if validation is not None:
            if not squared:
                raise ValueError("validation applies to loss='squared' only")
            held_out = self._validation_triples(validation, matrix.shape)
        rng = check_random_state(self.random_state)
        threads = self.num_threads or _core.default_threads()
        f, fp = self.factors, _padded(self.factors)
        mean_value = float(np.mean(matrix.data, dtype=np.float64)) if squared and matrix.nnz else 0.0
        state = self._initial_state(rng, n_users, n_items, f, fp, mean_value)
        if squared and self.biases:
            state["global_mean"] = mean_value
        history = {"train_rmse": [], "validation_rmse": []} if squared else {"train_auc": []}

        from tqdm.auto import tqdm

        if on_gpu:
            from recore import _sgd_cuda

            state = _sgd_cuda.to_device_state(state)
            run_epoch = (
                _sgd_cuda.squared_epochs(self, matrix, rng, threads, state)
                if squared
                else _sgd_cuda.bpr_epochs(self, matrix, rng, state)
            )
            if held_out is not None:
                held_out = _sgd_cuda.device_triples(held_out)
        else:
            run_epoch = (
                self._squared_epochs(matrix, rng, threads, state) if squared else self._bpr_epochs(matrix, rng, state)
            )
            if held_out is not None and "ranks" in state:  # training rows are in rank order
                user_rank, item_rank = state["ranks"]
                held_out = (user_rank[held_out[0]], item_rank[held_out[1]], held_out[2])
        best = (np.inf, None)
        stale = 0
        try:
            with engine_threads(), tqdm(total=self.epochs, disable=not progress, unit="epoch", desc="SGD") as bar:
                for epoch in range(self.epochs):
                    began = time.perf_counter()
                    metric = run_epoch()
                    elapsed = time.perf_counter() - began
                    validation_rmse = None
                    if squared:
                        history["train_rmse"].append(metric)
                        if held_out is not None:
                            validation_rmse = self._rmse(held_out, state)
                            history["validation_rmse"].append(validation_rmse)
                    else:
                        history["train_auc"].append(metric)
                    bar.set_postfix(
                        train=f"{metric:.4f}",
                        **({"validation": f"{validation_rmse:.4f}"} if validation_rmse is not None else {}),
                    )
                    bar.update(1)
                    if callback is not None:
                        callback(epoch, elapsed, metric, validation_rmse)
                    if validation_rmse is not None and self.early_stopping:
                        if validation_rmse < best[0]:
                            best, stale = (validation_rmse, self._snapshot(state)), 0
                        else:
                            stale += 1
                            if stale >= self.early_stopping:
                                state.update(best[1])
                                break
        except KeyboardInterrupt:
            # Each epoch is one engine call: an interrupt surfaces between epochs, and the
            # model keeps the factors of the last completed one.
            self._set_fitted(state, f, history)
            raise
        self._set_fitted(state, f, history)
        return self

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

    def _rating_grid(self, matrix, rng, threads: int):
        """The grid side and the ratings in visiting order: (blocks, users, items, values,
        starts, user_rank, item_rank), block ``b``'s ratings at ``[starts[b], starts[b + 1])``.

        Users and items are shuffled: ``user_rank[u]`` is user ``u``'s place in the shuffled
        order, and user band ``k`` holds the users ranked ``[k n / blocks, (k + 1) n / blocks)``.
        The ids returned are ranks, not the caller's ids: training stores the factor rows in
        rank order, so that each band is one contiguous stretch of memory and a block, sorted
        by user rank then item rank, walks its rows forwards. With ``blocks=1`` the ranks are
        the ids themselves (one block needs no shuffle). The CPU and the GPU engines train
        over the same grid.
        """
        n_users, n_items = matrix.shape
        # A fine grid spreads each user's ratings over the epoch (a user's ratings in one
        # block are consecutive), which SGD needs as much as the threads need free blocks.
        blocks = self.blocks or max(20, 2 * threads + 2)
        if blocks == 1:
            user_rank, item_rank = np.arange(n_users, dtype=np.int32), np.arange(n_items, dtype=np.int32)
        else:
            user_rank, item_rank = rng.permutation(n_users).astype(np.int32), rng.permutation(n_items).astype(np.int32)
        users, items, values, starts = _ratings_by_block(matrix, user_rank, item_rank, blocks)
        order = _interleaved_runs(starts)
        return blocks, users[order], items[order], values[order], starts, user_rank, item_rank

    def _squared_epochs(self, matrix, rng, threads: int, state: dict):
        """The rating grid (made once), and a function running one epoch over it."""
        n_users, n_items = matrix.shape
        blocks, users, items, values, starts, user_rank, item_rank = self._rating_grid(matrix, rng, threads)
        _to_rank_order(state, user_rank, item_rank)
        count = max(len(values), 1)
        biases = self.biases
        slow_factors = self._slow_factors()

        by_items = n_items > n_users

        def epoch() -> float:
            # One thread walks band by band (measured faster: the band stays in cache); with
            # more, a free order keeps every thread supplied with blocks to the end of the epoch
            # (band-by-band orders measured slower there).
            if threads == 1:
                block_order = _block_order(rng, blocks, by_items)
            else:
                block_order = rng.permutation(blocks * blocks).astype(np.int32)
            squared_error = _core.sgd_squared_epoch(
                users, items, values, starts, block_order, blocks,
                state["user_factors"], state["item_factors"], self.factors,
                state["user_biases"] if biases else None, state["item_biases"] if biases else None,
                state["global_mean"], state["user_rate_sums"], state["item_rate_sums"],
                self.learning_rate, self.regularization, self.bias_regularization, self.num_threads,
                slow_factors, state["epochs_done"][0] == 0, state["epochs_done"],
            )  # fmt: skip
            return float(np.sqrt(squared_error / count))

        return epoch

    def _bpr_epochs(self, matrix, rng, state: dict):
        indptr = matrix.indptr.astype(np.int64)
        indices = matrix.indices.astype(np.int32)
        popularity = self.negatives == "popularity"

        def epoch() -> float:
            return _core.sgd_bpr_epoch(
                indptr, indices, len(indices), popularity, int(rng.integers(0, 2**63)),
                state["user_factors"], state["item_factors"], self.factors,
                state["item_biases"] if self.biases else None,
                state["user_rate_sums"], state["item_rate_sums"],
                self.learning_rate, self.regularization, self.bias_regularization, self.num_threads,
                state["epochs_done"],
            )  # fmt: skip

        return epoch

    def _validation_triples(self, validation, shape):
        if not sp.issparse(validation):
            raise TypeError(f"validation must be a scipy.sparse matrix, got {type(validation).__name__}")
        if validation.ndim != 2 or validation.shape[0] > shape[0] or validation.shape[1] > shape[1]:
            raise ValueError(f"validation has shape {validation.shape}, outside the training shape {shape}")
        held = as_user_items(validation, np.float32, name="validation").tocoo()
        return held.row.astype(np.int32), held.col.astype(np.int32), held.data.astype(np.float32)

    def _rmse(self, triples, state) -> float:
        users, items, values = triples
        if _device.is_gpu_array(state["user_factors"]):
            from recore import _sgd_cuda

            return _sgd_cuda.rmse(self, triples, state)
        return _core.sgd_rmse(
            users, items, values, state["user_factors"], state["item_factors"], self.factors,
            state["user_biases"] if self.biases else None, state["item_biases"] if self.biases else None,
            state["global_mean"], self.num_threads,
        )  # fmt: skip

    @staticmethod
    def _snapshot(state: dict) -> dict:
        return {k: (v.copy() if isinstance(v, np.ndarray) or _device.is_gpu_array(v) else v) for k, v in state.items()}

    def _set_fitted(self, state: dict, f: int, history: dict) -> None:
        state = _in_id_order(state)
        xp = np
        if _device.is_gpu_array(state["user_factors"]):
            import cupy as xp
        self.user_factors_ = xp.ascontiguousarray(state["user_factors"][:, :f])
        self.item_factors_ = xp.ascontiguousarray(state["item_factors"][:, :f])
        squared = self.loss == "squared"
        self.user_biases_ = (
            state["user_biases"].copy() if squared and self.biases else xp.zeros_like(state["user_biases"])
        )
        self.item_biases_ = state["item_biases"].copy() if self.biases else xp.zeros_like(state["item_biases"])
        self.global_bias_ = float(state["global_mean"])
        self.epochs_completed_ = int(state["epochs_done"][0])
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
        self.history_ = {}
        self.epochs_completed_ = self.epochs

    # -- using a fitted model -----------------------------------------------------------------

    def predict(self, users, items) -> np.ndarray:
        """Predicted ratings (squared loss) or scores (BPR) for pairs of ids, broadcast."""
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
        """Factors for new or changed users with the item factors fixed: for squared loss the
        least-squares fit of their ratings minus mu and the item biases (user bias 0), for BPR
        an implicit-feedback least-squares solve (a stand-in for the ranking loss)."""
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
