"""The obviously correct top-k: every score, then a stable sort. For the tests only."""

from __future__ import annotations

import numpy as np


def topk(queries, items, k, *, exclude=None, allow=None, deny=None, metric="dot"):
    """(ids int64, scores float64) of shape (n_queries, k), padded with (-1, -inf).

    Scores are float64 dot products of the float32 inputs (exact for small-integer
    factors); cosine normalizes rows the way recore documents it (zero rows stay zero).
    """
    queries = np.asarray(queries, dtype=np.float64)
    items = np.asarray(items, dtype=np.float64)
    if metric == "cosine":
        queries, items = unit_rows(queries), unit_rows(items)
    scores = queries @ items.T
    n_queries, n_items = scores.shape
    candidate = np.ones((n_queries, n_items), dtype=bool)
    if exclude is not None:
        candidate &= ~stored(exclude)
    if allow is not None:
        allowed = np.zeros(n_items, dtype=bool)
        allowed[np.asarray(allow, dtype=np.int64)] = True
        candidate &= allowed
    if deny is not None:
        candidate[:, np.asarray(deny, dtype=np.int64)] = False
    ids = np.full((n_queries, k), -1, dtype=np.int64)
    best = np.full((n_queries, k), -np.inf)
    for q in range(n_queries):
        found = np.flatnonzero(candidate[q])
        order = found[np.lexsort((found, -scores[q, found]))][:k]  # score down, then id up
        ids[q, : len(order)] = order
        best[q, : len(order)] = scores[q, order]
    return ids, best


def stored(matrix) -> np.ndarray:
    """Boolean mask of the stored entries (stored zeros included)."""
    coo = matrix.tocoo()
    mask = np.zeros(matrix.shape, dtype=bool)
    mask[coo.row, coo.col] = True
    return mask


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1)
    return np.divide(vectors, norms[:, None], out=np.zeros_like(vectors), where=norms[:, None] > 0)
