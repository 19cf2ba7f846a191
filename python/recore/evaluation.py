"""Evaluating recommenders: ranking metrics at k, rating metrics, and reproducible splits.

Ranking metrics, for a user u with relevant (test) items T_u, the top-k list L_u (training
items excluded), hits h_u = |L_u & T_u|, and ranks r = 1..k:

- precision@k = h_u / k (divided by k even when |T_u| < k; some libraries divide by
  min(k, |T_u|) instead)
- recall@k = h_u / |T_u|
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
sums run in C++ over users in parallel with the GIL released.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recore._validation import as_user_items, check_float, check_int, check_random_state
from recore.backends import cpu as _cpu

__all__ = ["leave_k_out", "random_split", "ranking_metrics", "ranking_metrics_at_k", "rating_metrics", "time_split"]


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
        ``precision``, ``recall``, ``ndcg``, ``map``, ``hit_rate``, ``auc`` and
        ``coverage`` (floats, defined in the module docstring) and ``users`` (the number of
        users evaluated: those with at least one test item).

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
    totals = _cpu.ranking_totals(ids, relevant, n_items, candidates, check_int(num_threads, "num_threads", 0))
    users = totals["users"]
    result = {
        name: (totals[name] / users if users else 0.0) for name in ("precision", "recall", "ndcg", "map", "hit_rate")
    }
    result["auc"] = totals["auc"] / totals["auc_users"] if totals["auc_users"] else 0.0
    result["coverage"] = totals["covered_items"] / n_items if n_items else 0.0
    result["users"] = users
    return result


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
    keys = rng.random(csr.nnz)
    # Within each row, the k entries with the smallest keys are held out.
    rows = np.repeat(np.arange(csr.shape[0]), counts)
    order = np.lexsort((keys, rows))
    rank = np.empty(csr.nnz, dtype=np.int64)
    rank[order] = np.arange(csr.nnz) - np.repeat(csr.indptr[:-1], counts)
    test_mask = (rank < k) & (counts[rows] > k)
    return _split_by_mask(csr.tocoo(), test_mask, csr.shape)


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
