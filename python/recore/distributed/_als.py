"""Alternating least squares on a Dask cluster, with recore's own kernels on every worker."""

from __future__ import annotations

from typing import Callable

import numpy as np

from recore import backends, kernels
from recore._iterations import iteration_callback
from recore._validation import check_choice, check_float_dtype, check_int
from recore.als import ALS as _SingleMachineALS
from recore.distributed import _cluster, _inputs
from recore.distributed._cluster import WorkerLostError

__all__ = ["DistributedALS"]


class DistributedALS(_SingleMachineALS):
    """:class:`recore.ALS` fitted on a Dask cluster.

    The interactions are held twice on the workers, as row shards of the user-item CSR and of
    the item-user CSR, for the whole fit. Each half-iteration broadcasts the fixed factors
    and their Gram matrix once; every worker solves its shard's rows with
    :func:`recore.kernels.als_half_step`, and the updated shard stays on that worker. The
    hyperparameters, their checks, the initial factors and the results are those of
    :class:`recore.ALS` with the same ``random_state``: every row's solve is the same
    computation on the same numbers, and the Gram matrix is summed over the same chunks in
    the same order, so the factors are bitwise equal to the single-machine ones, for any
    number of workers, shards or threads.

    Parameters
    ----------
    factors, regularization, alpha, iterations, solver, cg_steps, feedback, confidence, \
weighted_regularization, dtype
        As for :class:`recore.ALS`.
    num_threads : int, default 0
        Threads per worker for each shard's kernel; 0 uses the worker's own thread count
        (``nthreads``), so that workers sharing a machine do not oversubscribe it.
    random_state, calculate_training_loss
        As for :class:`recore.ALS`.
    num_shards : int or None, default None
        Row shards per side; None makes one per worker. Shards are cut at about equal
        numbers of entries. With ``gram="workers"`` and implicit feedback the cuts lie on the
        bounds of the chunks :func:`recore.kernels.gram_matrix` sums over (see
        :func:`recore.kernels.gram_chunk_bounds`: one chunk per 512 rows, at most 64, or 16
        beyond 256 factors), so a side has at most as many shards as chunks: fewer than
        asked for below 512 rows per shard. The factors do not depend on it.
    gram : {"workers", "driver"}, default "workers"
        Where the Gram matrix of the fixed factors is formed (implicit feedback).
        ``"workers"``: each worker computes the per-chunk pieces
        (:func:`recore.kernels.gram_partials`) of its shard right after solving it, and the
        driver adds all chunks' pieces in chunk order in float64
        (:func:`recore.kernels.gram_fold`), exactly as the single-machine kernel does, which
        spreads that work (n x f^2 multiply-adds per half-step) over the workers.
        ``"driver"``: the driver, which relays the fixed factors anyway, computes it with
        :func:`recore.kernels.gram_matrix` on the whole matrix, and shards are cut at
        entry-balanced rows regardless of chunks. Both give the same factors, bitwise.
    max_recoveries : int, default 3
        Times a fit may recover from lost workers: the half-iteration under way is redone
        from the driver's copy of the factors, with the lost shards rebuilt on the workers
        still alive. Beyond that the fit raises :class:`WorkerLostError`.
    unobserved_weight, regularization_exponent, block_size, subspace_sweeps
        As for :class:`recore.ALS`. Every shard's rows are solved with the regularization of
        the whole matrix (each row's count of entries and the other side's full size).

    Attributes
    ----------
    user_factors_ : ndarray (n_users, factors), or a dask array with ``output="dask"``
    item_factors_ : ndarray (n_items, factors)
    history_ : dict of lists
        As for :class:`recore.ALS`.
    recoveries_ : int
        How many times the last fit recovered from a lost worker.
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
        num_shards: int | None = None,
        gram: str = "workers",
        max_recoveries: int = 3,
        unobserved_weight: float = 1.0,
        regularization_exponent: float = 0.0,
        block_size: int = 32,
        subspace_sweeps: int = 1,
    ):
        self.num_shards = num_shards
        self.gram = gram
        self.max_recoveries = max_recoveries
        super().__init__(
            factors=factors, regularization=regularization, alpha=alpha, iterations=iterations, solver=solver,
            cg_steps=cg_steps, feedback=feedback, confidence=confidence,
            weighted_regularization=weighted_regularization, dtype=dtype, num_threads=num_threads,
            random_state=random_state, calculate_training_loss=calculate_training_loss,
            unobserved_weight=unobserved_weight, regularization_exponent=regularization_exponent,
            block_size=block_size, subspace_sweeps=subspace_sweeps,
        )  # fmt: skip

    def _check_params(self) -> None:
        super()._check_params()
        if self.num_shards is not None:
            check_int(self.num_shards, "num_shards", 1)
        check_choice(self.gram, "gram", ("workers", "driver"))
        check_int(self.max_recoveries, "max_recoveries", 0)

    def fit(
        self,
        user_items,
        client=None,
        *,
        callback: Callable | None = None,
        output: str = "numpy",
        user_column: str = "user",
        item_column: str = "item",
        value_column: str = "value",
        shape: tuple[int, int] | None = None,
    ) -> DistributedALS:
        """Learn the factors on the cluster.

        Parameters
        ----------
        user_items : scipy.sparse matrix, 2-D numpy array, dask DataFrame, dask array or Parquet path(s)
            A matrix (n_users, n_items) as :meth:`recore.ALS.fit` takes it, cut into shards
            by the driver; or (user, item, value) triples already on the cluster: a dask
            DataFrame with those columns, an (n, 3) dask array, or Parquet file(s) or a
            directory of them, which the workers read and shard themselves. Duplicate pairs
            are summed.
        client : dask.distributed.Client, optional
            Defaults to the current client; ValueError when there is none.
        callback : callable, optional
            ``callback(iteration, metrics)`` after each iteration, on the driver (as for
            :meth:`recore.ALS.fit`).
        output : {"numpy", "dask"}, default "numpy"
            ``"dask"`` leaves ``user_factors_`` as a dask array whose chunks are the user
            shards where they were solved, for work that goes on on the cluster (such as
            :func:`recore.distributed.recommend_all`).
        user_column, item_column, value_column : str
            Column names of a data frame or Parquet input.
        shape : (n_users, n_items), optional
            For triples: the matrix shape, when ids beyond the largest seen exist. By
            default one more than the largest user and item id.

        Returns
        -------
        self
        """
        self._check_params()
        callback = iteration_callback(
            callback, lambda function, iteration, metrics: function(iteration, metrics["seconds"], metrics.get("loss")), 3
        )
        check_choice(output, "output", ("numpy", "dask"))
        names = {"user_column": user_column, "item_column": item_column, "value_column": value_column}
        columns = tuple(_string(value, name) for name, value in names.items())
        client = _cluster.resolve_client(client)
        dtype = check_float_dtype(self.dtype)
        implicit = self.feedback == "implicit"
        workers = _cluster.live_workers(client)
        num_shards = _cluster.check_num_shards(self.num_shards, len(workers))

        # Shards cut on the Gram matrix's chunk bounds when the workers sum its pieces.
        gram_factors = self.factors if implicit and self.gram == "workers" else None

        def placement(n):
            return {shard: workers[shard % len(workers)] for shard in range(n)}

        if _inputs.is_dask_collection(user_items) or _inputs.is_parquet_source(user_items):
            data = _inputs.from_triples(
                client, user_items, dtype, implicit=implicit, columns=columns, shape=shape,
                num_shards=num_shards, placement=placement, gram_factors=gram_factors,
            )  # fmt: skip
        else:
            if shape is not None:
                raise ValueError("shape is for triples; a matrix has its own")
            data = _inputs.from_matrix(
                client, user_items, dtype, implicit=implicit, num_shards=num_shards, placement=placement,
                gram_factors=gram_factors,
            )  # fmt: skip
        self._check_largest_value(data.largest, dtype)
        user_factors, item_factors = self._initial_factors(data.n_users, data.n_items, dtype)
        run = _Run(self, client, data, placement(num_shards), user_factors, item_factors)
        try:
            # The same loop as recore.ALS's, over the cluster's run.
            self._iterate(run, callback, False, "ALS (distributed)", self._overflow_remedy(backends.get("cpu"), dtype))
        finally:
            run.release_inputs()
        self.recoveries_ = run.recoveries
        user_result = run.users_as_dask() if output == "dask" else run.users
        self._set_fitted(user_result, run.items, self.history_)
        return self

    def recommend_all(self, user_items=None, k: int = 10, *, client=None, **options):
        """All users' top ``k`` items computed on the cluster (see
        :func:`recore.distributed.recommend_all`), excluding each user's items of
        ``user_items`` when given."""
        from recore.distributed._topk import recommend_all

        self._check_fitted()
        return recommend_all(self.user_factors_, self.item_factors_, k, user_items=user_items, client=client, **options)

    def _user_vectors(self, users):
        # Single-machine serving methods work from numpy factors.
        return np.ascontiguousarray(np.asarray(self.user_factors_[users]), dtype=np.float32)


def _string(value, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    return value


class _Run:
    """One fit's state on the cluster and on the driver.

    The driver keeps the factors of the last completed half-step (it relays them to every
    worker anyway): a half-step is a pure function of them and of the interaction shards, so
    after a lost worker it is simply done again.
    """

    def __init__(self, model: DistributedALS, client, data, placement: dict, users, items):
        self.model = model
        self.client = client
        self.data = data
        self.placement = placement
        self.users, self.items = users, items
        self.begin_iteration()
        self.recoveries = 0
        self.metric_names = ("loss",) if model.calculate_training_loss else ()
        self.options = dict(model._objective(), **model._solver_options())
        self.implicit = model.feedback == "implicit"
        self.factor_shards = {
            "users": self._scatter_factors(users, data.user_items.bounds),
            "items": self._scatter_factors(items, data.item_users.bounds),
        }
        self.workers_gram = self.implicit and model.gram == "workers"
        # Per shard, the Gram chunk bounds it covers, counted from its first row.
        self.shard_chunks = {}
        if self.workers_gram:
            for side, shards in (("users", data.user_items), ("items", data.item_users)):
                chunk_bounds = kernels.gram_chunk_bounds(shards.n_rows, model.factors)
                self.shard_chunks[side] = [
                    _cluster.chunks_within(chunk_bounds, int(shards.bounds[s]), int(shards.bounds[s + 1]))
                    for s in range(shards.num_shards)
                ]
        # Per-chunk Gram pieces of each side's current factors, in chunk order (computed where
        # the shards live).
        self.gram_pieces = {"users": None, "items": None}

    # -- placing data ---------------------------------------------------------------------

    def _scatter_factors(self, factors, bounds, shards=None) -> list:
        shards = range(len(bounds) - 1) if shards is None else shards
        return [
            self.client.scatter(
                np.ascontiguousarray(factors[bounds[s] : bounds[s + 1]]), workers=[self.placement[s]], hash=False
            )
            for s in shards
        ]

    def _sides(self, target: str):
        if target == "users":
            return self.data.user_items, self.items, "items"
        return self.data.item_users, self.users, "users"

    # -- one iteration (the run protocol of recore._iterations) ------------------------------

    def iteration(self) -> dict:
        self.half_step("users")
        self.half_step("items")
        return {}

    def evaluate(self) -> dict:
        return {"loss": self.loss()} if self.metric_names else {}

    def stop(self, metrics: dict) -> bool:
        return False

    # -- one half-step --------------------------------------------------------------------

    def half_step(self, target: str) -> None:
        errors = _cluster.lost_worker_errors()
        recovering = False
        while True:
            try:
                if recovering:
                    self._recover()
                self._half_step_once(target)
                return
            except errors as error:
                if self.recoveries >= self.model.max_recoveries:
                    raise WorkerLostError(
                        f"distributed ALS lost workers {self.recoveries + 1} times (max_recoveries="
                        f"{self.model.max_recoveries}); the fit is abandoned and no factors were kept: {error}"
                    ) from error
                self.recoveries += 1
                recovering = True

    def _gram(self, fixed_side: str, fixed: np.ndarray):
        if not self.implicit:
            return None
        pieces = self.gram_pieces[fixed_side]
        if pieces is None:  # gram="driver", or the first half-step
            return kernels.gram_matrix(fixed, num_threads=self.model.num_threads)
        # Every chunk's piece, in chunk order whatever the placement: gram_matrix's own sum.
        return kernels.gram_fold(pieces)

    def _half_step_once(self, target: str) -> None:
        client = self.client
        shards, fixed, fixed_side = self._sides(target)
        gram = self._gram(fixed_side, fixed)
        fixed_future = client.scatter(fixed, broadcast=True, hash=False)
        gram_future = None if gram is None else client.scatter(gram, broadcast=True, hash=False)
        solved = [
            client.submit(
                _cluster.solve_shard,
                rows,
                fixed_future,
                gram_future,
                factors,
                self.options,
                workers=[self.placement[s]],
                allow_other_workers=True,
                pure=False,
            )  # fmt: skip
            for s, (rows, factors) in enumerate(zip(shards.futures, self.factor_shards[target]))
        ]
        pieces = []
        if self.workers_gram:
            pieces = [
                client.submit(
                    _cluster.gram_partials,
                    shard,
                    self.shard_chunks[target][s],
                    self.model.num_threads,
                    workers=[self.placement[s]],
                    allow_other_workers=True,
                    pure=False,
                )  # fmt: skip
                for s, shard in enumerate(solved)
            ]
        blocks = client.gather(solved)
        gathered_pieces = np.concatenate(client.gather(pieces)) if pieces else None
        # Committed only once every shard is back: a lost worker leaves the last state whole.
        updated = np.concatenate(blocks) if blocks else np.empty((0, fixed.shape[1]), fixed.dtype)
        if target == "users":
            self.users = updated
        else:
            self.items = updated
        self.factor_shards[target] = solved
        self.gram_pieces[target] = gathered_pieces

    # -- losing a worker --------------------------------------------------------------------

    def _recover(self) -> None:
        """Shards on the workers alive: lost interaction shards rebuilt, factor shards
        scattered again from the driver's copies."""
        workers = _cluster.live_workers(self.client)
        self.placement = {s: workers[s % len(workers)] for s in self.placement}
        for shards in (self.data.user_items, self.data.item_users):
            lost = {s: self.placement[s] for s, future in enumerate(shards.futures) if _cluster.is_lost(future)}
            if lost:
                rebuilt = shards.rebuild(lost)
                for s, future in rebuilt.items():
                    shards.futures[s] = future
        self.factor_shards = {
            "users": self._scatter_factors(self.users, self.data.user_items.bounds),
            "items": self._scatter_factors(self.items, self.data.item_users.bounds),
        }
        # A rebuilt shard holds the same rows as the lost one (its side's bounds never change),
        # so it covers the same Gram chunks; pieces already gathered are numbers on the driver
        # and stay valid.

    # -- results ------------------------------------------------------------------------------

    def loss(self) -> float:
        """The full objective: every user shard's own terms (its entries and its users'
        penalties), plus the items' penalties summed over the item shards, each with its
        items' counts of entries over all users, as the single-machine loss has them."""
        options = self.model._objective()
        users, items = self.data.user_items, self.data.item_users
        item_future = self.client.scatter(self.items, broadcast=True, hash=False)
        user_terms = [
            self.client.submit(
                _cluster.shard_loss,
                rows,
                factors,
                item_future,
                options,
                workers=[self.placement[s]],
                allow_other_workers=True,
                pure=False,
            )  # fmt: skip
            for s, (rows, factors) in enumerate(zip(users.futures, self.factor_shards["users"]))
        ]
        item_terms = [
            self.client.submit(
                _cluster.shard_regularization,
                rows,
                factors,
                options,
                workers=[self.placement[s]],
                allow_other_workers=True,
                pure=False,
            )  # fmt: skip
            for s, (rows, factors) in enumerate(zip(items.futures, self.factor_shards["items"]))
        ]
        return float(np.sum(self.client.gather(user_terms + item_terms), dtype=np.float64))

    def begin_iteration(self) -> None:
        # Half-steps replace the driver's arrays rather than writing into them, so keeping
        # the references is enough.
        self.start_users, self.start_items = self.users, self.items

    def roll_back(self) -> None:
        """Back to the factors of the last completed iteration."""
        self.users, self.items = self.start_users, self.start_items

    def users_as_dask(self):
        import dask.array as da

        bounds = self.data.user_items.bounds
        f = self.users.shape[1]
        blocks = [
            da.from_delayed(future, shape=(int(bounds[s + 1] - bounds[s]), f), dtype=self.users.dtype)
            for s, future in enumerate(self.factor_shards["users"])
        ]
        return da.concatenate(blocks) if blocks else da.from_array(self.users)

    def release_inputs(self) -> None:
        """Lets the workers drop the interaction shards (the factor shards stay, for
        ``output="dask"``)."""
        self.data.user_items.futures = []
        self.data.item_users.futures = []
