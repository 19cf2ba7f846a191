#!/usr/bin/env python
"""Held-out users (strong generalization): ALS and iALS tuned under the same fit-time budget,
then scored on users they never trained on.

    python benchmarks/quality_heldout.py PATH/TO/ml-100k [--budget 60] [--factors 64] [--split-seeds 0 1 2]
    python benchmarks/quality_heldout.py synthetic          # recore.datasets.synthetic_preferences

The protocol of Liang et al. 2018 (VAE-CF): MovieLens ratings >= 4 are the positives and users
with fewer than 5 are dropped; ``--held-out-users`` test users and as many validation users
are held out whole (``recore.evaluation.held_out_users_split``, seeded by each of
``--split-seeds``), each with 80% of their items to fold in and 20% to rank. Every model is
fitted on the remaining users; ``recore.evaluation.tune`` searches each model's space on the
validation users (NDCG@10, early stopping along the iteration checkpoints) until ``--budget``
seconds have passed, every search drawing its points from the same seed (``--seed``); the best
model then folds in the test users and ranks every item but their fold-in ones.

The models, at the same factor count and budget:

- "ALS, defaults": recore.ALS as it comes.
- "ALS plain, tuned": Hu et al.'s model (unobserved weight alpha0 = 1, plain L2, nu = 0),
  searched over regularization, alpha and iterations.
- "iALS, tuned": the objective of Rendle et al. 2022 ("Revisiting the Performance of iALS on
  Item Recommendation Benchmarks"), searched over the unobserved weight alpha0
  (``unobserved_weight``, 0.001 to 1, observed entries weighing 1 as in the paper: alpha = 0),
  the regularization exponent nu (``regularization_exponent``, 0, 0.5 or 1), the penalty and
  iterations. A user's penalty is
  ``regularization * (n_u + alpha0 * n_items) ** nu``, which at nu = 1 is hundreds of times the
  regularization, so the search draws the penalty of a typical user (``typical_penalty``, the
  lambda_u of a user with the mean number of training items) on the plain model's scale and
  sets ``regularization = typical_penalty / (mean n_u + alpha0 * n_items) ** nu``; both are
  printed.

Printed per split: NDCG@10, NDCG@100, Recall@20 and Recall@50 with the min(k, |test|)
denominator, the best hyperparameters, that model's fit time (the fastest of ``--fit-repeats``
fresh fits, in wall and in CPU seconds: the latter does not count waiting for a core on a
shared machine), the search's fits and seconds, and the budget. Then, over the splits, each
model's mean and the difference of iALS and the plain model in NDCG@10 on the same test
users, with its standard error over those users (per-user NDCG@10 computed here from the
top-10 lists and checked against recore's sum). ``synthetic`` runs the same on implicit data
with planted preferences that recore ships (``synthetic_preferences``: 5,000 users x 2,000
items x 150,000 interactions, rank 16, seed 0).
MovieLens is read from where it lies; nothing of it is copied anywhere.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import recore
import scipy.sparse as sp
from machine import context_line
from recore import evaluation

CUT_OFFS = (10, 20, 50, 100)
COLUMNS = (("ndcg@10", "NDCG@10"), ("ndcg@100", "NDCG@100"), ("recall_capped@20", "Recall@20"),
           ("recall_capped@50", "Recall@50"))  # fmt: skip
PLAIN, IALS = "ALS plain, tuned", "iALS, tuned"


def load_average() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


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


@dataclass
class Spec:
    """One row of the table: how to build the model from a point of its space (None: defaults)."""

    name: str
    make_model: object
    space: dict | None


def ials_regularization(typical_penalty: float, unobserved_weight: float, exponent: float, train) -> float:
    """The ``regularization`` that gives a user with the mean number of training items the
    penalty ``typical_penalty``: lambda_u = regularization * (n_u + alpha0 * n_items) ** nu."""
    mean_items = train.nnz / train.shape[0]
    return typical_penalty / (mean_items + unobserved_weight * train.shape[1]) ** exponent


def model_specs(factors: int, threads: int, seed: int, train) -> list[Spec]:
    """The rows, in report order. Both spaces share the penalty scale and the iteration
    checkpoints. An observed entry's weight over an unobserved one's, (1 + alpha) / alpha0, is
    what alpha sets in the plain model (1.25 to 33) and alpha0 in iALS (1 to 1,000, alpha = 0 as
    in Rendle et al.: with nu = 0, scaling both weights and the penalty together changes
    nothing, so searching alpha too would draw the same models twice); nu is iALS's alone."""

    def als(**params):
        return recore.ALS(factors=factors, num_threads=threads, random_state=seed, **params)

    def ials(typical_penalty, unobserved_weight, regularization_exponent, **params):
        regularization = ials_regularization(typical_penalty, unobserved_weight, regularization_exponent, train)
        return als(regularization=regularization, unobserved_weight=unobserved_weight,
                   regularization_exponent=regularization_exponent, **params)  # fmt: skip

    penalties = [float(value) for value in np.logspace(-2, 3, 11)]  # half decades, 0.01 to 1,000
    checkpoints = [2, 4, 8, 16, 32]
    plain_space = {
        "regularization": penalties,
        "alpha": [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0],
        "iterations": checkpoints,
    }
    ials_space = {
        "typical_penalty": penalties,
        "alpha": [0.0],  # observed entries weigh 1 and unobserved ones alpha0, as in Rendle et al.
        "unobserved_weight": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
        "regularization_exponent": [0.0, 0.5, 1.0],
        "iterations": checkpoints,
    }
    return [Spec("ALS, defaults", als, None), Spec(PLAIN, als, plain_space), Spec(IALS, ials, ials_space)]


@dataclass
class Outcome:
    """One model on one split: test metrics, per-user NDCG@10, its parameters and costs."""

    metrics: dict
    per_user_ndcg: np.ndarray
    params: dict
    fit_seconds: float
    fit_cpu_seconds: float
    fits: int
    search_seconds: float


def timed_fit(make_model, params: dict, train, repeats: int) -> tuple[float, float]:
    """The fastest of ``repeats`` fresh fits of one model: wall seconds and this process's CPU
    seconds (all threads; a shared machine's waits for a core count in the first only)."""
    walls, cpus = [], []
    for _ in range(repeats):
        model = make_model(**params)
        wall, cpu = time.perf_counter(), time.process_time()
        model.fit(train)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def per_user_ndcg(ids: np.ndarray, test: sp.csr_matrix, k: int) -> np.ndarray:
    """NDCG@k of each user with test items (binary relevance, log2 discount, ideal DCG of
    min(k, |test|) hits): the reference of recore's summed NDCG, per user for paired errors."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    values = []
    for row in range(test.shape[0]):
        relevant = test.indices[test.indptr[row] : test.indptr[row + 1]]
        if relevant.size == 0:
            continue
        hits = np.isin(ids[row, :k], relevant)
        values.append(discounts[hits].sum() / discounts[: min(k, relevant.size)].sum())
    return np.asarray(values)


def test_outcome(model, test, threads: int) -> tuple[dict, np.ndarray]:
    """The test users' metrics from recore, and their NDCG@10 one by one (checked to agree)."""
    metrics = evaluation.fold_in_metrics(model, test.fold_in, test.test, k=CUT_OFFS, num_threads=threads)
    vectors = model.fold_in(test.fold_in)
    ids, _ = model.recommend_vectors(vectors, test.fold_in, k=10, num_threads=threads)
    per_user = per_user_ndcg(np.asarray(ids), test.test.tocsr(), 10)
    if abs(per_user.mean() - metrics["ndcg@10"]) > 1e-4:
        raise AssertionError(f"per-user NDCG@10 {per_user.mean():.6f} != recore's {metrics['ndcg@10']:.6f}")
    return metrics, per_user


def run_model(spec: Spec, train, validation, test, arguments) -> Outcome:
    """Tunes the model when it has a space, then scores the best on the test users."""
    if spec.space is None:
        model = spec.make_model().fit(train)
        params, searched, fits, search_seconds = {}, {}, 1, 0.0
    else:
        result = evaluation.tune(
            spec.make_model, train, (validation.fold_in, validation.test), spec.space,
            budget_seconds=arguments.budget, random_state=arguments.seed, metric="ndcg", k=10,
            num_threads=arguments.threads,
        )  # fmt: skip
        model, params, searched = result.best_model, dict(result.best_params), result.best_params
        fits, search_seconds = len(result.table), result.table[-1]["elapsed_seconds"]
        if "typical_penalty" in params:
            params["regularization"] = model.regularization
        if arguments.show_fits:
            for row in result.table:
                print(f"  fit {row['fit_seconds']:7.3f} s  validation NDCG@10 {row['score']:.4f}  {row['params']}")
    fit_seconds, fit_cpu_seconds = timed_fit(spec.make_model, searched, train, arguments.fit_repeats)
    metrics, per_user = test_outcome(model, test, arguments.threads)
    return Outcome(metrics, per_user, params, fit_seconds, fit_cpu_seconds, fits, search_seconds)


def shown(params: dict) -> str:
    names = {"unobserved_weight": "alpha0", "regularization_exponent": "nu"}
    return ", ".join(f"{names.get(key, key)}={value:.3g}" for key, value in params.items()) or "defaults"


def run_split(positives, split_seed: int, arguments) -> dict[str, Outcome]:
    """Every model on one held-out split; prints its table."""
    test = evaluation.held_out_users_split(positives, arguments.held_out_users, random_state=split_seed)
    validation = evaluation.held_out_users_split(test.train, arguments.held_out_users, random_state=split_seed + 1)
    train = validation.train
    print(
        f"split seed {split_seed}: train {train.shape[0]:,} users ({train.nnz:,} positives), validation "
        f"{len(validation.held_out_users)} users, test {len(test.held_out_users)} users (80% folded in, 20% "
        f"ranked); load average {load_average()}"
    )
    header = " | ".join(title for _, title in COLUMNS)
    print(f"| model | {header} | fit s | fit CPU s | fits in search | search s | budget s | parameters |")
    print("|:---|" + "---:|" * (len(COLUMNS) + 5) + ":---|")
    outcomes = {}
    for spec in model_specs(arguments.factors, arguments.threads, arguments.seed, train):
        outcome = run_model(spec, train, validation, test, arguments)
        outcomes[spec.name] = outcome
        values = " | ".join(f"{outcome.metrics[key]:.4f}" for key, _ in COLUMNS)
        tuned = spec.space is not None
        budget, search = (f"{arguments.budget:g}", f"{outcome.search_seconds:.1f}") if tuned else ("—", "—")
        print(
            f"| {spec.name} | {values} | {outcome.fit_seconds:.3f} | {outcome.fit_cpu_seconds:.3f} | "
            f"{outcome.fits} | {search} | {budget} | {shown(outcome.params)} |",
            flush=True,
        )
    print()
    return outcomes


def paired_gap(first: np.ndarray, second: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of second - first over the same users."""
    difference = second - first
    return float(difference.mean()), float(difference.std(ddof=1) / np.sqrt(difference.size))


def summarize(by_seed: dict[int, dict[str, Outcome]]) -> None:
    """Each model's mean over the splits, and iALS's gain over the plain model, per split and
    pooled over all test users (each split's users are different users)."""
    names = list(next(iter(by_seed.values())))
    seeds = list(by_seed)
    print(f"over split seeds {', '.join(map(str, seeds))}:")
    print("| model | " + " | ".join(f"NDCG@10, split {seed}" for seed in seeds) + " | mean NDCG@10 | mean NDCG@100 |")
    print("|:---|" + "---:|" * (len(seeds) + 2))
    for name in names:
        values = [by_seed[seed][name].metrics["ndcg@10"] for seed in seeds]
        mean_100 = np.mean([by_seed[seed][name].metrics["ndcg@100"] for seed in seeds])
        cells = " | ".join(f"{value:.4f}" for value in values)
        print(f"| {name} | {cells} | {np.mean(values):.4f} | {mean_100:.4f} |")
    for seed in seeds:
        gap, error = paired_gap(by_seed[seed][PLAIN].per_user_ndcg, by_seed[seed][IALS].per_user_ndcg)
        print(f"split {seed}: iALS - plain NDCG@10 {gap:+.4f} +- {error:.4f} (standard error over "
              f"{by_seed[seed][IALS].per_user_ndcg.size} test users)")  # fmt: skip
    plain = np.concatenate([by_seed[seed][PLAIN].per_user_ndcg for seed in seeds])
    ials = np.concatenate([by_seed[seed][IALS].per_user_ndcg for seed in seeds])
    gap, error = paired_gap(plain, ials)
    print(f"all splits: iALS - plain NDCG@10 {gap:+.4f} +- {error:.4f} ({plain.size} test users, {gap / error:+.1f} "
          f"standard errors)")  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="the ml-100k folder (u.data), or 'synthetic'")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of search per tuned model")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--held-out-users", type=int, default=150, help="test users, and as many validation users")
    parser.add_argument("--seed", type=int, default=0, help="seeds every search's draws and every model")
    parser.add_argument("--split-seeds", type=int, nargs="+", default=[0], help="one held-out split per seed")
    parser.add_argument("--threads", type=int, default=0, help="0: every core")
    parser.add_argument("--fit-repeats", type=int, default=3, help="the best model's fit timed this many times")
    parser.add_argument("--show-fits", action="store_true", help="print every fit of each search")
    arguments = parser.parse_args(argv)
    for name in ("budget", "factors", "held_out_users", "fit_repeats"):
        if getattr(arguments, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(arguments, name)}")

    positives = synthetic_positives(0) if arguments.data == "synthetic" else movielens_positives(arguments.data)
    print(f"machine: {context_line()}; threads: {arguments.threads or os.cpu_count()}")
    print(f"data: {arguments.data}: {positives.shape[0]:,} users x {positives.shape[1]:,} items, "
          f"{positives.nnz:,} positives")  # fmt: skip
    print(f"budget: {arguments.budget:g} s of search per tuned model (fits and validation scoring); factors "
          f"{arguments.factors}; search and model seed {arguments.seed}")  # fmt: skip
    print()
    by_seed = {seed: run_split(positives, seed, arguments) for seed in arguments.split_seeds}
    summarize(by_seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
