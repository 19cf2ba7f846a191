"""Serving a fitted factor model: top-N recommendations, similar items and users, and
fold-in of new users. Shared by every recore model through :class:`Recommender`."""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import scipy.sparse as sp

from recore._filters import INT32_MAX, as_exclusions, denied_bits, item_ids
from recore._threads import engine_threads
from recore._validation import as_user_items, check_bool, check_choice, check_ids, check_int, check_row_pointers
from recore.backends import cpu
from recore.topk import ItemIndex

LAYOUTS = ("full", "per_query")


def _ids_argument(ids, bound: int, name: str) -> tuple[np.ndarray, bool]:
    """(1-D int64 ids, whether a single id was given)."""
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
        self._check_fitted()
        users, single = _ids_argument(users, self.user_factors_.shape[0], "users")
        k = check_int(k, "k", minimum=1)
        exclude_seen = check_bool(exclude_seen, "exclude_seen")
        if user_items_layout is not None:
            check_choice(user_items_layout, "user_items_layout", LAYOUTS)
        num_threads = self._serving_threads(num_threads)
        precision = check_choice(precision, "precision", ("float32", "bfloat16"))
        exclude = None
        if user_items is not None and exclude_seen:
            exclude = self._seen_rows(user_items, users, user_items_layout)
        ids, scores = self._search_index(
            self._item_index(), self._user_vectors(users), k, exclude, deny, allow, num_threads, "users' factors",
            precision,
        )  # fmt: skip
        return (ids[0], scores[0]) if single else (ids, scores)

    @staticmethod
    def _search_index(index, queries, k, exclude, deny, allow, num_threads, what, precision="float32"):
        """The model's own search: queries checked here, searched in pieces so that Ctrl-C is
        answered within about a second (see ItemIndex)."""
        if not cpu.all_finite(queries):
            raise ValueError(f"the {what} contain NaN or infinity")
        n_items = index.n_items
        allowed = None if allow is None else item_ids(allow, n_items, "allow")
        denied = None if deny is None else denied_bits(item_ids(deny, n_items, "deny"), n_items)
        with engine_threads():
            return index._search_checked(queries, k, exclude, allowed, denied, precision, num_threads)

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
        self._check_fitted()
        return self.recommend(np.arange(self.user_factors_.shape[0]), user_items, k, **options)

    def _seen_rows(self, user_items, users: np.ndarray, layout: str | None):
        """Each queried user's row of ``user_items`` as per-query exclusions."""
        n_users, n_items = self.user_factors_.shape[0], self.item_factors_.shape[0]
        if not sp.issparse(user_items):
            raise TypeError(f"user_items must be a scipy.sparse matrix, got {type(user_items).__name__}")
        if user_items.ndim != 2 or user_items.shape[1] != n_items:
            raise ValueError(f"user_items must have {n_items} columns (one per item), got shape {user_items.shape}")
        layout = layout or _layout_of(user_items.shape[0], users, n_users)
        expected = n_users if layout == "full" else len(users)
        if user_items.shape[0] != expected:
            what = "every user" if layout == "full" else "one per queried user"
            raise ValueError(
                f"user_items_layout={layout!r}: user_items must have {expected} rows ({what}), got {user_items.shape[0]}"
            )
        if layout == "per_query":
            rows = user_items
        elif user_items.format == "csr" and len(users) < n_users // 64:
            # A few users of a large matrix: check the row pointers (O(users)), slice, and
            # check only the rows taken, so that serving one user does not read them all.
            check_row_pointers(user_items, "user_items")
            rows = user_items[users]
        else:
            rows = as_exclusions(user_items, n_users, n_items)[users]
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
        self._check_fitted()
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
            index_dtype = np.int64 if index.n_items > INT32_MAX else np.int32
            exclude = sp.csr_matrix(
                (np.ones(len(ids), np.float32), ids.astype(index_dtype), np.arange(len(ids) + 1, dtype=index_dtype)),
                shape=(len(ids), index.n_items),
            )
            exclude = as_exclusions(exclude, len(ids), index.n_items)
        # The queries are rows of the index itself: already unit length and checked.
        queries = np.ascontiguousarray(index.items[ids])
        with engine_threads():
            found, scores = index._search_checked(queries, k, exclude, None, None, "float32", num_threads)
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
        dtype = self.item_factors_.dtype
        options = self._fold_in_objective()
        rows = as_user_items(
            user_items_rows, dtype, name="user_items_rows", allow_negative=options["feedback"] != "implicit"
        )
        n_items = self.item_factors_.shape[0]
        if rows.shape[1] != n_items:
            raise ValueError(f"user_items_rows must have {n_items} columns (one per item), got {rows.shape[1]}")
        target = np.zeros((rows.shape[0], self.item_factors_.shape[1]), dtype=dtype)
        gram = cpu.gram_matrix(self.item_factors_) if options["feedback"] == "implicit" else None
        cpu.als_half_step(rows, self.item_factors_, gram, target, solver="cholesky", **options)
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


def _checked_index(vectors: np.ndarray, metric: str, what: str) -> ItemIndex:
    if not cpu.all_finite(vectors):
        raise ValueError(f"the model's {what} factors contain NaN or infinity")
    return ItemIndex(vectors, metric=metric, check_finite=False)
