#!/usr/bin/env python
"""Held-out users (strong generalization): ALS tuned under a fit-time budget, then scored on
users it never trained on.

    python benchmarks/quality_heldout.py PATH/TO/ml-100k [--budget 60] [--factors 64]
    python benchmarks/quality_heldout.py synthetic          # recore.datasets.synthetic_preferences

The protocol of Liang et al. 2018 (VAE-CF): MovieLens ratings >= 4 are the positives and users
with fewer than 5 are dropped; ``--held-out-users`` test users and as many validation users
are held out whole (``recore.evaluation.held_out_users_split``, seeded), each with 80% of
their items to fold in and 20% to rank. Every model is fitted on the remaining users;
``recore.evaluation.tune`` searches each model's space on the validation users (NDCG@10,
early stopping along the iteration checkpoints) until ``--budget`` seconds have passed; the
best model then folds in the test users and ranks every item but their fold-in ones. Printed:
NDCG@10, NDCG@100, Recall@20 and Recall@50 with the min(k, |test|) denominator, the best
hyperparameters, that model's fit time, and the budget. ``synthetic`` runs the same on
implicit data with planted preferences that recore ships (``synthetic_preferences``:
5,000 users x 2,000 items x 150,000 interactions, rank 16). MovieLens is read from where it
lies; nothing of it is copied anywhere.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import recore
import scipy.sparse as sp
from recore import evaluation

CUT_OFFS = (10, 20, 50, 100)
COLUMNS = (("ndcg@10", "NDCG@10"), ("ndcg@100", "NDCG@100"), ("recall_capped@20", "Recall@20"),
           ("recall_capped@50", "Recall@50"))  # fmt: skip


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def movielens_positives(directory: str) -> sp.csr_matrix:
    """Ratings >= 4 of u.data as ones, users with fewer than 5 of them removed (ids kept)."""
    data = np.loadtxt(os.path.join(directory, "u.data"), dtype=np.int64)
    users, items, ratings = data[:, 0] - 1, data[:, 1] - 1, data[:, 2]
    keep = ratings >= 4
    shape = (users.max() + 1, items.max() + 1)
    positives = sp.csr_matrix((np.ones(keep.sum(), np.float32), (users[keep], items[keep])), shape=shape)
    return positives[np.diff(positives.indptr) >= 5]


def synthetic_positives(seed: int) -> sp.csr_matrix:
    counts = recore.datasets.synthetic_preferences(5_000, 2_000, 150_000, random_state=seed)
    counts.data[:] = 1.0  # which items a user picked, not how often
    return counts[np.diff(counts.indptr) >= 5]


def model_specs(factors: int, threads: int, seed: int) -> list[tuple[str, object, dict | None]]:
    """(name, make_model, search space or None for the defaults), in report order."""

    def als(**params):
        return recore.ALS(factors=factors, num_threads=threads, random_state=seed, **params)

    plain_space = {
        "regularization": [float(v) for v in np.logspace(-2, 2, 9)],
        "alpha": [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0],
        "iterations": [2, 4, 8, 16, 32],
    }
    return [("ALS, defaults", als, None), ("ALS, tuned", als, plain_space)]


def run_model(make_model, space, train, validation, test, arguments):
    """The test metrics of one model (tuned first when it has a space), its parameters, the
    fit seconds of that model, and the fits and seconds the search took."""
    if space is None:
        model = make_model()
        start = time.perf_counter()
        model.fit(train)
        fit_seconds = time.perf_counter() - start
        params, fits, search_seconds = {}, 1, fit_seconds
    else:
        result = evaluation.tune(
            make_model, train, (validation.fold_in, validation.test), space, budget_seconds=arguments.budget,
            random_state=arguments.seed, metric="ndcg", k=10, num_threads=arguments.threads,
        )  # fmt: skip
        model, params = result.best_model, result.best_params
        best_row = next(row for row in result.table if row["params"] == params)
        fit_seconds, fits = best_row["fit_seconds"], len(result.table)
        search_seconds = result.table[-1]["elapsed_seconds"]
        if arguments.show_fits:
            for row in result.table:
                print(f"  fit {row['fit_seconds']:7.3f} s  validation NDCG@10 {row['score']:.4f}  {row['params']}")
    metrics = evaluation.fold_in_metrics(model, test.fold_in, test.test, k=CUT_OFFS, num_threads=arguments.threads)
    return metrics, params, fit_seconds, fits, search_seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="the ml-100k folder (u.data), or 'synthetic'")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of search per tuned model")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--held-out-users", type=int, default=150, help="test users, and as many validation users")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="0: every core")
    parser.add_argument("--show-fits", action="store_true", help="print every fit of each search")
    arguments = parser.parse_args(argv)

    if arguments.data == "synthetic":
        positives = synthetic_positives(arguments.seed)
    else:
        positives = movielens_positives(arguments.data)
    test = evaluation.held_out_users_split(positives, arguments.held_out_users, random_state=arguments.seed)
    validation = evaluation.held_out_users_split(test.train, arguments.held_out_users, random_state=arguments.seed + 1)
    train = validation.train
    print(f"CPU: {cpu_model()}; recore.cpu_target(): {recore.cpu_target()}; threads: {arguments.threads or 'all'}")
    print(
        f"data: {arguments.data}: {positives.shape[0]:,} users x {positives.shape[1]:,} items, {positives.nnz:,} "
        f"positives; train {train.shape[0]:,} users ({train.nnz:,}), validation {len(validation.held_out_users)} "
        f"users, test {len(test.held_out_users)} users (80% folded in, 20% ranked)"
    )
    print(f"budget: {arguments.budget:g} s of search per tuned model (fits and validation scoring); factors "
          f"{arguments.factors}; seed {arguments.seed}")  # fmt: skip
    print()
    header = " | ".join(title for _, title in COLUMNS)
    print(f"| model | {header} | fit s | fits in search | search s | parameters |")
    print("|:---|" + "---:|" * (len(COLUMNS) + 3) + ":---|")
    for name, make_model, space in model_specs(arguments.factors, arguments.threads, arguments.seed):
        metrics, params, fit_seconds, fits, search_seconds = run_model(
            make_model, space, train, validation, test, arguments
        )
        values = " | ".join(f"{metrics[key]:.4f}" for key, _ in COLUMNS)
        shown = ", ".join(f"{key}={value:g}" for key, value in params.items()) or "defaults"
        print(f"| {name} | {values} | {fit_seconds:.2f} | {fits} | {search_seconds:.1f} | {shown} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
