#!/usr/bin/env python
"""MovieLens 100K rating prediction: recore.SGD with its defaults, u1.base -> u1.test.

    python benchmarks/quality_ml100k_sgd.py PATH/TO/ml-100k [--seeds 0 1 2] [--threads 1 2]

Fits the biased model with the default hyperparameters on u1.base and prints the test RMSE
on u1.test for each seed and thread count. The data is read from where it lies; nothing of
it is copied anywhere.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import recore
import scipy.sparse as sp

SHAPE = (943, 1682)  # users and items of MovieLens 100K


def load_split(directory: str, name: str) -> sp.csr_matrix:
    data = np.loadtxt(os.path.join(directory, name), dtype=np.int64)
    users, items, ratings = data[:, 0] - 1, data[:, 1] - 1, data[:, 2].astype(np.float32)
    return sp.csr_matrix((ratings, (users, items)), shape=SHAPE)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", help="the ml-100k folder (u1.base, u1.test)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    arguments = parser.parse_args(argv)
    train = load_split(arguments.directory, "u1.base")
    test = load_split(arguments.directory, "u1.test").tocoo()
    print(f"u1.base: {train.nnz:,} ratings, u1.test: {test.nnz:,}; recore.SGD defaults")
    print("| threads | seed | test RMSE |")
    print("|---:|---:|---:|")
    for threads in arguments.threads:
        for seed in arguments.seeds:
            model = recore.SGD(num_threads=threads, random_state=seed).fit(train)
            error = float(np.sqrt(np.mean((model.predict(test.row, test.col) - test.data) ** 2)))
            print(f"| {threads} | {seed} | {error:.5f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
