"""Evaluation benchmarks: ranking metrics over precomputed top-k lists, and the splits.

Run against the installed package, from ``benchmarks/``::

    asv run --python=same --quick --show-stderr
"""

from __future__ import annotations

import functools

import numpy as np
import recore
from recore import evaluation

N_USERS = 50_000
N_ITEMS = 10_000
NNZ = 1_000_000
SEED = 0


@functools.cache
def _split():
    data = recore.datasets.synthetic(N_USERS, N_ITEMS, NNZ, random_state=SEED)
    return evaluation.random_split(data, 0.2, random_state=SEED)


class RankingMetrics:
    params = [10, 100]
    param_names = ["k"]

    def setup(self, k):
        self.train, self.test = _split()
        rng = np.random.default_rng(SEED)
        self.ids = rng.integers(0, N_ITEMS, size=(N_USERS, k)).astype(np.int32)

    def time_ranking_metrics_at_k(self, k):
        evaluation.ranking_metrics_at_k(self.ids, self.test, train=self.train)


class Splits:
    def setup(self):
        self.data = recore.datasets.synthetic(N_USERS, N_ITEMS, NNZ, random_state=SEED)

    def time_random_split(self):
        evaluation.random_split(self.data, 0.2, random_state=SEED)

    def time_leave_one_out(self):
        evaluation.leave_k_out(self.data, 1, random_state=SEED)
