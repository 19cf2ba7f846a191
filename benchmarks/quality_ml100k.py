#!/usr/bin/env python
"""MovieLens 100K quality check: recore ALS against implicit's ALS under one evaluator.

    python benchmarks/quality_ml100k.py PATH/TO/ml-100k

Ratings >= 4 are positives; an 80/20 random split (seeded); both libraries fit the same
train matrix with factors=64, regularization=0.05, alpha=1 (confidence = alpha * value, recore's
``confidence="scaled"``), 15 iterations; recore.evaluation.ranking_metrics_at_k scores both
top-10 lists (training items excluded). The data is read from where it lies; nothing of it is
copied anywhere.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import recore
import scipy.sparse as sp
from recore import evaluation


def load_positives(directory: str) -> sp.csr_matrix:
    data = np.loadtxt(os.path.join(directory, "u.data"), dtype=np.int64)
    users, items, ratings = data[:, 0] - 1, data[:, 1] - 1, data[:, 2]
    keep = ratings >= 4
    shape = (users.max() + 1, items.max() + 1)
    return sp.csr_matrix((np.ones(keep.sum(), np.float32), (users[keep], items[keep])), shape=shape)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args(argv)
    positives = load_positives(arguments.directory)
    train, test = evaluation.random_split(positives, 0.2, random_state=arguments.seed)
    rows = []
    model = recore.ALS(
        factors=64, regularization=0.05, alpha=1.0, iterations=15, confidence="scaled", random_state=arguments.seed
    ).fit(train)
    rows.append(("recore", evaluation.ranking_metrics(model, train, test, k=10)))
    try:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits
    except ImportError as missing:
        print(f"note: skipping implicit: {missing}", file=sys.stderr)
    else:
        with threadpool_limits(1, "blas"):
            peer = AlternatingLeastSquares(factors=64, regularization=0.05, alpha=1.0, iterations=15, random_state=0)
            peer.fit(train, show_progress=False)
            ids, _ = peer.recommend(np.arange(train.shape[0]), train, N=10, filter_already_liked_items=True)
        rows.append(("implicit", evaluation.ranking_metrics_at_k(ids, test, train=train)))
    print("| library | precision@10 | NDCG@10 | MAP@10 | AUC | users |")
    print("|:---|---:|---:|---:|---:|---:|")
    for name, m in rows:
        print(f"| {name} | {m['precision']:.4f} | {m['ndcg']:.4f} | {m['map']:.4f} | {m['auc']:.4f} | {m['users']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
