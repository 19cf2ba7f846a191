"""Top-k benchmarks: batch search with per-user exclusions, one user's latency, and a
model's recommend / similar_items.

Run against the installed package, from ``benchmarks/``::

    asv run --python=same --quick --show-stderr

For the comparison with faiss and implicit at MovieLens-20M scale, see
``benchmarks/peers.py topk``.
"""

from __future__ import annotations

import functools

import numpy as np
import recore

N_USERS = 20_000
N_ITEMS = 10_000
NNZ = 500_000
SEED = 0
NUM_THREADS = 0  # every core; results do not depend on it


@functools.cache
def _user_items():
    return recore.datasets.synthetic(N_USERS, N_ITEMS, NNZ, random_state=SEED)


@functools.cache
def _factors(factors: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    users = rng.standard_normal((N_USERS, factors), dtype=np.float32)
    items = rng.standard_normal((N_ITEMS, factors), dtype=np.float32)
    return users, items


class TopkBatch:
    """Every user's top-k, excluding the user's training items."""

    params = ([64, 128], [1, 10, 100])
    param_names = ["factors", "k"]

    def setup(self, factors, k):
        self.users, self.items = _factors(factors)
        self.seen = _user_items()

    def time_topk_excluding_seen(self, factors, k):
        recore.topk(self.users, self.items, k, exclude=self.seen, num_threads=NUM_THREADS)

    def time_topk_cosine(self, factors, k):
        recore.topk(self.users[:2000], self.items, k, metric="cosine", num_threads=NUM_THREADS)

    def peakmem_topk_excluding_seen(self, factors, k):
        recore.topk(self.users, self.items, k, exclude=self.seen, num_threads=NUM_THREADS)


class TopkSingleUser:
    """One user at a time, one thread: serving latency."""

    params = [64]
    param_names = ["factors"]

    def setup(self, factors):
        users, self.items = _factors(factors)
        self.query = users[:1].copy()
        self.index = recore.ItemIndex(self.items)
        self.index.search(self.query, 10, precision="bfloat16")  # builds both item layouts

    def time_one_user_item_index(self, factors):
        self.index.search(self.query, 10, num_threads=1)

    def time_one_user_item_index_bfloat16(self, factors):
        self.index.search(self.query, 10, num_threads=1, precision="bfloat16")

    def time_one_user_topk_function(self, factors):
        recore.topk(self.query, self.items, 10, num_threads=1)


class ModelServing:
    """The model methods on a fitted ALS model."""

    def setup(self):
        self.user_items = _user_items()
        self.model = recore.ALS(factors=64, iterations=2, random_state=SEED, num_threads=NUM_THREADS)
        self.model.fit(self.user_items)
        self.model.recommend(0, self.user_items)  # builds the cached serving vectors

    def time_recommend_all(self):
        self.model.recommend_all(self.user_items, k=10)

    def time_recommend_one_user(self):
        self.model.recommend(123, self.user_items, k=10)

    def time_similar_items(self):
        self.model.similar_items(np.arange(1000), k=10)

    def time_fold_in_one_user(self):
        self.model.fold_in(self.user_items[[123]])
