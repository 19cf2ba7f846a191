"""SGD benchmarks: squared-loss epochs at two factor counts and both schedules, a BPR epoch,
and the RMSE kernel.

Run against the installed package, from ``benchmarks/``::

    asv run --python=same --quick --show-stderr

For the comparison with LIBMF and Surprise at MovieLens-20M scale, see
``benchmarks/peers.py sgd``.
"""

from __future__ import annotations

import functools

import recore

N_USERS = 20_000
N_ITEMS = 5_000
NNZ = 1_000_000
SEED = 0
NUM_THREADS = 0


@functools.cache
def _ratings():
    return recore.datasets.synthetic_ratings(N_USERS, N_ITEMS, NNZ, random_state=SEED)


@functools.cache
def _interactions():
    return recore.datasets.synthetic(N_USERS, N_ITEMS, NNZ, random_state=SEED)


class SquaredLoss:
    """Biased MF, three epochs (grid preparation included)."""

    params = ([32, 128], ["adaptive", "constant"])
    param_names = ["factors", "schedule"]

    def setup(self, factors, schedule):
        self.ratings = _ratings()

    def time_fit_three_epochs(self, factors, schedule):
        recore.SGD(factors=factors, iterations=3, schedule=schedule, num_threads=NUM_THREADS, random_state=SEED).fit(
            self.ratings
        )

    def track_updates_per_second(self, factors, schedule):
        seconds = []
        model = recore.SGD(factors=factors, iterations=3, schedule=schedule, num_threads=NUM_THREADS, random_state=SEED)
        model.fit(self.ratings, callback=lambda epoch, metrics: seconds.append(metrics["seconds"]))
        return 3 * self.ratings.nnz / sum(seconds)

    track_updates_per_second.unit = "updates/s"


class Bpr:
    params = [32, 128]
    param_names = ["factors"]

    def setup(self, factors):
        self.interactions = _interactions()

    def time_fit_three_epochs(self, factors):
        recore.SGD(loss="bpr", factors=factors, iterations=3, num_threads=NUM_THREADS, random_state=SEED).fit(
            self.interactions
        )
