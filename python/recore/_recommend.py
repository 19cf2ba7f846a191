"""Serving a fitted factor model: top-N recommendations, similar items and users, and
fold-in of new users. Shared by every recore model through :class:`Recommender`."""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp

from recore import _core
from recore._threads import engine_threads
from recore._validation import as_user_items, check_bool, check_choice, check_ids, check_int, check_row_pointers
from recore.topk import _INT32_MAX, _SINGLE_QUERY_PATH_MAX, ItemIndex, _item_ids, as_exclusions


def _ids_argument(ids, bound: int, name: str) -> tuple[np.ndarray, bool]:
    """(1-D int64 ids, whether a single id was given)."""
    single = isinstance(ids, numbers.Integral) or (isinstance(ids, np.ndarray) and ids.ndim == 0)
    array = check_ids(np.atleast_1d(np.asarray(ids)), bound, name)
    if array.ndim != 1:
        raise ValueError(f"{name} must be an id or a 1-dimensional array of ids")
    return array, single


# Work per search call in a batch, in multiply-adds (users x items x factors): about 0.4 s
# on 2 cores, so that Ctrl-C is answered within a second.
_SEARCH_CHUNK_MULTIPLY_ADDS = 1 << 35


class Recommender:
    """Top-k serving for a model with ``user_factors_`` and ``item_factors_``.

    Scores are ``user . item`` over the vectors :meth:`_user_vectors` and
    :meth:`_item_vectors` give (a model with biases appends them to its factors).
    """

    # -- the model's vectors, as float32 C-contiguous arrays --------------------------------

    def _user_vectors(self, users: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.user_factors_[users], dtype=np.float32)

    def _queries_from_user_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """Search queries for user factors given directly (a model with biases extends them)."""
        return vectors

    def _item_vectors(self) -> np.ndarray:
        return self._cached("items", lambda: np.ascontiguousarray(self.item_factors_, dtype=np.float32))

    def _cached(self, name: str, build):
        """A value derived from the fitted factors, rebuilt when they change."""
        key = (id(self.user_factors_), id(self.item_factors_))
        cache = self.__dict__.setdefault("_serving_cache", {})
        if cache.get("key") != key:
            cache.clear()
            cache["key"] = key
        if name not in cache:
            cache[name] = build()
        return cache[name]

    def _item_index(self) -> ItemIndex:
        """The items as searched by recommend, prepared once per fitted model."""
        return self._cached("item index", lambda: _checked_index(self._item_vectors(), "dot", "item"))

    # -- recommendations --------------------------------------------------------------------

    def recommend(
        self,
        users,
        user_items=None,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        filter_items=None,
        items=None,
        num_threads: int | None = None,
        precision: str = "float32",
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best items for one user or a batch of users, best first.

        Parameters
        ----------
        users : int or array-like of int
            One id gives 1-D results, an array gives one row per user.
        user_items : sparse matrix, optional
            The users' interactions: either the whole users x items matrix (rows picked by
            user id) or one row per entry of ``users``. With ``exclude_seen`` (the default),
            every stored item of a user's row is left out of that user's results.
        k : int >= 1
            Rows with fewer candidates end with id -1 and score -inf.
        exclude_seen : bool, default True
        filter_items : array-like of item ids, optional
            Never recommended, to anyone.
        items : array-like of item ids, optional
            Recommend only among these.
        num_threads : int, optional
            Defaults to the model's ``num_threads``.
        precision : "float32" or "bfloat16"
            The same results either way; see :func:`recore.topk`.

        Returns
        -------
        ids : int32 ndarray (n_users, k) or (k,)
        scores : float32 ndarray, the same shape
        """
        self._check_fitted()
        users, single = _ids_argument(users, self.user_factors_.shape[0], "users")
        k = check_int(k, "k", minimum=1)
        exclude_seen = check_bool(exclude_seen, "exclude_seen")
        num_threads = self._serving_threads(num_threads)
        exclude = None
        if user_items is not None and exclude_seen:
            exclude = self._seen_rows(user_items, users)
        index = self._item_index()
        ids, scores = self._search_index(
            index,
            self._user_vectors(users),
            k,
            exclude,
            filter_items,
            items,
            num_threads,
            "users' factors",
            check_choice(precision, "precision", ("float32", "bfloat16")),
        )
        return (ids[0], scores[0]) if single else (ids, scores)

    @staticmethod
    def _search_index(index, queries, k, exclude, filter_items, items, num_threads, what, precision="float32"):
        """Searches in chunks of users, so that Ctrl-C is answered between chunks (within
        about a second) and the caller's data are never left half-written."""
        if not _core.all_finite(queries):
            raise ValueError(f"the {what} contain NaN or infinity")
        if filter_items is not None:
            filter_items = _item_ids(filter_items, index.n_items, "filter_items")
        if items is not None:
            items = _item_ids(items, index.n_items, "items")
        n = queries.shape[0]
        work_per_user = max(1, index.n_items * queries.shape[1])
        chunk = max(_SINGLE_QUERY_PATH_MAX + 1, _SEARCH_CHUNK_MULTIPLY_ADDS // work_per_user)
        if n <= chunk:
            return index.search(
                queries, k, exclude=exclude, allow=items, deny=filter_items, num_threads=num_threads,
                check_finite=False, precision=precision,
            )  # fmt: skip
        parts = []
        with engine_threads():
            for first in range(0, n, chunk):
                rows = slice(first, min(n, first + chunk))
                parts.append(
                    index.search(
                        queries[rows],
                        k,
                        exclude=None if exclude is None else exclude[rows],
                        allow=items,
                        deny=filter_items,
                        num_threads=num_threads,
                        check_finite=False,
                        precision=precision,
                    )  # fmt: skip
                )
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def recommend_all(self, user_items=None, k: int = 10, **options) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`recommend` for every user, in user order."""
        self._check_fitted()
        return self.recommend(np.arange(self.user_factors_.shape[0]), user_items, k, **options)

    def _seen_rows(self, user_items, users: np.ndarray):
        """Each queried user's row of ``user_items`` as per-query exclusions."""
        n_users, n_items = self.user_factors_.shape[0], self.item_factors_.shape[0]
        if not sp.issparse(user_items):
            raise TypeError(f"user_items must be a scipy.sparse matrix, got {type(user_items).__name__}")
        if user_items.ndim != 2 or user_items.shape[1] != n_items:
            raise ValueError(f"user_items must have {n_items} columns (one per item), got shape {user_items.shape}")
        if user_items.shape[0] == n_users:
            if user_items.format == "csr" and len(users) < n_users // 64:
                # A few users of a large matrix: check the row pointers (O(users)), slice, and
                # check only the rows taken, so that serving one user does not read them all.
                check_row_pointers(user_items, "user_items")
                rows = user_items[users]
            else:
                rows = as_exclusions(user_items, n_users, n_items)[users]
        elif user_items.shape[0] == len(users):
            rows = user_items
        else:
            raise ValueError(
                f"user_items must have {n_users} rows (every user) or {len(users)} (one per queried user), "
                f"got {user_items.shape[0]}"
            )
        return as_exclusions(rows, len(users), n_items)

    def _serving_threads(self, num_threads) -> int:
        if num_threads is None:
            num_threads = getattr(self, "num_threads", 0)
        return check_int(num_threads, "num_threads", minimum=0)

    # -- similarity -------------------------------------------------------------------------

    def similar_items(
        self, items, k: int = 10, *, exclude_self: bool = False, num_threads: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` items most similar to each given item by cosine of their factors.

        With ``exclude_self=False`` (the default) an item is normally its own first
        result (cosine 1); ``exclude_self=True`` leaves it out. An item whose factors are
        all zero has cosine 0 with everything.
        """
        self._check_fitted()
        index = self._cached(
            "unit items",
            lambda: _checked_index(np.ascontiguousarray(self.item_factors_, dtype=np.float32), "cosine", "item"),
        )
        return self._similar(index, items, k, exclude_self, num_threads, "items")

    def similar_users(
        self, users, k: int = 10, *, exclude_self: bool = False, num_threads: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` users most similar to each given user by cosine of their factors
        (see :meth:`similar_items`)."""
        self._check_fitted()
        index = self._cached(
            "unit users",
            lambda: _checked_index(np.ascontiguousarray(self.user_factors_, dtype=np.float32), "cosine", "user"),
        )
        return self._similar(index, users, k, exclude_self, num_threads, "users")

    def _similar(self, index, ids, k, exclude_self, num_threads, name):
        ids, single = _ids_argument(ids, index.n_items, name)
        k = check_int(k, "k", minimum=1)
        exclude_self = check_bool(exclude_self, "exclude_self")
        num_threads = self._serving_threads(num_threads)
        exclude = None
        if exclude_self:
            index_dtype = np.int64 if index.n_items > _INT32_MAX else np.int32
            exclude = sp.csr_matrix(
                (np.ones(len(ids), np.float32), ids.astype(index_dtype), np.arange(len(ids) + 1, dtype=index_dtype)),
                shape=(len(ids), index.n_items),
            )
        # The queries are rows of the index itself: already unit length and checked.
        found, scores = _core.topk(
            np.ascontiguousarray(index.items[ids]),
            index.items,
            k,
            exclude=None if exclude is None else as_exclusions(exclude, len(ids), index.n_items),
            wide_ids=index.n_items > _INT32_MAX,
            check_finite=False,
            num_threads=num_threads,
            item_panels=index.panels() if len(ids) <= _SINGLE_QUERY_PATH_MAX else None,
        )
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
        from recore import kernels

        dtype = self.item_factors_.dtype
        options = self._fold_in_objective()
        rows = as_user_items(
            user_items_rows, dtype, name="user_items_rows", allow_negative=options["feedback"] != "implicit"
        )
        n_items = self.item_factors_.shape[0]
        if rows.shape[1] != n_items:
            raise ValueError(f"user_items_rows must have {n_items} columns (one per item), got {rows.shape[1]}")
        target = np.zeros((rows.shape[0], self.item_factors_.shape[1]), dtype=dtype)
        gram = kernels.gram_matrix(self.item_factors_) if options["feedback"] == "implicit" else None
        kernels.als_half_step(rows, self.item_factors_, gram, target, solver="cholesky", **options)
        return target

    def recommend_vectors(
        self,
        user_vectors,
        user_items_rows=None,
        k: int = 10,
        *,
        filter_items=None,
        items=None,
        num_threads: int | None = None,
        precision: str = "float32",
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`recommend` for user factors given directly (for example from
        :meth:`fold_in`), excluding each row's items of ``user_items_rows`` when given."""
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
            self._item_index(),
            vectors,
            k,
            exclude,
            filter_items,
            items,
            num_threads,
            "user_vectors",
            check_choice(precision, "precision", ("float32", "bfloat16")),
        )
        return (ids[0], scores[0]) if array.ndim == 1 else (ids, scores)


def _checked_index(vectors: np.ndarray, metric: str, what: str) -> ItemIndex:
    if not _core.all_finite(vectors):
        raise ValueError(f"the model's {what} factors contain NaN or infinity")
    return ItemIndex(vectors, metric=metric, check_finite=False)
