"""A small, obviously correct numpy reference of recore's ALS mathematics (float64, dense
normal equations per row), for the tests to compare against."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def confidences(values: np.ndarray, alpha: float, confidence: str) -> np.ndarray:
    return 1.0 + alpha * values if confidence == "linear" else alpha * values


def half_step(
    rows: sp.csr_matrix,
    fixed: np.ndarray,
    *,
    regularization: float,
    alpha: float = 1.0,
    feedback: str = "implicit",
    confidence: str = "linear",
    weighted_regularization: bool = False,
) -> np.ndarray:
    """Exact least-squares solution for every row, the other side held fixed."""
    rows = sp.csr_matrix(rows)
    fixed = fixed.astype(np.float64)
    f = fixed.shape[1]
    gram = fixed.T @ fixed
    solved = np.zeros((rows.shape[0], f))
    for u in range(rows.shape[0]):
        columns = rows.indices[rows.indptr[u] : rows.indptr[u + 1]]
        values = rows.data[rows.indptr[u] : rows.indptr[u + 1]].astype(np.float64)
        if columns.size == 0:
            continue
        lam = regularization * (columns.size if weighted_regularization else 1)
        Y = fixed[columns]
        if feedback == "implicit":
            c = confidences(values, alpha, confidence)
            A = gram + Y.T @ ((c - 1.0)[:, None] * Y) + lam * np.eye(f)
            b = Y.T @ c
        else:
            A = Y.T @ Y + lam * np.eye(f)
            b = Y.T @ values
        solved[u] = np.linalg.solve(A, b)
    return solved


def initial_factors(n_users: int, n_items: int, factors: int, random_state) -> tuple[np.ndarray, np.ndarray]:
    """The same draws as recore.ALS.fit."""
    rng = np.random.default_rng(random_state)
    users = rng.random((n_users, factors), dtype=np.float32) * np.float32(0.01)
    items = rng.random((n_items, factors), dtype=np.float32) * np.float32(0.01)
    return users.astype(np.float64), items.astype(np.float64)


def fit(user_items: sp.csr_matrix, *, factors: int, iterations: int, random_state, **options):
    """Alternating exact solves: users from items, then items from users."""
    user_items = sp.csr_matrix(user_items, dtype=np.float64)
    users, items = initial_factors(*user_items.shape, factors, random_state)
    item_users = user_items.T.tocsr()
    for _ in range(iterations):
        users = half_step(user_items, items, **options)
        items = half_step(item_users, users, **options)
    return users, items


def loss(
    user_items,
    users: np.ndarray,
    items: np.ndarray,
    *,
    regularization: float,
    alpha: float = 1.0,
    feedback: str = "implicit",
    confidence: str = "linear",
    weighted_regularization: bool = False,
) -> float:
    """The full objective, summed over the dense users x items matrix."""
    user_items = sp.csr_matrix(user_items, dtype=np.float64)
    scores = users.astype(np.float64) @ items.astype(np.float64).T
    observed = np.zeros(user_items.shape, dtype=bool)
    observed[user_items.nonzero()] = True
    # nonzero() skips stored zeros; mark every stored entry.
    coo = user_items.tocoo()
    observed[coo.row, coo.col] = True
    values = np.zeros(user_items.shape)
    values[coo.row, coo.col] = coo.data
    if feedback == "implicit":
        c = np.where(observed, confidences(values, alpha, confidence), 1.0)
        data_term = np.sum(c * (observed.astype(float) - scores) ** 2)
        user_weight = item_weight = 1.0
    else:
        data_term = np.sum(np.where(observed, (values - scores) ** 2, 0.0))
        user_weight = observed.sum(axis=1) if weighted_regularization else 1.0
        item_weight = observed.sum(axis=0) if weighted_regularization else 1.0
    penalty = np.sum(user_weight * np.sum(users.astype(float) ** 2, axis=1)) + np.sum(
        item_weight * np.sum(items.astype(float) ** 2, axis=1)
    )
    return float(data_term + regularization * penalty)
