"""A small, obviously correct numpy reference of recore's ALS mathematics, for the tests to
compare against. Everything is float64 and dense: no Gram-matrix tricks, no sparse
shortcuts, so that it shares no clever step (and no bug) with the engine.

Notation: ``R`` is the users x items interaction matrix. A *stored* entry is observed, even
when its value is 0 (scipy may keep explicit zeros); every other entry is unobserved.

Implicit feedback: observed entries have preference p = 1 and confidence
c = 1 + alpha * r ("linear") or c = alpha * r ("scaled"); unobserved entries have p = 0 and
weight c = alpha0 (``unobserved_weight``, 1 by default).
Explicit feedback: observed entries are ratings r, unobserved entries carry no weight.

Regularization of a row with n stored entries out of m columns: ``lambda * (n + alpha0 * m) ** nu``
for implicit feedback and ``lambda * n ** nu`` for explicit feedback (Rendle et al. 2022; nu is
``regularization_exponent``). With nu = 0: ``lambda`` for every row, or ``lambda * n`` with
``weighted_regularization``. The engine applies the weighting for both feedback kinds, in its
solves and its objective alike, and so does this reference.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def dense_parts(matrix) -> tuple[np.ndarray, np.ndarray]:
    """(values, observed): the stored values as a dense float64 array (duplicates summed)
    and a boolean mask of stored entries, stored zeros included."""
    coo = sp.coo_matrix(matrix)
    values = np.zeros(coo.shape)
    observed = np.zeros(coo.shape, dtype=bool)
    np.add.at(values, (coo.row, coo.col), np.asarray(coo.data, dtype=np.float64))
    observed[coo.row, coo.col] = True
    return values, observed


def weights_and_targets(
    values: np.ndarray,
    observed: np.ndarray,
    *,
    alpha: float,
    feedback: str,
    confidence: str,
    unobserved_weight: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Dense per-entry weights C and targets P of the objective sum C * (P - X Y^T)^2."""
    if feedback == "implicit":
        c = 1.0 + alpha * values if confidence == "linear" else alpha * values
        return np.where(observed, c, unobserved_weight), observed.astype(np.float64)
    return observed.astype(np.float64), np.where(observed, values, 0.0)


def row_lambdas(
    observed: np.ndarray,
    regularization: float,
    weighted_regularization: bool,
    *,
    feedback: str = "implicit",
    unobserved_weight: float = 1.0,
    regularization_exponent: float = 0.0,
) -> np.ndarray:
    """Each row's lambda, from its count of stored entries and the number of columns."""
    counts = observed.sum(axis=1).astype(np.float64)
    if regularization_exponent == 0:
        return regularization * (counts if weighted_regularization else np.ones_like(counts))
    unobserved = unobserved_weight * observed.shape[1] if feedback == "implicit" else 0.0
    return regularization * (counts + unobserved) ** regularization_exponent


def normal_equations(
    matrix,
    fixed: np.ndarray,
    *,
    regularization: float,
    alpha: float = 1.0,
    feedback: str = "implicit",
    confidence: str = "linear",
    weighted_regularization: bool = False,
    unobserved_weight: float = 1.0,
    regularization_exponent: float = 0.0,
) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """For every row u of ``matrix`` the system A x = b whose solution is that row's factor
    with ``fixed`` (one row per column) held fixed, written out densely over all columns:
    A = Y^T C_u Y + lambda_u I and b = Y^T C_u p_u. None for a row without stored entries
    (its factor is defined to be zero)."""
    values, observed = dense_parts(matrix)
    weights, targets = weights_and_targets(
        values, observed, alpha=alpha, feedback=feedback, confidence=confidence, unobserved_weight=unobserved_weight
    )
    lambdas = row_lambdas(
        observed, regularization, weighted_regularization, feedback=feedback, unobserved_weight=unobserved_weight,
        regularization_exponent=regularization_exponent,
    )  # fmt: skip
    Y = np.asarray(fixed, dtype=np.float64)
    f = Y.shape[1]
    systems = []
    for u in range(values.shape[0]):
        if not observed[u].any():
            systems.append(None)
            continue
        A = Y.T @ (weights[u][:, None] * Y) + lambdas[u] * np.eye(f)
        b = Y.T @ (weights[u] * targets[u])
        systems.append((A, b))
    return systems


def half_step(matrix, fixed: np.ndarray, **objective) -> np.ndarray:
    """Every row's exact least-squares factor, ``fixed`` held fixed (np.linalg.solve)."""
    systems = normal_equations(matrix, fixed, **objective)
    solved = np.zeros((len(systems), np.shape(fixed)[1]))
    for u, system in enumerate(systems):
        if system is not None:
            solved[u] = np.linalg.solve(*system)
    return solved


def implicit_half_step(
    matrix, fixed, *, regularization, alpha=1.0, confidence="linear", weighted_regularization=False, **weighting
):
    return half_step(
        matrix,
        fixed,
        regularization=regularization,
        alpha=alpha,
        feedback="implicit",
        confidence=confidence,
        weighted_regularization=weighted_regularization,
        **weighting,
    )


def explicit_half_step(matrix, fixed, *, regularization, weighted_regularization=False):
    return half_step(
        matrix,
        fixed,
        regularization=regularization,
        feedback="explicit",
        weighted_regularization=weighted_regularization,
    )


def initial_factors(n_users: int, n_items: int, factors: int, random_state) -> tuple[np.ndarray, np.ndarray]:
    """recore.ALS's starting point: uniform [0, 0.01) drawn in float32 from
    default_rng(random_state), users first, then items."""
    rng = np.random.default_rng(random_state)
    users = rng.random((n_users, factors), dtype=np.float32) * np.float32(0.01)
    items = rng.random((n_items, factors), dtype=np.float32) * np.float32(0.01)
    return users.astype(np.float64), items.astype(np.float64)


def fit(user_items, *, factors: int, iterations: int, random_state, **objective) -> tuple[np.ndarray, np.ndarray]:
    """Exact ALS as recore.ALS(solver="cholesky") runs it: each iteration solves the users
    from the items, then the items from the new users."""
    user_items = sp.csr_matrix(user_items)
    users, items = initial_factors(*user_items.shape, factors, random_state)
    item_users = user_items.T
    for _ in range(iterations):
        users = half_step(user_items, items, **objective)
        items = half_step(item_users, users, **objective)
    return users, items


def objective(
    user_items,
    users: np.ndarray,
    items: np.ndarray,
    *,
    regularization: float,
    alpha: float = 1.0,
    feedback: str = "implicit",
    confidence: str = "linear",
    weighted_regularization: bool = False,
    unobserved_weight: float = 1.0,
    regularization_exponent: float = 0.0,
) -> float:
    """The full training objective, summed over the dense users x items matrix:
    sum_ui C_ui (P_ui - x_u . y_i)^2 + sum_u lambda_u |x_u|^2 + sum_i lambda_i |y_i|^2."""
    values, observed = dense_parts(user_items)
    weights, targets = weights_and_targets(
        values, observed, alpha=alpha, feedback=feedback, confidence=confidence, unobserved_weight=unobserved_weight
    )
    X = np.asarray(users, dtype=np.float64)
    Y = np.asarray(items, dtype=np.float64)
    data_term = np.sum(weights * (targets - X @ Y.T) ** 2)
    scaling = dict(
        feedback=feedback, unobserved_weight=unobserved_weight, regularization_exponent=regularization_exponent
    )
    user_lambdas = row_lambdas(observed, regularization, weighted_regularization, **scaling)
    item_lambdas = row_lambdas(observed.T, regularization, weighted_regularization, **scaling)
    penalty = np.sum(user_lambdas * np.sum(X**2, axis=1)) + np.sum(item_lambdas * np.sum(Y**2, axis=1))
    return float(data_term + penalty)
