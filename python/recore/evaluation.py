"""Evaluating recommenders: ranking metrics at k, rating metrics, and reproducible splits.

Ranking metrics, for a user u with relevant (test) items T_u, the top-k list L_u (training
items excluded), hits h_u = |L_u & T_u|, and ranks r = 1..k:

- precision@k = h_u / k (divided by k even when |T_u| < k; some libraries divide by
  min(k, |T_u|) instead)
- recall@k = h_u / |T_u|
- capped recall@k (key ``recall_capped``) = h_u / min(k, |T_u|), the denominator of Liang et
  al. 2018 (VAE-CF) and Steck 2019 (EASE): a perfect list scores 1 even when |T_u| > k. It
  equals precision@k for users with |T_u| >= k and recall@k for the others.
- NDCG@k = DCG / IDCG with binary relevance and discount 1 / log2(r + 1);
  IDCG sums the discounts of ranks 1..min(k, |T_u|)
- MAP@k: average precision = sum over hit ranks r of (hits up to r) / r, over min(k, |T_u|)
- hit rate@k = 1 if h_u > 0
- AUC: the fraction of (relevant, non-relevant) candidate pairs ordered right, candidates
  being all items but the user's training items. Listed items rank in list order above all
  others; unlisted relevant items are taken to beat half of the unlisted non-relevant ones
  (a random order among them). Users with no non-relevant candidate are left out of the AUC.
- coverage@k: distinct items in all users' lists / number of items

Each metric is the mean over users with at least one relevant item; others are skipped. The
sums run in C++ over users in parallel with the GIL released, for any k (NDCG@100 included): one
pass over each top-k list, with a binary search in the user's sorted test row per entry.

Protocols: :func:`random_split`, :func:`leave_k_out` and :func:`time_split` hold out some
interactions of every user (:func:`ranking_metrics`); :func:`held_out_users_split` holds out
whole users, who are folded in with the item factors fixed and ranked on their remaining items
(:func:`fold_in_metrics`, :func:`evaluate_held_out_users`: strong generalization). :func:`tune`
searches hyperparameters on a validation split of either kind.
"""

from __future__ import annotations

import math
import numbers
import time
from fractions import Fraction
from typing import Callable, NamedTuple

import numpy as np
import scipy.sparse as sp

from recore._validation import as_user_items, check_choice, check_float, check_int, check_random_state
from recore.backends import cpu as _cpu

__all__ = [
    "HeldOutUsers",
    "TuneResult",
    "evaluate_held_out_users",
    "fold_in_metrics",
    "held_out_users_split",
    "leave_k_out",
    "random_split",
    "ranking_metrics",
    "ranking_metrics_at_k",
    "rating_metrics",
    "time_split",
    "tune",
]

# The keys of ranking_metrics_at_k that score a model (all higher-is-better).
RANKING_METRICS = ("precision", "recall", "recall_capped", "ndcg", "map", "hit_rate", "auc", "coverage")


def _relevance(test, shape, name="test"):
    """The test interactions as a canonical CSR of float32 ones (every stored entry relevant)."""
    matrix = as_user_items(test, np.float32, name=name)
    if matrix.shape != shape:
        raise ValueError(f"{name} has shape {matrix.shape}, expected {shape}")
    relevant = matrix.copy()
    relevant.data = np.ones_like(relevant.data)
    return relevant


def ranking_metrics_at_k(ids, test, *, train=None, n_items: int | None = None, num_threads: int = 0) -> dict:
    """Ranking metrics of precomputed top-k lists.

    Parameters
    ----------
    ids : int ndarray (n_users, k)
        Row u is user u's list, best first, -1 for padding; lists hold candidates only (the
        user's training items excluded, as ``recommend`` does).
    test : sparse matrix (n_users, n_items)
        Relevant items (every stored entry).
    train : sparse matrix (n_users, n_items), optional
        Training items: with it, a user's AUC candidates exclude them.
    n_items : int, optional
        Defaults to ``test.shape[1]``.
    num_threads : int >= 0, default 0
        Threads summing the metrics over users; 0 uses every core.

    Returns
    -------
    dict
        ``precision``, ``recall``, ``recall_capped``, ``ndcg``, ``map``, ``hit_rate``,
        ``auc`` and ``coverage`` (floats, defined in the module docstring) and ``users``
        (the number of users evaluated: those with at least one test item).

    Raises
    ------
    TypeError
        ``ids`` does not hold integers, or ``test`` is not a scipy.sparse matrix.
    ValueError
        ``ids`` is not 2-dimensional, or ``test`` / ``train`` do not have the shape
        ``(len(ids), n_items)``.
    IndexError
        An id of ``ids`` is outside ``[0, n_items)`` and not -1.
    """
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"ids must be 2-dimensional (users, k), got {ids.ndim} dimensions")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"ids must be integer item ids, got dtype {ids.dtype}")
    ids = np.ascontiguousarray(ids, dtype=np.int64 if ids.dtype.itemsize > 4 else np.int32)
    if not sp.issparse(test):
        raise TypeError(f"test must be a scipy.sparse matrix, got {type(test).__name__}")
    n_items = test.shape[1] if n_items is None else check_int(n_items, "n_items", 0)
    relevant = _relevance(test, (ids.shape[0], n_items))
    candidates = None
    if train is not None:
        seen = _relevance(train, (ids.shape[0], n_items), name="train")
        both = seen.multiply(relevant)
        # Test items that are also training items stay candidates (they are relevant).
        candidates = (n_items - np.diff(seen.indptr) + np.diff(both.tocsr().indptr)).astype(np.int64)
    num_threads = check_int(num_threads, "num_threads", 0)
    totals = _cpu.ranking_totals(ids, relevant, n_items, candidates, num_threads)
    users = totals["users"]
    sums = {name: totals[name] for name in ("precision", "recall", "ndcg", "map", "hit_rate")}
    sums["recall_capped"] = _capped_recall_total(ids, relevant, n_items, num_threads)
    result: dict = {
        name: (sums[name] / users if users else 0.0)
        for name in ("precision", "recall", "recall_capped", "ndcg", "map", "hit_rate")
    }
    result["auc"] = totals["auc"] / totals["auc_users"] if totals["auc_users"] else 0.0
    result["coverage"] = totals["covered_items"] / n_items if n_items else 0.0
    result["users"] = users
    return result


def _capped_recall_total(ids, relevant, n_items: int, num_threads: int) -> float:
    """The sum over users of h_u / min(k, |T_u|).

    Users with fewer than k relevant items divide by |T_u| (their recall), the others by k
    (their precision), so the engine's two sums over those two groups give it exactly,
    without a sum of its own.
    """
    short = np.diff(relevant.indptr) < ids.shape[1]

    def totals(rows):
        return _cpu.ranking_totals(np.ascontiguousarray(ids[rows]), relevant[rows], n_items, None, num_threads)

    below, at_least = np.flatnonzero(short), np.flatnonzero(~short)
    return (totals(below)["recall"] if below.size else 0.0) + (totals(at_least)["precision"] if at_least.size else 0.0)


def ranking_metrics(model, train, test, k: int = 10, *, num_threads: int | None = None) -> dict:
    """Ranking metrics at ``k`` of a model's recommendations for every user.

    Every user's top ``k`` come from ``model.recommend_all(train, k=k)``, so training items
    are left out of them; users without test items are skipped.

    Parameters
    ----------
    model : recore.ALS, recore.SGD or another fitted model with ``recommend_all``
    train : sparse matrix (n_users, n_items)
        The interactions the model was fitted on.
    test : sparse matrix (n_users, n_items)
        Held-out interactions: every stored entry is relevant.
    k : int >= 1, default 10
        Length of each recommendation list.
    num_threads : int >= 0, optional
        Threads for the recommendations and the metrics; 0 uses every core. None: the
        model's ``num_threads`` for the recommendations, every core for the metrics.

    Returns
    -------
    dict
        The keys of :func:`ranking_metrics_at_k`; the definitions are in the module
        docstring.

    See Also
    --------
    ranking_metrics_at_k : the same metrics of lists computed elsewhere.
    """
    k = check_int(k, "k", 1)
    ids, _ = model.recommend_all(train, k=k, num_threads=num_threads)
    return ranking_metrics_at_k(ids, test, train=train, num_threads=num_threads or 0)


def rating_metrics(model, test) -> dict:
    """Root mean squared error and mean absolute error of a model's predicted ratings.

    Parameters
    ----------
    model : recore.SGD, recore.ALS (explicit feedback) or any model with ``predict``
        ``model.predict(users, items)`` gives the predicted rating of each pair.
    test : sparse matrix (n_users, n_items)
        The held-out ratings: every stored entry is compared with its prediction.

    Returns
    -------
    dict
        ``{"rmse": float, "mae": float}``, over all stored ratings of ``test``.

    Raises
    ------
    ValueError
        ``test`` holds no ratings.
    """
    ratings = as_user_items(test, np.float64, name="test").tocoo()
    if ratings.nnz == 0:
        raise ValueError("test has no ratings")
    errors = model.predict(ratings.row, ratings.col).astype(np.float64) - ratings.data
    return {"rmse": float(np.sqrt(np.mean(errors**2))), "mae": float(np.mean(np.abs(errors)))}


def _split_by_mask(coo, test_mask, shape):
    def part(mask):
        return sp.csr_matrix((coo.data[mask], (coo.row[mask], coo.col[mask])), shape=shape)

    return part(~test_mask), part(test_mask)


def _test_fraction(value) -> float:
    value = check_float(value, "test_fraction")
    if not 0.0 < value < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {value}")
    return value


def random_split(matrix, test_fraction: float = 0.2, *, random_state=None):
    """Split interactions at random: each goes to the test set with a given probability.

    Parameters
    ----------
    matrix : sparse matrix or 2-D array (n_users, n_items)
        The interactions; converted to a canonical float32 CSR (duplicates summed).
    test_fraction : float in (0, 1), default 0.2
        Probability that an interaction goes to the test set.
    random_state : None, int or numpy.random.Generator, optional
        Seeds the draw: the same seed gives the same split.

    Returns
    -------
    train, test : scipy.sparse.csr_matrix (n_users, n_items)
        Together they hold every interaction of ``matrix`` once.
    """
    coo = as_user_items(matrix, np.float32, name="matrix").tocoo()
    rng = check_random_state(random_state)
    return _split_by_mask(coo, rng.random(coo.nnz) < _test_fraction(test_fraction), coo.shape)


def leave_k_out(matrix, k: int = 1, *, random_state=None):
    """Hold out ``k`` random interactions of every user who has more than ``k``.

    Parameters
    ----------
    matrix : sparse matrix or 2-D array (n_users, n_items)
        The interactions; converted to a canonical float32 CSR (duplicates summed).
    k : int >= 1, default 1
        Interactions held out per user. Users with ``k`` interactions or fewer keep them all
        in the training set.
    random_state : None, int or numpy.random.Generator, optional
        Seeds the draw: the same seed gives the same split.

    Returns
    -------
    train, test : scipy.sparse.csr_matrix (n_users, n_items)
        Together they hold every interaction of ``matrix`` once.
    """
    k = check_int(k, "k", 1)
    csr = as_user_items(matrix, np.float32, name="matrix")
    rng = check_random_state(random_state)
    counts = np.diff(csr.indptr)
    test_mask = _random_entries_per_row(csr, np.where(counts > k, k, 0), rng)
    return _split_by_mask(csr.tocoo(), test_mask, csr.shape)


def _random_entries_per_row(csr, taken: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A mask of the stored entries of ``csr``: ``taken[u]`` entries of row u, drawn without
    replacement (each entry gets a random key; a row takes the entries with the smallest)."""
    counts = np.diff(csr.indptr)
    keys = rng.random(csr.nnz)
    rows = np.repeat(np.arange(csr.shape[0]), counts)
    order = np.lexsort((keys, rows))
    rank = np.empty(csr.nnz, dtype=np.int64)
    rank[order] = np.arange(csr.nnz) - np.repeat(csr.indptr[:-1], counts)
    return rank < taken[rows]


def time_split(matrix, timestamps, test_fraction: float = 0.2):
    """Split interactions by time: the latest ones go to the test set.

    Parameters
    ----------
    matrix : scipy.sparse CSR matrix (n_users, n_items), canonical
        The interactions, with sorted indices and no duplicates, so that its stored entries
        are in a known order.
    timestamps : array-like of numbers or datetimes, one per stored entry of ``matrix``
        The time of each stored entry, in CSR order (as ``Interactions.timestamps`` and
        ``recore.datasets.movielens(...).timestamps`` hold them).
    test_fraction : float in (0, 1), default 0.2
        Fraction of the interactions, the latest, that go to the test set; equal times are
        ordered by their position in ``matrix``.

    Returns
    -------
    train, test : scipy.sparse.csr_matrix (n_users, n_items)
        Together they hold every interaction of ``matrix`` once.

    Raises
    ------
    ValueError
        ``timestamps`` does not have one value per stored entry.
    TypeError
        ``timestamps`` holds neither numbers nor datetimes.
    """
    csr = as_user_items(matrix, np.float32, name="matrix")
    times = np.asarray(timestamps)
    if times.shape != (csr.nnz,):
        raise ValueError(f"timestamps must have one value per stored entry ({csr.nnz}), got shape {times.shape}")
    if times.dtype.kind not in "iufM":
        raise TypeError(f"timestamps must be numbers or datetimes, got dtype {times.dtype}")
    fraction = _test_fraction(test_fraction)
    order = np.argsort(times, kind="stable")
    test_mask = np.zeros(csr.nnz, dtype=bool)
    test_mask[order[int(round(csr.nnz * (1 - fraction))) :]] = True
    return _split_by_mask(csr.tocoo(), test_mask, csr.shape)


# -- held-out users (strong generalization) ---------------------------------------------------


class HeldOutUsers(NamedTuple):
    """A held-out-users split, as :func:`held_out_users_split` returns it.

    Parameters
    ----------
    train : scipy.sparse.csr_matrix (n_users - n_held_out, n_items)
        Every other user's row, in user id order: what a model is fitted on.
    fold_in : scipy.sparse.csr_matrix (n_held_out, n_items)
        The part of each held-out user's items that is shown to the model
        (``model.fold_in``).
    test : scipy.sparse.csr_matrix (n_held_out, n_items)
        The rest of each held-out user's items: the ones to rank.
    train_users : int64 ndarray (n_users - n_held_out,)
        The user ids (rows of the split matrix) of the rows of ``train``, ascending.
    held_out_users : int64 ndarray (n_held_out,)
        The user ids of the rows of ``fold_in`` and ``test``, ascending.
    """

    train: sp.csr_matrix
    fold_in: sp.csr_matrix
    test: sp.csr_matrix
    train_users: np.ndarray
    held_out_users: np.ndarray


def _fold_in_fraction(value) -> Fraction:
    """``fold_in_fraction`` as an exact ratio (0.8 is 4/5), so that the per-user counts are
    rounded the documented way and not by the float's binary error."""
    value = check_float(value, "fold_in_fraction")
    if not 0.0 < value < 1.0:
        raise ValueError(f"fold_in_fraction must be between 0 and 1, got {value}")
    return Fraction(value).limit_denominator(1_000_000)


def _held_out_count(value, available: int) -> int:
    """The number of users to hold out, from a count or a fraction of the ``available`` ones."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"held_out_users must be a number of users or a fraction, got {type(value).__name__}")
    if isinstance(value, numbers.Integral):
        count = check_int(value, "held_out_users", 1)
    else:
        fraction = check_float(value, "held_out_users")
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"held_out_users as a fraction must be between 0 and 1, got {fraction}")
        count = max(1, int(round(fraction * available)))
    if count > available:
        raise ValueError(
            f"held_out_users asks for {count} users, but only {available} have the 2 or more items that a "
            "held-out user needs"
        )
    return count


def held_out_users_split(user_items, held_out_users, *, fold_in_fraction: float = 0.8, random_state=None):
    """Hold out whole users: the model never trains on them, and is judged on how well it
    ranks part of their items from the rest (strong generalization).

    The protocol of Liang et al. 2018 (VAE-CF), Steck 2019 (EASE) and the iALS revisits: a
    model is fitted on the other users; each held-out user is folded in from ``fold_in``
    (their factors solved with the item factors fixed) and ranks every item but those, and
    the items of ``test`` are the relevant ones (see :func:`fold_in_metrics`).

    Parameters
    ----------
    user_items : sparse matrix or 2-D array (n_users, n_items)
        The interactions; converted to a canonical float32 CSR (duplicates summed). Values
        are kept, so that fold-in sees the same confidences as training.
    held_out_users : int >= 1 or float in (0, 1)
        How many users to hold out, or which fraction (rounded to the nearest count, at
        least 1) of the users with 2 or more items. Only such users are held out: one item
        alone cannot be both shown and ranked.
    fold_in_fraction : float in (0, 1), default 0.8
        Of a held-out user's n_u items, ``floor((1 - fold_in_fraction) * n_u)``, but at least
        1, go to ``test`` and the others (at least 1) to ``fold_in``: with 0.8, 10 items give
        8 and 2, 7 give 6 and 1, 2 give 1 and 1. For n_u >= 5 this is Liang et al.'s rule.
        The fraction is read as an exact ratio (0.8 is 4/5; denominators up to a million).
    random_state : None, int or numpy.random.Generator, optional
        Seeds the draws (the users first, then their items): the same seed gives the same
        split.

    Returns
    -------
    HeldOutUsers
        ``(train, fold_in, test, train_users, held_out_users)``: every stored entry of
        ``user_items`` is in exactly one of ``train``, ``fold_in`` and ``test``. All three
        keep every item column, so item ids are unchanged; items that only held-out users
        have get no training signal.

    Raises
    ------
    TypeError
        ``held_out_users`` is neither an integer nor a float.
    ValueError
        ``fold_in_fraction`` or a fractional ``held_out_users`` is outside (0, 1), or more
        users are asked for than have 2 or more items.

    See Also
    --------
    evaluate_held_out_users : fit on ``train`` and score the held-out users.
    """
    csr = as_user_items(user_items, np.float32, name="user_items")
    fraction = _fold_in_fraction(fold_in_fraction)
    counts = np.diff(csr.indptr)
    eligible = np.flatnonzero(counts >= 2)
    count = _held_out_count(held_out_users, eligible.size)
    rng = check_random_state(random_state)
    held_out = np.sort(rng.choice(eligible, size=count, replace=False)).astype(np.int64)
    kept = np.ones(csr.shape[0], dtype=bool)
    kept[held_out] = False
    train_users = np.flatnonzero(kept).astype(np.int64)
    rows = csr[held_out]
    row_counts = np.diff(rows.indptr).astype(np.int64)
    test_counts = np.maximum(1, row_counts * (fraction.denominator - fraction.numerator) // fraction.denominator)
    fold_in, test = _split_by_mask(rows.tocoo(), _random_entries_per_row(rows, test_counts, rng), rows.shape)
    return HeldOutUsers(csr[train_users], fold_in, test, train_users, held_out)


def _ks(k) -> list[int]:
    """``k`` as a list of cut-offs (an int, or a non-empty sequence of ints)."""
    if isinstance(k, numbers.Integral) and not isinstance(k, (bool, np.bool_)):
        return [check_int(k, "k", 1)]
    if isinstance(k, (str, bytes)) or not hasattr(k, "__iter__"):
        raise TypeError(f"k must be an integer or a sequence of integers, got {type(k).__name__}")
    ks = [check_int(value, "k", 1) for value in k]
    if not ks:
        raise ValueError("k must name at least one cut-off")
    return ks


def _named_at(metrics_by_k: dict) -> dict:
    """One flat dict, ``"ndcg@10"``-style keys, from the metrics at each cut-off."""
    flat: dict = {}
    for k, metrics in metrics_by_k.items():
        flat.update({f"{name}@{k}": value for name, value in metrics.items() if name != "users"})
        flat["users"] = metrics["users"]
    return flat


def _fold_in_rows(model, fold_in, test):
    """The held-out rows, checked: sparse, of one shape, as many columns as the model has items."""
    if not (hasattr(model, "fold_in") and hasattr(model, "recommend_vectors")):
        raise TypeError(
            f"model must be a fitted recore model with fold_in and recommend_vectors, got {type(model).__name__}"
        )
    fold_in = as_user_items(fold_in, np.float32, name="fold_in")
    test = as_user_items(test, np.float32, name="test")
    if test.shape != fold_in.shape:
        raise ValueError(f"test has shape {test.shape}, fold_in has {fold_in.shape}: they must hold the same users")
    return fold_in, test


def _fold_in_search(model, fold_in, test, k, num_threads):
    """Metrics at each cut-off of ``k`` from one search at the largest: a top-k list's first
    k' entries are its top-k' list (ties go to the lower id either way)."""
    ks = _ks(k)
    fold_in, test = _fold_in_rows(model, fold_in, test)
    vectors = model.fold_in(fold_in)
    ids, _ = model.recommend_vectors(vectors, fold_in, k=max(ks), num_threads=num_threads)
    threads = num_threads or 0
    return {
        cut: ranking_metrics_at_k(np.ascontiguousarray(ids[:, :cut]), test, train=fold_in, num_threads=threads)
        for cut in ks
    }


def fold_in_metrics(model, fold_in, test, k=10, *, num_threads: int | None = None) -> dict:
    """Ranking metrics of users the model was not fitted on, folded in from part of their items.

    Each row of ``fold_in`` becomes user factors by ``model.fold_in`` (an exact least-squares
    solve with the item factors fixed, with the model's objective); the user's top ``k``
    come from ``model.recommend_vectors`` with their ``fold_in`` items excluded, and their
    ``test`` items are the relevant ones. AUC candidates are every item but the fold-in
    ones.

    Parameters
    ----------
    model : fitted recore.ALS (or any model with ``fold_in`` and ``recommend_vectors``)
        Fitted on other users' interactions with the same item columns.
    fold_in : sparse matrix (n_held_out, n_items)
        The items each held-out user shows the model (``HeldOutUsers.fold_in``).
    test : sparse matrix (n_held_out, n_items)
        The items to rank (``HeldOutUsers.test``); users without any are skipped.
    k : int >= 1 or sequence of int, default 10
        The cut-off, or several: one search at the largest gives them all.
    num_threads : int >= 0, optional
        Threads for the search and the sums; None: the model's ``num_threads`` for the
        search, every core for the sums.

    Returns
    -------
    dict
        For an int ``k``, the keys of :func:`ranking_metrics_at_k`; for a sequence, every
        metric at every cut-off as ``"ndcg@10"``, ``"recall_capped@20"``, ... and ``users``.

    Raises
    ------
    TypeError
        ``model`` cannot fold users in, or ``k`` is not an int or a sequence of ints.
    ValueError
        ``fold_in`` and ``test`` differ in shape, or their columns are not the model's items.
    """
    by_k = _fold_in_search(model, fold_in, test, k, num_threads)
    return next(iter(by_k.values())) if isinstance(k, numbers.Integral) else _named_at(by_k)


def evaluate_held_out_users(model, split, k=10, *, num_threads: int | None = None) -> dict:
    """Fit ``model`` on a held-out-users split's training users and score the held-out ones.

    Parameters
    ----------
    model : recore.ALS (or any model with ``fit``, ``fold_in`` and ``recommend_vectors``)
        Fitted here, on ``split.train``.
    split : HeldOutUsers
        From :func:`held_out_users_split`.
    k : int >= 1 or sequence of int, default 10
        As for :func:`fold_in_metrics`.
    num_threads : int >= 0, optional
        As for :func:`fold_in_metrics` (the fit uses the model's own setting).

    Returns
    -------
    dict
        :func:`fold_in_metrics` of ``split.fold_in`` and ``split.test``, with
        ``fit_seconds``, the wall-clock time of ``model.fit(split.train)``.

    Raises
    ------
    TypeError
        ``split`` is not a :class:`HeldOutUsers`, or as for :func:`fold_in_metrics`.
    """
    if not isinstance(split, HeldOutUsers):
        raise TypeError(f"split must be a HeldOutUsers (from held_out_users_split), got {type(split).__name__}")
    _ks(k)
    _fold_in_rows(model, split.fold_in, split.test)
    start = time.perf_counter()
    model.fit(split.train)
    seconds = time.perf_counter() - start
    return {**fold_in_metrics(model, split.fold_in, split.test, k, num_threads=num_threads), "fit_seconds": seconds}


# -- hyperparameter search --------------------------------------------------------------------


class TuneResult(NamedTuple):
    """What :func:`tune` found.

    Parameters
    ----------
    best_params : dict
        The hyperparameters of the fit with the best validation score (``iterations``
        included when the space has it); ties go to the earlier fit.
    best_score : float
        That fit's validation score.
    best_model : object
        That fitted model.
    table : list of dict
        One row per fit, in the order they ran: ``trial`` (the point of the space, from 0),
        ``params``, ``score``, ``fit_seconds`` (that fit alone), ``elapsed_seconds`` (the
        search so far, scoring included) and ``metrics`` (every validation metric), so
        that quality can be plotted against fit time.
    """

    best_params: dict
    best_score: float
    best_model: object
    table: list


def _plain(value):
    """numpy scalars as Python numbers, so that every estimator's type checks accept them."""
    return value.item() if isinstance(value, np.generic) else value


def _checkpoints(values) -> list[int]:
    if not isinstance(values, (list, tuple)):
        raise TypeError(
            "space['iterations'] must be a list of iteration counts (the fits stop early along them), "
            f"got {type(values).__name__}"
        )
    if not values:
        raise ValueError("space['iterations'] must hold at least one iteration count")
    return sorted({check_int(value, "space['iterations']", 1) for value in values})


class _Space:
    """A search space, checked once: the drawn hyperparameters and the iteration checkpoints."""

    def __init__(self, space):
        if not isinstance(space, dict):
            raise TypeError(f"space must be a dict of hyperparameter names to candidates, got {type(space).__name__}")
        self.names = [name for name in space if name != "iterations"]
        self.checkpoints = _checkpoints(space["iterations"]) if "iterations" in space else None
        self.choices: dict[str, list] = {}
        self.distributions: dict[str, Callable] = {}
        for name in self.names:
            values = space[name]
            if not isinstance(name, str):
                raise TypeError(f"space keys must be hyperparameter names, got {type(name).__name__}")
            if isinstance(values, (list, tuple)):
                if not values:
                    raise ValueError(f"space[{name!r}] has no candidates")
                self.choices[name] = list(values)
            elif callable(getattr(values, "rvs", None)):
                self.distributions[name] = lambda rng, distribution=values: distribution.rvs(random_state=rng)
            elif callable(values):
                self.distributions[name] = values
            else:
                raise TypeError(
                    f"space[{name!r}] must be a list of candidates, a distribution with rvs(random_state=) or a "
                    f"callable taking a numpy Generator, got {type(values).__name__}"
                )
        # Without distributions the space is a finite grid, drawn without replacement.
        self.grid_size = None if self.distributions else math.prod(len(v) for v in self.choices.values())

    def exhausted(self, seen: set) -> bool:
        return self.grid_size is not None and len(seen) >= self.grid_size

    def draw(self, rng: np.random.Generator, seen: set) -> dict:
        """One point of the space; of a finite grid, one not drawn before. Names are drawn in
        sorted order, so the draws do not depend on how the dict was built."""
        while True:
            picked = {name: int(rng.integers(len(self.choices[name]))) for name in sorted(self.choices)}
            key = tuple(picked.values())
            if self.grid_size is None or key not in seen:
                break
        seen.add(key)
        values = {name: self.choices[name][index] for name, index in picked.items()}
        values.update({name: _plain(self.distributions[name](rng)) for name in sorted(self.distributions)})
        return {name: values[name] for name in self.names}


def _validation_scorer(train, validation, k: int, num_threads) -> Callable:
    """The function from a fitted model to its validation metrics, its data checked now."""
    if isinstance(validation, HeldOutUsers):
        validation = (validation.fold_in, validation.test)
    if isinstance(validation, (tuple, list)):
        if len(validation) != 2:
            raise ValueError(f"validation must be a matrix or a (fold_in, test) pair, got {len(validation)} items")
        fold_in = as_user_items(validation[0], np.float32, name="fold_in")
        test = as_user_items(validation[1], np.float32, name="test")
        if fold_in.shape != test.shape or fold_in.shape[1] != train.shape[1]:
            raise ValueError(
                f"validation's fold_in {fold_in.shape} and test {test.shape} must have one shape, with train's "
                f"{train.shape[1]} item columns"
            )
        return lambda model: fold_in_metrics(model, fold_in, test, k, num_threads=num_threads)
    matrix = as_user_items(validation, np.float32, name="validation")
    if matrix.shape != train.shape:
        raise ValueError(f"validation has shape {matrix.shape}, train has {train.shape}: they must match")
    return lambda model: ranking_metrics(model, train, matrix, k, num_threads=num_threads)


class _Search:
    """The fits of one search: timing, scoring, the table, the best so far, the budget."""

    def __init__(self, make_model, train, score_of, metric: str, budget: float | None, callback):
        self.make_model, self.train, self.score_of = make_model, train, score_of
        self.metric, self.budget, self.callback = metric, budget, callback
        self.start = time.perf_counter()
        self.table: list[dict] = []
        self.best: tuple | None = None

    def out_of_time(self) -> bool:
        """Whether the budget is spent; the first fit always runs, so there is a result."""
        spent = time.perf_counter() - self.start
        return self.budget is not None and bool(self.table) and spent >= self.budget

    def fit(self, trial: int, params: dict) -> float:
        model = self.make_model(**params)
        start = time.perf_counter()
        model.fit(self.train)
        seconds = time.perf_counter() - start
        metrics = self.score_of(model)
        score = float(metrics[self.metric])
        row = {
            "trial": trial,
            "params": dict(params),
            "score": score,
            "fit_seconds": seconds,
            "elapsed_seconds": time.perf_counter() - self.start,
            "metrics": metrics,
        }
        self.table.append(row)
        if self.best is None or score > self.best[0]:
            self.best = (score, row["params"], model)
        if self.callback is not None:
            self.callback(row)
        return score

    def trial(self, trial: int, params: dict, checkpoints, patience: int, min_improvement: float) -> None:
        """One point of the space: one fit, or fits along the iteration checkpoints until the
        score has not improved by more than ``min_improvement`` for ``patience`` of them."""
        if checkpoints is None:
            self.fit(trial, params)
            return
        best, stale = -math.inf, 0
        for iterations in checkpoints:
            if self.out_of_time():
                return
            score = self.fit(trial, {**params, "iterations": iterations})
            if score > best + min_improvement:
                best, stale = score, 0
            else:
                stale += 1
                if stale >= patience:
                    return


def tune(
    make_model,
    train,
    validation,
    space,
    *,
    n_trials: int | None = None,
    budget_seconds: float | None = None,
    random_state=None,
    metric: str = "ndcg",
    k: int = 10,
    patience: int = 1,
    min_improvement: float = 0.0,
    num_threads: int | None = None,
    callback=None,
) -> TuneResult:
    """Seeded random search of hyperparameters, with early stopping along the iterations.

    Each trial draws a point of ``space``, builds ``make_model(**params)``, fits it on
    ``train`` and scores it on ``validation``; the best score wins. Lists of candidates
    are drawn uniformly; when every entry is a list the space is a grid and no point is
    drawn twice (the search ends when all have been). The points drawn depend on
    ``random_state`` alone, so with ``n_trials`` the whole search is reproducible when the
    models are (give them a ``random_state``: recore's ALS is then bitwise deterministic);
    under ``budget_seconds`` the same points come in the same order, but how many fit in the
    budget depends on the machine.

    Early stopping: ``space["iterations"]``, when given, is not drawn but lists checkpoints
    (for example ``[4, 8, 16, 32]``). A point is fitted with the first, then with the next
    while the validation score still improves (by more than ``min_improvement`` at least
    once in every ``patience`` checkpoints); each checkpoint is a row of the table. The
    fits are fresh fits of that many iterations: a fixed-seed ALS fit of t iterations is
    the first t iterations of a longer one, so this scores the same models as scoring
    inside one fit would, at the price of refitting (with doubling checkpoints, less than
    twice the last fit), and each row's ``fit_seconds`` is the cost of that model alone.
    (The fit callback reports each iteration's metrics, not its factors, so a validation
    ranking cannot be computed there.)

    Parameters
    ----------
    make_model : callable
        ``make_model(**params)`` returns an unfitted model, for example
        ``lambda **params: recore.ALS(factors=64, random_state=0, **params)``.
    train : sparse matrix or 2-D array (n_users, n_items)
        What every model is fitted on (converted once to a canonical float32 CSR).
    validation : sparse matrix, (fold_in, test) pair or HeldOutUsers
        A matrix of ``train``'s shape: held-out interactions of the training users, scored
        by :func:`ranking_metrics`. A pair of matrices, or a :class:`HeldOutUsers` split
        (its ``fold_in`` and ``test``; pass its ``train`` as ``train``): validation users
        that ``train`` does not hold, scored by :func:`fold_in_metrics`.
    space : dict
        Hyperparameter name to a list (or tuple) of candidates, a distribution with
        ``rvs(random_state=)`` (a frozen ``scipy.stats`` distribution), or a callable that
        takes a numpy Generator and returns a value; ``"iterations"`` to a list of
        checkpoints (see above). Any hyperparameter ``make_model`` accepts can be searched.
    n_trials : int >= 1, optional
        Points of the space to try.
    budget_seconds : float >= 0, optional
        No fit starts once the search has run this long (wall-clock, scoring included);
        the fit under way finishes, and the first always runs. At least one of
        ``n_trials`` and ``budget_seconds`` must be given; with both, the first reached
        ends the search.
    random_state : None, int or numpy.random.Generator, optional
        Seeds the draws of the points.
    metric : str, default "ndcg"
        The validation score, higher is better: ``"ndcg"``, ``"recall_capped"``,
        ``"recall"``, ``"precision"``, ``"map"``, ``"hit_rate"``, ``"auc"`` or
        ``"coverage"`` (see the module docstring).
    k : int >= 1, default 10
        The cut-off of the score.
    patience : int >= 1, default 1
        Checkpoints without improvement before a point's fits stop.
    min_improvement : float >= 0, default 0.0
        The improvement of the score that counts as one.
    num_threads : int >= 0, optional
        Threads for scoring (the fits use each model's setting).
    callback : callable, optional
        Called with each row of the table as soon as it is added.

    Returns
    -------
    TuneResult
        ``(best_params, best_score, best_model, table)``.

    Raises
    ------
    TypeError
        ``make_model`` or ``callback`` is not callable, or ``space`` or ``validation`` is
        not of a kind described above.
    ValueError
        Neither ``n_trials`` nor ``budget_seconds`` is given, ``validation`` does not match
        ``train``, an entry of ``space`` is empty, or an argument is out of range.
    """
    if not callable(make_model):
        raise TypeError(f"make_model must be callable, got {type(make_model).__name__}")
    train = as_user_items(train, np.float32, name="train")
    k = check_int(k, "k", 1)
    if num_threads is not None:
        check_int(num_threads, "num_threads", 0)
    score_of = _validation_scorer(train, validation, k, num_threads)
    points = _Space(space)
    metric = check_choice(metric, "metric", RANKING_METRICS)
    n_trials = None if n_trials is None else check_int(n_trials, "n_trials", 1)
    budget = None if budget_seconds is None else check_float(budget_seconds, "budget_seconds", 0.0)
    if n_trials is None and budget is None:
        raise ValueError("tune needs n_trials, budget_seconds or both, to know when to stop")
    patience = check_int(patience, "patience", 1)
    min_improvement = check_float(min_improvement, "min_improvement", 0.0)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    rng = check_random_state(random_state)
    search = _Search(make_model, train, score_of, metric, budget, callback)
    seen: set = set()
    trial = 0
    while (n_trials is None or trial < n_trials) and not points.exhausted(seen) and not search.out_of_time():
        search.trial(trial, points.draw(rng, seen), points.checkpoints, patience, min_improvement)
        trial += 1
    assert search.best is not None  # the first trial always fits once
    score, params, model = search.best
    return TuneResult(dict(params), score, model, search.table)
