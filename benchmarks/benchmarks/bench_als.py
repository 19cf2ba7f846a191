"""ALS benchmarks: the estimator's fit, the kernels it is made of, and its objective.

Run against the installed package, from ``benchmarks/``::

    asv run --python=same --quick --show-stderr

Everything runs on one synthetic power-law matrix (``recore.datasets.synthetic``) small
enough for a quick run to finish in a minute or two on two cores. For a comparison with
other libraries at MovieLens-20M scale, see ``benchmarks/peers.py als``.
"""

from __future__ import annotations

import functools

import numpy as np
import recore
from recore import kernels

N_USERS = 20_000
N_ITEMS = 5_000
NNZ = 500_000
SEED = 0
REGULARIZATION = 0.01
ALPHA = 1.0
# 0 = every core. The factors do not depend on it; the timings do (asv records the machine).
NUM_THREADS = 0

FACTORS = [64, 128]
SOLVERS = ["cg", "cholesky"]


# asv re-runs setup() before every timed call; keep the data in the process so that a
# repeated setup only resets the factors.
@functools.cache
def _user_items():
    return recore.datasets.synthetic(N_USERS, N_ITEMS, NNZ, random_state=SEED)


@functools.cache
def _item_users():
    item_users = _user_items().T.tocsr()
    item_users.sort_indices()
    return item_users


@functools.cache
def _initial_factors(factors: int) -> tuple[np.ndarray, np.ndarray]:
    """The estimator's own starting point (uniform in [0, 0.01)), from a zero-iteration fit."""
    model = recore.ALS(factors=factors, iterations=0, random_state=SEED, num_threads=NUM_THREADS)
    model.fit(_user_items())
    return model.user_factors_, model.item_factors_


class ALSFit:
    """One full iteration of ``ALS.fit``: both half-steps plus the fit's own overhead
    (input checks, the transpose, initialization)."""

    params = (FACTORS, SOLVERS)
    param_names = ["factors", "solver"]
    timeout = 120

    def setup(self, factors, solver):
        self.user_items = _user_items()
        self.model = recore.ALS(
            factors=factors,
            regularization=REGULARIZATION,
            alpha=ALPHA,
            iterations=1,
            solver=solver,
            num_threads=NUM_THREADS,
            random_state=SEED,
        )

    def time_fit_one_iteration(self, factors, solver):
        self.model.fit(self.user_items)


class ALSHalfStep:
    """``kernels.als_half_step`` solving every user against fixed item factors."""

    params = (FACTORS, SOLVERS)
    param_names = ["factors", "solver"]
    timeout = 120

    def setup(self, factors, solver):
        self.user_items = _user_items()
        initial_users, self.item_factors = _initial_factors(factors)
        # CG warm-starts from the target, so every timed call starts from the same state.
        self.user_factors = initial_users.copy()
        self.item_gram = kernels.gram_matrix(self.item_factors, num_threads=NUM_THREADS)

    def time_user_half_step(self, factors, solver):
        kernels.als_half_step(
            self.user_items,
            self.item_factors,
            self.item_gram,
            self.user_factors,
            regularization=REGULARIZATION,
            alpha=ALPHA,
            solver=solver,
            num_threads=NUM_THREADS,
        )


class GramMatrix:
    """``kernels.gram_matrix`` of the user factors (N_USERS x factors)."""

    params = [FACTORS]
    param_names = ["factors"]

    def setup(self, factors):
        self.user_factors = _initial_factors(factors)[0]

    def time_gram_matrix(self, factors):
        kernels.gram_matrix(self.user_factors, num_threads=NUM_THREADS)


class ALSLoss:
    """``kernels.als_loss``: the full implicit objective, observed and unobserved entries."""

    params = [FACTORS]
    param_names = ["factors"]

    def setup(self, factors):
        self.user_items = _user_items()
        self.user_factors, self.item_factors = _initial_factors(factors)

    def time_loss(self, factors):
        kernels.als_loss(
            self.user_items,
            self.user_factors,
            self.item_factors,
            regularization=REGULARIZATION,
            alpha=ALPHA,
            num_threads=NUM_THREADS,
        )


class ALSTrainingLoss:
    """The training objective after a few iterations: a guard on solution quality, so a
    faster kernel that converges worse shows up next to its timing."""

    ITERATIONS = 5
    params = ([32, 64], SOLVERS)
    param_names = ["factors", "solver"]
    unit = "objective"
    timeout = 120

    def setup(self, factors, solver):
        self.user_items = _user_items()

    def track_final_loss(self, factors, solver):
        model = recore.ALS(
            factors=factors,
            regularization=REGULARIZATION,
            alpha=ALPHA,
            iterations=self.ITERATIONS,
            solver=solver,
            num_threads=NUM_THREADS,
            random_state=SEED,
            calculate_training_loss=True,
        )
        model.fit(self.user_items)
        return model.history_["loss"][-1]
