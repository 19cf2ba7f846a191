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

from recore import _core
from recore._validation import as_user_items, check_float, check_int, check_random_state

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

    Returns
    -------
    dict with precision, recall, ndcg, map, hit_rate, auc, coverage (floats), users (the
    number of users evaluated)
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
    totals = _core.ranking_totals(ids, relevant, n_items, candidates, check_int(num_threads, "num_threads", 0))
    users = totals["users"]
    result = {
        name: (totals[name] / users if users else 0.0) for name in ("precision", "recall", "ndcg", "map", "hit_rate")
    }
    result["auc"] = totals["auc"] / totals["auc_users"] if totals["auc_users"] else 0.0
    result["coverage"] = totals["covered_items"] / n_items if n_items else 0.0
    result["users"] = users
    return result


def ranking_metrics(model, train, test, k: int = 10, *, num_threads: int | None = None) -> dict:
    """Ranking metrics at ``k`` of ``model``'s recommendations for every user, training
    items excluded; see :func:`ranking_metrics_at_k` for the keys and the module docstring for
    the definitions."""
    k = check_int(k, "k", 1)
    ids, _ = model.recommend_all(train, k=k, num_threads=num_threads)
    return ranking_metrics_at_k(ids, test, train=train, num_threads=num_threads or 0)


def rating_metrics(model, test) -> dict:
    """RMSE and MAE of ``model.predict`` over the stored ratings of ``test``."""
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
    """(train, test): each stored interaction goes to test with probability ``test_fraction``."""
    coo = as_user_items(matrix, np.float32, name="matrix").tocoo()
    rng = check_random_state(random_state)
    return _split_by_mask(coo, rng.random(coo.nnz) < _test_fraction(test_fraction), coo.shape)


def leave_k_out(matrix, k: int = 1, *, random_state=None):
    """(train, test): ``k`` random interactions of every user with more than ``k`` go to test."""
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
    """(train, test): the latest ``test_fraction`` of interactions go to test; ties are broken
    by position. ``timestamps`` has one value per stored entry of ``matrix`` in CSR order
    (``matrix`` a canonical CSR: sorted, no duplicates)."""
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
