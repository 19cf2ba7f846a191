"""Interactions with arbitrary user and item ids, mapped to the contiguous indices recore's
models use, and back."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recore._validation import check_choice, check_int

__all__ = ["Interactions"]


def _factorize(values, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(codes, uniques): codes[k] indexes values[k] in uniques (sorted when sortable)."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got {array.ndim} dimensions")
    if array.dtype.kind == "f" and np.isnan(array).any():
        raise ValueError(f"{name} contains NaN")
    try:
        uniques, codes = np.unique(array, return_inverse=True)
    except TypeError:  # mixed types: keep first-seen order
        import pandas as pd

        codes, uniques = pd.factorize(array)
        uniques = np.asarray(uniques)
    return codes.astype(np.int64), uniques


class Interactions:
    """A users x items interaction matrix built from (user id, item id, value, timestamp)
    records with any ids (numbers or strings), with the mapping between ids and indices.

    Parameters
    ----------
    users, items : array-like (n,)
        Ids of each record: numbers or strings. Rows and columns follow the sorted ids
        (first-seen order for ids of mixed types).
    values : array-like (n,), optional
        Real numbers; defaults to 1 for every record.
    timestamps : array-like (n,), optional
        Times of the records (numbers or datetimes).
    duplicates : {"sum", "error"}, default "sum"
        Records of the same (user, item) pair: summed (their latest timestamp kept) or
        refused with ValueError.

    Attributes
    ----------
    matrix : scipy.sparse.csr_matrix (n_users, n_items), float32, canonical
    timestamps : int64 or datetime ndarray, one per stored entry in CSR order, or None
    user_ids, item_ids : ndarrays: the id of each row and column
    """

    def __init__(self, users, items, values=None, timestamps=None, *, duplicates: str = "sum"):
        check_choice(duplicates, "duplicates", ("sum", "error"))
        user_codes, self.user_ids = _factorize(users, "users")
        item_codes, self.item_ids = _factorize(items, "items")
        n = len(user_codes)
        if len(item_codes) != n:
            raise ValueError(f"users and items must have the same length, got {n} and {len(item_codes)}")
        if values is None:
            values = np.ones(n, dtype=np.float32)
        values = np.asarray(values)
        if values.shape != (n,) or values.dtype.kind not in "biuf":
            raise ValueError(f"values must be {n} numbers")
        values = values.astype(np.float32)
        if not np.isfinite(values).all():
            raise ValueError("values contains NaN or infinity")
        order = np.lexsort((item_codes, user_codes))
        keys = user_codes[order] * max(len(self.item_ids), 1) + item_codes[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if n else np.zeros(0, np.int64)
        if duplicates == "error" and len(starts) != n:
            raise ValueError("some (user, item) pairs appear more than once (duplicates='error')")
        summed = np.add.reduceat(values[order], starts) if n else values
        rows, cols = user_codes[order][starts], item_codes[order][starts]
        self.matrix = sp.csr_matrix(
            (summed.astype(np.float32), (rows, cols)), shape=(len(self.user_ids), len(self.item_ids))
        )
        self.timestamps = None
        if timestamps is not None:
            times = np.asarray(timestamps)
            if times.shape != (n,):
                raise ValueError(f"timestamps must have {n} values, got shape {times.shape}")
            self.timestamps = np.maximum.reduceat(times[order], starts) if n else times

    # -- constructors -------------------------------------------------------------------------

    @classmethod
    def from_dataframe(cls, frame, user: str = "user", item: str = "item", value=None, timestamp=None, **options):
        """Interactions from the columns of a pandas DataFrame.

        Parameters
        ----------
        frame : pandas.DataFrame
            One record per row.
        user, item : str, default "user" and "item"
            Columns of the user and item ids.
        value, timestamp : str, optional
            Columns of the values and the timestamps.
        **options
            Passed on to :class:`Interactions` (``duplicates``).

        Returns
        -------
        Interactions

        Raises
        ------
        KeyError
            A named column is not in ``frame``.
        """
        for column in (user, item, value, timestamp):
            if column is not None and column not in frame.columns:
                raise KeyError(f"column {column!r} is not in the data frame (columns: {list(frame.columns)})")
        return cls(
            frame[user].to_numpy(),
            frame[item].to_numpy(),
            None if value is None else frame[value].to_numpy(),
            None if timestamp is None else frame[timestamp].to_numpy(),
            **options,
        )

    @classmethod
    def from_csv(cls, path, user="auto", item="auto", value=None, timestamp=None, *, sep=None, header=None, **options):
        """Interactions from a text file of records (needs pyarrow).

        The file is streamed through pyarrow's CSV reader, never parsed into Python objects
        row by row. See :mod:`recore._files` for the layouts recognised.

        Parameters
        ----------
        path : str or os.PathLike
            A text file, optionally compressed (``.gz``, ``.bz2``, ``.zst`` or ``.lz4``).
        user, item : "auto", int or str, default "auto"
            The columns of the user and item ids: a header name, a position counted from 0,
            or ``"auto"`` to find them (``userId``, ``movieId``, ... or, without a header,
            the first two columns).
        value, timestamp : "auto", int, str or None, default None
            The columns of the values and the timestamps, likewise; ``value=None`` counts
            each record as 1.
        sep : str, optional
            The separator: ``","``, ``"\\t"`` (or ``"tab"``), ``";"``, ``"|"``, ``"::"`` or
            ``"whitespace"``; found from the first lines when not given.
        header : bool, optional
            Whether the first line names the columns; found from the first lines when not
            given.
        **options
            Passed on to :class:`Interactions` (``duplicates``).

        Returns
        -------
        Interactions
        """
        from recore._files import read_interactions

        return read_interactions(
            path, sep=sep, header=header, user=user, item=item, value=value, timestamp=timestamp, **options
        )

    @classmethod
    def from_parquet(cls, path, user="auto", item="auto", value=None, timestamp=None, **options):
        """Interactions from a Parquet file (needs pyarrow), read in record batches.

        Parameters
        ----------
        path : str or os.PathLike
            The Parquet file.
        user, item : "auto", int or str, default "auto"
            The columns of the user and item ids, as for :meth:`from_csv`.
        value, timestamp : "auto", int, str or None, default None
            The columns of the values and the timestamps, as for :meth:`from_csv`.
        **options
            Passed on to :class:`Interactions` (``duplicates``).

        Returns
        -------
        Interactions
        """
        from recore._files import read_interactions

        return read_interactions(path, user=user, item=item, value=value, timestamp=timestamp, **options)

    # -- ids and indices ----------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_users, n_items)``: the shape of :attr:`matrix`."""
        return self.matrix.shape

    @staticmethod
    def _indices(known: np.ndarray, ids, name: str) -> np.ndarray:
        wanted = np.atleast_1d(np.asarray(ids, dtype=known.dtype if known.dtype.kind != "O" else object))
        lookup = {value: index for index, value in enumerate(known.tolist())}
        try:
            return np.array([lookup[value] for value in wanted.tolist()], dtype=np.int64)
        except KeyError as missing:
            raise IndexError(f"{name}: unknown id {missing.args[0]!r}") from None

    def user_index(self, users) -> np.ndarray:
        """Row indices of user ids.

        Parameters
        ----------
        users : id or array-like of ids

        Returns
        -------
        int64 ndarray
            One row index per id (1-D, also for a single id).

        Raises
        ------
        IndexError
            An id is not one of :attr:`user_ids`.
        """
        return self._indices(self.user_ids, users, "users")

    def item_index(self, items) -> np.ndarray:
        """Column indices of item ids.

        Parameters
        ----------
        items : id or array-like of ids

        Returns
        -------
        int64 ndarray
            One column index per id (1-D, also for a single id).

        Raises
        ------
        IndexError
            An id is not one of :attr:`item_ids`.
        """
        return self._indices(self.item_ids, items, "items")

    def item_ids_of(self, indices, fill=None) -> np.ndarray:
        """Item ids of column indices, such as the ids a model's ``recommend`` returns.

        Parameters
        ----------
        indices : integer array-like
            Column indices, or -1 for padding.
        fill : object, default None
            What padding (-1) becomes.

        Returns
        -------
        ndarray
            The item ids, in the shape of ``indices``; of dtype object where there is padding.

        Raises
        ------
        TypeError
            ``indices`` does not hold integers.
        IndexError
            An index is not a column index or -1.
        """
        indices = np.asarray(indices)
        if indices.dtype.kind not in "iu":
            raise TypeError(f"indices must be integers, got dtype {indices.dtype}")
        if indices.size and (indices.max() >= len(self.item_ids) or indices.min() < -1):
            raise IndexError("indices must be column indices or -1 for padding")
        padded = indices < 0
        out = self.item_ids[np.where(padded, 0, indices)] if len(self.item_ids) else np.empty(indices.shape)
        if padded.any():
            out = out.astype(object)
            out[padded] = fill
        return out

    def recommend(self, model, users, k: int = 10, *, exclude_seen: bool = True, **options):
        """Recommend items for users given by id, with a model fitted on :attr:`matrix`.

        Parameters
        ----------
        model : recore.ALS, recore.SGD or another fitted model with ``recommend``
        users : id or array-like of ids
            The users, by the ids this object was built from.
        k : int >= 1, default 10
            Items per user.
        exclude_seen : bool, default True
            Leave each user's stored items out of their recommendations.
        **options
            Passed on to ``model.recommend``.

        Returns
        -------
        item_ids : ndarray
            The recommended items' ids, best first; padding (fewer than ``k`` candidates)
            is None.
        scores : float32 ndarray
            Their scores.

        Raises
        ------
        IndexError
            A user id is unknown.
        """
        k = check_int(k, "k", 1)
        rows = self.user_index(users)
        ids, scores = model.recommend(rows, self.matrix, k, exclude_seen=exclude_seen, **options)
        return self.item_ids_of(ids), scores
