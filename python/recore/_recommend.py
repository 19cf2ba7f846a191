"""Serving a fitted factor model: top-N recommendations, similar items and users, fold-in
of new users, and the in-place updates behind ``partial_fit_users`` / ``partial_fit_items``.
Shared by every recore model through :class:`Recommender`.

Concurrency. A model may serve ``recommend`` (and the other serving methods) from many
threads while ``partial_fit_*`` updates it; every query's result is computed from one model,
the one before an update or the one after it, never from a row of each or a half-written row:

- one update at a time (``_update_lock``);
- user-side rows (factors, biases) are written in place under ``_serving_lock``, which the
  serving methods also hold while they copy the rows they read (microseconds either way);
- item-side arrays are never written in place: an update builds new ones and assigns them,
  so a search or a fold-in that holds the old ones keeps reading them;
- the prepared item index is updated through :meth:`recore.ItemIndex.update`: in place when
  no search holds it, otherwise on a copy swapped in by one assignment.
"""

from __future__ import annotations

import contextlib
import numbers
import threading
import warnings

import numpy as np
import scipy.sparse as sp

from recore import backends
from recore._filters import INT32_MAX, TakenRows, as_exclusions, denied_bits, few_taken_rows, item_ids, unit_rows
from recore._threads import engine_threads
from recore._validation import as_user_items, check_bool, check_choice, check_ids, check_int, check_taken_row_pointers
from recore.backends import _device, cpu
from recore.topk import ItemIndex, grown_capacity, normalized_rows, update_ids

LAYOUTS = ("full", "per_query")


def _ids_argument(ids, bound: int, name: str) -> tuple[np.ndarray, bool]:
    """(1-D int64 ids, whether a single id was given)."""
    if type(ids) is int and 0 <= ids < bound:  # one user served as they act: answered at once
        return np.array([ids], np.int64), True
    single = isinstance(ids, numbers.Integral) or (isinstance(ids, np.ndarray) and ids.ndim == 0)
    array = check_ids(np.atleast_1d(np.asarray(ids)), bound, name)
    if array.ndim != 1:
        raise ValueError(f"{name} must be an id or a 1-dimensional array of ids")
    return array, single


def _renamed_list(new, old, new_name: str, old_name: str):
    """An allow / deny list given under its new name or its deprecated one."""
    if old is None:
        return new
    warnings.warn(
        f"{old_name}= is deprecated and will be removed in a future release: use {new_name}=",
        FutureWarning,
        stacklevel=3,
    )
    if new is not None:
        raise TypeError(f"{new_name} and its deprecated alias {old_name} were both given")
    return old


class Recommender:
    """Top-k serving for a model with ``user_factors_`` and ``item_factors_``.

    Scores are ``user . item`` over the vectors :meth:`_user_vectors` and
    :meth:`_item_vectors` give (a model with biases appends them to its factors).
    """

    # -- the model's vectors, as float32 C-contiguous arrays --------------------------------

    def _xp(self):
        """numpy, or cupy for factors on the GPU: the vectors below are made where the factors are."""
        return backends.holding(self.user_factors_).xp

    def _user_vectors(self, users: np.ndarray) -> np.ndarray:
        xp = self._xp()
        return xp.ascontiguousarray(self.user_factors_[xp.asarray(users)], dtype=xp.float32)

    def _queries_from_user_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """Search queries for user factors given directly (a model with biases extends them)."""
        return vectors

    def _item_vectors(self) -> np.ndarray:
        xp = self._xp()
        return self._cached("items", lambda: xp.ascontiguousarray(self.item_factors_, dtype=xp.float32))

    def _item_vector_rows(self, ids: np.ndarray, arrays: dict) -> np.ndarray:
        """Rows ``ids`` of :meth:`_item_vectors` computed from ``arrays`` (the item-side
        fitted arrays by attribute name, as an update is about to install them)."""
        return np.ascontiguousarray(arrays["item_factors_"][ids], dtype=np.float32)

    def _cached(self, name: str, build):
        """A value derived from the fitted factors, rebuilt when they are replaced (kept up
        to date by the partial fits, which change them in place or swap them)."""
        with self._serving_lock():
            cache = self._current_cache()
            if name not in cache:
                cache[name] = build()
            return cache[name]

    def _current_cache(self) -> dict:
        """The serving cache, emptied when the factors are other arrays than it was built
        for (a new fit, a load, ``to_device``); the caller holds ``_serving_lock``."""
        key = (self.user_factors_, self.item_factors_)
        cache = self.__dict__.setdefault("_serving_cache", {})
        held = cache.get("key")
        if held is None or held[0] is not key[0] or held[1] is not key[1]:
            cache.clear()
            cache["key"] = key
            # What the partial fits keep for the factors (Gram matrices, spare rows) is for
            # the old ones: let it go with them.
            self.__dict__.pop("_grams", None)
            self.__dict__.pop("_row_storage", None)
        return cache

    # -- locks (see the module docstring) ------------------------------------------------------

    def _serving_lock(self) -> threading.RLock:
        """Held while user-side rows are copied or written, and while the serving cache is
        read or changed."""
        return self._lock("_serving_lock_", threading.RLock)

    def _update_lock(self) -> threading.Lock:
        """Held for a whole partial fit: one update at a time."""
        return self._lock("_update_lock_", threading.Lock)

    def _lock(self, name: str, make):
        lock = self.__dict__.get(name)
        if lock is None:
            lock = self.__dict__.setdefault(name, make())  # one atomic insertion: every thread gets the same
        return lock

    # Per-model state that copies and pickles leave behind: locks, and the spare rows of
    # grown arrays (a copy of a view is an array of its own).
    _TRANSIENT = ("_serving_lock_", "_update_lock_", "_row_storage", "_grams")

    def __getstate__(self) -> dict:
        return {name: value for name, value in self.__dict__.items() if name not in self._TRANSIENT}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def _item_index(self) -> ItemIndex:
        """The items as searched by recommend, prepared once per fitted model."""

        def build():
            vectors = self._item_vectors()
            # Vectors made here (not item_factors_ itself) belong to the index: updates may write them.
            return _checked_index(vectors, "dot", "item", private=vectors is not self.item_factors_)

        return self._cached("item index", build)

    # -- recommendations --------------------------------------------------------------------

    def recommend(
        self,
        users,
        user_items=None,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        allow=None,
        deny=None,
        user_items_layout: str | None = None,
        num_threads: int | None = None,
        precision: str = "float32",
        filter_items=None,
        items=None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best items for one user or a batch of users, best first.

        Parameters
        ----------
        users : int or array-like of int
            One id gives 1-D results, an array gives one row per user.
        user_items : sparse matrix, optional
            The users' interactions, either the whole users x items matrix (rows picked by
            user id) or one row per entry of ``users`` (see ``user_items_layout``). With
            ``exclude_seen`` (the default), every stored item of a user's row is left out of
            that user's results.
        k : int >= 1
            Rows with fewer candidates end with id -1 and score -inf.
        exclude_seen : bool, default True
            Leave each user's items of ``user_items`` out of their results.
        allow : array-like of item ids, optional
            Recommend only among these.
        deny : array-like of item ids, optional
            Never recommended, to anyone.
        user_items_layout : {"full", "per_query"}, optional
            Which rows ``user_items`` holds: ``"full"``, every user's (n_users rows, picked by
            id); ``"per_query"``, one per entry of ``users``, in that order. By default it is
            told from the number of rows; when that fits both (as many users are queried as
            the model has, in another order than 0, 1, 2, ...) it must be given, and its
            absence is a ValueError rather than a guess.
        num_threads : int, optional
            Defaults to the model's ``num_threads``.
        precision : {"float32", "bfloat16"}
            The same results either way; see :func:`recore.topk`.
        filter_items, items
            Deprecated aliases of ``deny`` and ``allow``.

        Returns
        -------
        ids : int32 ndarray (n_users, k) or (k,)
        scores : float32 ndarray, the same shape

        Raises
        ------
        ValueError
            Not fitted, k < 1, ``user_items`` of the wrong shape or of an ambiguous layout.
        IndexError
            A user or item id out of range.
        """
        deny = _renamed_list(deny, filter_items, "deny", "filter_items")
        allow = _renamed_list(allow, items, "allow", "items")
        self._check_fitted(on_host=False)
        gpu = self._gpu_backend() if self.fitted_device_ == "cuda" else None
        users, single = _ids_argument(users, self.user_factors_.shape[0], "users")
        k = check_int(k, "k", minimum=1)
        exclude_seen = check_bool(exclude_seen, "exclude_seen")
        if user_items_layout is not None:
            check_choice(user_items_layout, "user_items_layout", LAYOUTS)
        num_threads = self._serving_threads(num_threads)
        precision = check_choice(precision, "precision", ("float32", "bfloat16"))
        if gpu is not None:
            seen = user_items if exclude_seen else None
            ids, scores = self._recommend_on_gpu(gpu, users, seen, k, allow, deny, user_items_layout, precision)
            return (ids[0], scores[0]) if single else (ids, scores)
        exclude = None
        if user_items is not None and exclude_seen:
            exclude = self._seen_rows(user_items, users, user_items_layout)
        with self._serving_lock():  # partial_fit_users writes these rows in place
            queries = self._user_vectors(users)
        ids, scores = self._search_index(
            self._item_index(), queries, k, exclude, deny, allow, num_threads, "users' factors", precision
        )
        return (ids[0], scores[0]) if single else (ids, scores)

    @staticmethod
    def _search_index(index, queries, k, exclude, deny, allow, num_threads, what, precision="float32"):
        """The model's own search: queries checked here, searched in pieces so that Ctrl-C is
        answered within about a second (see ItemIndex)."""
        # A query or two (a user served as they act) is checked by numpy, and the BLAS pools
        # are left alone: both cost more than such a search (a parallel region to read 64
        # floats; threadpoolctl's scan of the loaded libraries, about 0.3 ms).
        few = queries.shape[0] <= cpu.SINGLE_QUERY_PATH_MAX
        if not (bool(np.isfinite(queries).all()) if few else cpu.all_finite(queries)):
            raise ValueError(f"the {what} contain NaN or infinity")
        # One version of the catalog for the whole search; lists are checked against it (a
        # catalog grown by partial_fit_items since ``exclude`` was made: see ItemIndex).
        with index._reading() as version:
            n_items = version.n
            allowed = None if allow is None else item_ids(allow, n_items, "allow")
            denied = None if deny is None else denied_bits(item_ids(deny, n_items, "deny"), n_items)
            with contextlib.nullcontext() if few else engine_threads():
                return index._search_checked(version, queries, k, exclude, allowed, denied, precision, num_threads)

    def _recommend_on_gpu(self, gpu, users, user_items, k, allow, deny, layout, precision):
        """:meth:`recommend` for factors on the GPU: searched there by the CUDA engine. The
        results come back as numpy arrays, as on the CPU (k ids per user are small); the
        factors and the prepared items stay on the GPU."""
        exclude = None if user_items is None else self._seen_rows_for_gpu(user_items, users, layout)
        with self._serving_lock():
            queries = self._user_vectors(users)
        if not gpu.all_finite(queries):
            raise ValueError("the users' factors contain NaN or infinity")
        ids, scores = gpu.topk(queries, self._item_vectors(), k, exclude=exclude, allow=allow, deny=deny,
                               precision=precision)  # fmt: skip
        return gpu.to_host(ids), gpu.to_host(scores)

    def _gpu_backend(self):
        """The CUDA backend, for serving factors that live on the GPU (RuntimeError where it
        cannot run, as after loading such a model's pickle on a machine without one)."""
        from recore import cuda

        reason = cuda.unavailable_reason()
        if reason is not None:
            raise RuntimeError(
                f"this {type(self).__name__}'s factors live on the GPU, but the CUDA engine is unavailable: {reason}"
            )
        return backends.get("cuda")

    def _seen_rows_for_gpu(self, user_items, users: np.ndarray, layout: str | None):
        """The queried users' rows of ``user_items`` for a search on the GPU: a cupyx sparse
        matrix is sliced there; scipy is checked and sliced here (only those rows travel)."""
        if not _device.is_gpu_sparse(user_items):
            rows = self._seen_rows(user_items, users, layout)
            return rows.to_scipy() if isinstance(rows, TakenRows) else rows
        layout = self._seen_layout(user_items, users, layout)
        if layout == "per_query":
            return user_items
        xp = self._xp()
        return user_items.tocsr()[xp.asarray(users)]

    def recommend_all(self, user_items=None, k: int = 10, **options) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`recommend` for every user, in user order.

        Parameters
        ----------
        user_items : sparse matrix (n_users, n_items), optional
            Every user's items, left out of their results.
        k : int >= 1
        **options
            Any keyword argument of :meth:`recommend`.

        Returns
        -------
        ids : int32 ndarray (n_users, k)
        scores : float32 ndarray (n_users, k)
        """
        self._check_fitted(on_host=False)
        if self.fitted_device_ == "cuda":
            self._gpu_backend()  # where it cannot run, the same error as recommend's
        return self.recommend(np.arange(self.user_factors_.shape[0]), user_items, k, **options)

    def _seen_rows(self, user_items, users: np.ndarray, layout: str | None):
        """Each queried user's row of ``user_items`` as per-query exclusions."""
        n_users, n_items = self.user_factors_.shape[0], self.item_factors_.shape[0]
        if not sp.issparse(user_items):
            raise TypeError(f"user_items must be a scipy.sparse matrix, got {type(user_items).__name__}")
        layout = self._seen_layout(user_items, users, layout)
        few = len(users) <= cpu.SINGLE_QUERY_PATH_MAX
        if layout == "per_query":
            rows = user_items
        elif user_items.format == "csr" and (few or len(users) < n_users // 64):
            # A few users of a large matrix: check the pointers of the rows taken (O(users)),
            # slice, and check only those rows, so that serving one user does not read them all.
            check_taken_row_pointers(user_items, users, "user_items")
            # One or two users: their rows sliced here, already in the engine's form.
            exclusions = few_taken_rows(user_items, users, "user_items") if few else None
            if exclusions is not None:
                return exclusions
            rows = user_items[users]
        else:
            rows = as_exclusions(user_items, n_users, n_items)[users]
        return as_exclusions(rows, len(users), n_items)

    def _seen_layout(self, user_items, users: np.ndarray, layout: str | None) -> str:
        """Which rows ``user_items`` (a sparse matrix on either device) holds, its shape checked."""
        n_users, n_items = self.user_factors_.shape[0], self.item_factors_.shape[0]
        if user_items.ndim != 2 or user_items.shape[1] != n_items:
            raise ValueError(f"user_items must have {n_items} columns (one per item), got shape {user_items.shape}")
        layout = layout or _layout_of(user_items.shape[0], users, n_users)
        expected = n_users if layout == "full" else len(users)
        if user_items.shape[0] != expected:
            what = "every user" if layout == "full" else "one per queried user"
            raise ValueError(
                f"user_items_layout={layout!r}: user_items must have {expected} rows ({what}), "
                f"got {user_items.shape[0]}"
            )
        return layout

    def _serving_threads(self, num_threads) -> int:
        if num_threads is None:
            num_threads = getattr(self, "num_threads", 0)
        return check_int(num_threads, "num_threads", minimum=0)

    # -- similarity -------------------------------------------------------------------------

    def similar_items(
        self, items, k: int = 10, *, exclude_self: bool = False, num_threads: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` items most similar to each given item by cosine of their factors.

        Parameters
        ----------
        items : int or array-like of int
            Item ids; one id gives 1-D results.
        k : int >= 1
        exclude_self : bool, default False
            With False an item is normally its own first result (cosine 1); True leaves it
            out. An item whose factors are all zero has cosine 0 with everything.
        num_threads : int, optional
            Defaults to the model's ``num_threads``.

        Returns
        -------
        ids : int32 ndarray (n, k) or (k,)
        scores : float32 ndarray, the same shape
        """
        self._check_fitted(on_host=False)
        if self.fitted_device_ == "cuda":
            return self._similar_on_gpu(self._gpu_backend(), self.item_factors_, items, k, exclude_self, "items")
        index = self._cached(
            "unit items",
            lambda: _checked_index(np.ascontiguousarray(self.item_factors_, dtype=np.float32), "cosine", "item"),
        )
        return self._similar(index, items, k, exclude_self, num_threads, "items")

    def similar_users(
        self, users, k: int = 10, *, exclude_self: bool = False, num_threads: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` users most similar to each given user by cosine of their factors.

        Parameters
        ----------
        users : int or array-like of int
            User ids; one id gives 1-D results.
        k : int >= 1
        exclude_self : bool, default False
            Leave each user out of their own results.
        num_threads : int, optional
            Defaults to the model's ``num_threads``.

        Returns
        -------
        ids : int32 ndarray (n, k) or (k,)
        scores : float32 ndarray, the same shape
        """
        self._check_fitted(on_host=False)
        if self.fitted_device_ == "cuda":
            return self._similar_on_gpu(self._gpu_backend(), self.user_factors_, users, k, exclude_self, "users")
        index = self._cached(
            "unit users",
            lambda: _checked_index(np.ascontiguousarray(self.user_factors_, dtype=np.float32), "cosine", "user"),
        )
        return self._similar(index, users, k, exclude_self, num_threads, "users")

    def _similar(self, index, ids, k, exclude_self, num_threads, name):
        k = check_int(k, "k", minimum=1)
        exclude_self = check_bool(exclude_self, "exclude_self")
        num_threads = self._serving_threads(num_threads)
        with index._reading() as version:  # queries and catalog from one version
            n = version.n
            ids, single = _ids_argument(ids, n, name)
            exclude = _self_exclusions(ids, n) if exclude_self else None
            # The queries are rows of the index itself: already unit length and checked.
            queries = np.ascontiguousarray(version.items[ids])
            with engine_threads():
                found, scores = index._search_checked(version, queries, k, exclude, None, None, "float32", num_threads)
        return (found[0], scores[0]) if single else (found, scores)

    def _similar_on_gpu(self, gpu, factors, ids, k, exclude_self, name):
        """:meth:`similar_items` / :meth:`similar_users` for factors on the GPU, as the CPU
        does them: the unit rows are made and checked once per fitted model (the CPU's
        normalization, operation for operation) and the queries are rows of them; numpy out."""
        k = check_int(k, "k", minimum=1)
        exclude_self = check_bool(exclude_self, "exclude_self")
        n = factors.shape[0]
        ids, single = _ids_argument(ids, n, name)
        exclude = _self_exclusions(ids, n) if exclude_self else None
        xp = self._xp()

        def build():
            if not gpu.all_finite(factors):
                raise ValueError(f"the model's {name[:-1]} factors contain NaN or infinity")
            return unit_rows(xp, xp.ascontiguousarray(factors, dtype=np.float32))

        unit = self._cached(f"unit {name} on the GPU", build)
        found, scores = gpu.topk(unit[xp.asarray(ids)], unit, k, exclude=exclude)
        found, scores = gpu.to_host(found), gpu.to_host(scores)
        return (found[0], scores[0]) if single else (found, scores)

    # -- new users --------------------------------------------------------------------------

    def fold_in(self, user_items_rows) -> np.ndarray:
        """Factors for new or changed users from their interactions, with the item factors
        fixed: one exact least-squares solve per user (the user half of an ALS step, with
        this model's objective), so a user who just acted can be served at once.

        Parameters
        ----------
        user_items_rows : sparse matrix or array (n_rows, n_items)

        Returns
        -------
        ndarray (n_rows, factors), the dtype of ``user_factors_``; use it as the query of
        :func:`recore.topk`, or give the rows to :meth:`recommend_vectors`.
        """
        self._check_fitted()
        item_factors = self.item_factors_  # read once: never written in place (see the module docstring)
        dtype = item_factors.dtype
        options = self._fold_in_objective()
        rows = as_user_items(
            user_items_rows, dtype, name="user_items_rows", allow_negative=options["feedback"] != "implicit"
        )
        n_items = item_factors.shape[0]
        if rows.shape[1] != n_items:
            raise ValueError(f"user_items_rows must have {n_items} columns (one per item), got {rows.shape[1]}")
        target = np.zeros((rows.shape[0], item_factors.shape[1]), dtype=dtype)
        gram = self._gram("item", item_factors) if options["feedback"] == "implicit" else None
        cpu.als_half_step(rows, item_factors, gram, target, solver="cholesky", **options)
        return target

    def recommend_vectors(
        self,
        user_vectors,
        user_items_rows=None,
        k: int = 10,
        *,
        allow=None,
        deny=None,
        num_threads: int | None = None,
        precision: str = "float32",
        filter_items=None,
        items=None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`recommend` for user factors given directly (for example from
        :meth:`fold_in`), excluding each row's items of ``user_items_rows`` when given.

        Parameters
        ----------
        user_vectors : array-like (n, factors) or (factors,)
            User factors; a 1-D vector gives 1-D results.
        user_items_rows : sparse matrix (n, n_items), optional
            Items to leave out, one row per vector.
        k : int >= 1
        allow, deny, num_threads, precision
            As for :meth:`recommend`.
        filter_items, items
            Deprecated aliases of ``deny`` and ``allow``.

        Returns
        -------
        ids : int32 ndarray (n, k) or (k,)
        scores : float32 ndarray, the same shape
        """
        deny = _renamed_list(deny, filter_items, "deny", "filter_items")
        allow = _renamed_list(allow, items, "allow", "items")
        self._check_fitted()
        array = np.asarray(user_vectors)
        if array.dtype.kind not in "fiu":
            raise TypeError(f"user_vectors must hold real numbers, got dtype {array.dtype}")
        if array.ndim not in (1, 2):
            raise ValueError(f"user_vectors must be 1- or 2-dimensional, got {array.ndim} dimensions")
        vectors = np.ascontiguousarray(np.atleast_2d(array), dtype=np.float32)
        n_items = self.item_factors_.shape[0]
        k = check_int(k, "k", minimum=1)
        num_threads = self._serving_threads(num_threads)
        width = self.user_factors_.shape[1]
        if vectors.ndim != 2 or vectors.shape[1] != width:
            raise ValueError(f"user_vectors must have {width} values per row, got shape {vectors.shape}")
        vectors = self._queries_from_user_vectors(vectors)
        exclude = None if user_items_rows is None else as_exclusions(user_items_rows, vectors.shape[0], n_items)
        ids, scores = self._search_index(
            self._item_index(), vectors, k, exclude, deny, allow, num_threads, "user_vectors",
            check_choice(precision, "precision", ("float32", "bfloat16")),
        )  # fmt: skip
        return (ids[0], scores[0]) if array.ndim == 1 else (ids, scores)

    # -- partial fits: what ALS and SGD share (see the module docstring) ---------------------

    def _gram(self, side: str, factors: np.ndarray) -> np.ndarray:
        """The Gram matrix of ``factors`` (this model's ``side`` factors), kept until that side
        changes, so that solving a few rows against it costs O(entries f^2 + f^3), not
        O(n f^2). The same function as a fit's (bitwise the same matrix)."""
        grams = self.__dict__.setdefault("_grams", {})
        held = grams.get(side)
        if held is not None and held[0] is factors:
            return held[1]
        gram = cpu.gram_matrix(factors, num_threads=getattr(self, "num_threads", 0))
        grams[side] = (factors, gram)
        return gram

    def _check_updatable(self) -> None:
        self._check_fitted()
        for name in ("user_factors_", "item_factors_"):
            value = getattr(self, name)
            if not isinstance(value, np.ndarray):
                raise TypeError(
                    f"partial fits update numpy factors in this process; {name} is a {type(value).__name__} "
                    "(a distributed fit's output='dask' factors: fit with output='numpy')"
                )

    def _partial_fit_arguments(self, side: str, ids, rows, dtype, *, allow_negative: bool):
        """The checked arguments of ``partial_fit_users`` / ``partial_fit_items``: unique ids
        >= 0 of ``side`` (past the end: new rows), and their rows as a canonical CSR matrix
        with one column per row of the other side (a narrower matrix, made before that side
        grew, is widened: it has no entries for the newer rows)."""
        other = "item" if side == "user" else "user"
        ids_name, rows_name = f"{side}_ids", f"{side}_{other}s_rows"
        ids = update_ids(ids, ids_name)
        rows = as_user_items(rows, dtype, name=rows_name, allow_negative=allow_negative)
        n_other = getattr(self, f"{other}_factors_").shape[0]
        if rows.shape[0] != len(ids):
            raise ValueError(f"{rows_name} must have one row per id of {ids_name} ({len(ids)}), got {rows.shape[0]}")
        if rows.shape[1] > n_other:
            raise ValueError(
                f"{rows_name} has {rows.shape[1]} columns, but the model has {n_other} {other}s: add the new "
                f"{other}s first with partial_fit_{other}s"
            )
        if rows.shape[1] < n_other:
            rows = _widened_rows(rows, n_other)
        return ids, rows

    def _write_rows(self, side: str, ids: np.ndarray, values: dict) -> None:
        """Installs new values for rows ``ids`` of one side's fitted arrays and brings the
        serving indexes already built up to date. ``values`` maps attribute names to
        ``(rows, fill)``: the new rows, and the value of rows that ids past the end add
        (the rows between the old end and the new ids, which keep it). The caller holds
        ``_update_lock``."""
        n_old = getattr(self, f"{side}_factors_").shape[0]
        n_new = max(n_old, int(ids.max()) + 1) if len(ids) else n_old
        changed = np.union1d(ids, np.arange(n_old, n_new))
        if side == "user":
            self._write_user_rows(ids, values, changed, n_new)
        else:
            self._write_item_rows(ids, values, changed, n_new)

    def _write_user_rows(self, ids, values, changed, n_new) -> None:
        # In place, under the lock the serving methods hold while they copy user rows out.
        with self._serving_lock():
            cache = self._current_cache()
            arrays = {name: self._with_rows(name, n_new, fill) for name, (_, fill) in values.items()}
            for name, (rows, _) in values.items():
                arrays[name][ids] = rows
            for name, array in arrays.items():
                setattr(self, name, array)
            cache["key"] = (self.user_factors_, self.item_factors_)
            self.__dict__.get("_grams", {}).pop("user", None)
            users = cache.get("unit users")
            if users is not None:
                users._update_checked(changed, normalized_rows(_float32_rows(self.user_factors_, changed)))

    def _write_item_rows(self, ids, values, changed, n_new) -> None:
        # New arrays, assigned: the old ones may be read by searches, fold-ins and
        # predictions under way (the cost: one copy of the item side per call).
        arrays = {}
        for name, (rows, fill) in values.items():
            current = getattr(self, name)
            fresh = np.full((n_new, *current.shape[1:]), fill, dtype=current.dtype)
            fresh[: current.shape[0]] = current
            fresh[ids] = rows
            arrays[name] = fresh
        with self._serving_lock():
            cache = self._current_cache()
            index = cache.get("item index")
            if index is not None:
                every = {name: getattr(self, name) for name in ("item_factors_", "item_biases_") if hasattr(self, name)}
                index._update_checked(changed, self._item_vector_rows(changed, {**every, **arrays}))
            unit = cache.get("unit items")
            if unit is not None:
                unit._update_checked(changed, normalized_rows(_float32_rows(arrays["item_factors_"], changed)))
            cache.pop("items", None)  # the full matrix is built again only if an index is
            for name, array in arrays.items():
                setattr(self, name, array)
            cache["key"] = (self.user_factors_, self.item_factors_)
            self.__dict__.get("_grams", {}).pop("item", None)

    def _with_rows(self, name: str, n_rows: int, fill) -> np.ndarray:
        """Attribute ``name`` (a user-side array) with at least its rows and ``n_rows`` in
        all, writable in place: itself, or a longer view of spare storage kept for growth
        (new rows hold ``fill``), so that adding users one at a time copies the matrix
        O(log n) times, not once per user."""
        current = getattr(self, name)
        if current.shape[0] >= n_rows and current.flags.writeable:
            return current
        storages = self.__dict__.setdefault("_row_storage", {})
        storage = storages.get(name)
        if (
            storage is not None
            and current.base is storage
            and storage.shape[0] >= n_rows
            and current.__array_interface__["data"][0] == storage.__array_interface__["data"][0]
        ):
            return storage[:n_rows]
        n = current.shape[0]
        capacity = grown_capacity(n, n_rows) if n_rows > n else n
        storage = np.full((capacity, *current.shape[1:]), fill, dtype=current.dtype)
        storage[:n] = current
        storages[name] = storage
        return storage[: max(n, n_rows)]


def _self_exclusions(ids: np.ndarray, n: int):
    """One exclusion row per id, holding that id: leaves each query out of its own results."""
    index_dtype = np.int64 if n > INT32_MAX else np.int32
    pointers = np.arange(len(ids) + 1, dtype=index_dtype)
    exclude = sp.csr_matrix((np.ones(len(ids), np.float32), ids.astype(index_dtype), pointers), shape=(len(ids), n))
    return as_exclusions(exclude, len(ids), n)


def _layout_of(rows: int, users: np.ndarray, n_users: int) -> str:
    """Which rows ``user_items`` holds, told from their number, or ValueError when it fits both."""
    if rows == n_users and rows == len(users):
        if np.array_equal(users, np.arange(n_users)):
            return "full"  # both readings pick the same rows
        raise ValueError(
            f"user_items has {rows} rows, as many as the model has users and as many as were queried, and the "
            "users are not queried in id order: say which with user_items_layout='full' (rows picked by user id) "
            "or user_items_layout='per_query' (one row per queried user)"
        )
    if rows == n_users:
        return "full"
    if rows == len(users):
        return "per_query"
    raise ValueError(
        f"user_items must have {n_users} rows (every user) or {len(users)} (one per queried user), got {rows}"
    )


def _checked_index(vectors: np.ndarray, metric: str, what: str, private: bool = False) -> ItemIndex:
    if not cpu.all_finite(vectors):
        raise ValueError(f"the model's {what} factors contain NaN or infinity")
    index = ItemIndex(vectors, metric=metric, check_finite=False)
    if private:
        index._version.owned = True  # no copy before the first update
    return index


def _float32_rows(factors: np.ndarray, ids: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(factors[ids], dtype=np.float32)


def _widened_rows(rows, n_columns: int):
    """A canonical CSR matrix with more columns: the same arrays, no entries in the new ones."""
    index_dtype = np.int64 if n_columns > INT32_MAX else rows.indices.dtype
    wide = sp.csr_matrix((rows.shape[0], n_columns), dtype=rows.dtype)
    wide.data = rows.data
    wide.indices = rows.indices.astype(index_dtype, copy=False)
    wide.indptr = rows.indptr.astype(index_dtype, copy=False)
    wide.has_canonical_format = True
    return wide
