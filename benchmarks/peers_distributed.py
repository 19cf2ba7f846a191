"""``peers.py distributed``: recore on a local Dask cluster against single-process recore and
Spark MLlib.

    python benchmarks/peers.py distributed                      # MovieLens-20M-shaped, 2 workers
    python benchmarks/peers.py distributed --no-spark           # recore only
    python benchmarks/peers.py distributed --users 20000 --items 5000 --nnz 1000000

On the same synthetic interactions and the same cores: ALS seconds per iteration of
:class:`recore.distributed.ALS` (``--workers`` worker processes x ``--worker-threads``
threads), of :class:`recore.ALS` in this process (``--threads`` threads) and of Spark MLlib
ALS (``local[threads]``, ``implicitPrefs=True``, same rank, regularization and alpha; see
peers_spark.py); then all-users top-10: :func:`recore.distributed.recommend_all` (excluding
seen items), :meth:`recore.ALS.recommend_all` and Spark's ``recommendForAllUsers(10)``.
recore's per-iteration figures are the median of its callback's times; the interactions are
sharded onto the workers before the first iteration and that set-up is reported apart.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import recore
from machine import context_line
from peers_als import DEFAULT_SEED, MOVIELENS_20M_LIKE

DESCRIPTION = "Compare distributed recore (Dask) with single-process recore and Spark MLlib."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="single-process recore and Spark")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-threads", type=int, default=1)
    parser.add_argument("--regularization", type=float, default=0.05)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--users", type=int, default=MOVIELENS_20M_LIKE[0])
    parser.add_argument("--items", type=int, default=MOVIELENS_20M_LIKE[1])
    parser.add_argument("--nnz", type=int, default=MOVIELENS_20M_LIKE[2])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--no-spark", action="store_true", help="skip Spark MLlib")
    parser.add_argument("--json", metavar="PATH", help="also write the results here")


def model_options(arguments) -> dict:
    return dict(
        factors=arguments.factors, iterations=arguments.iterations, regularization=arguments.regularization,
        alpha=arguments.alpha, random_state=arguments.seed,
    )  # fmt: skip


def run_single(user_items, arguments) -> dict:
    seconds = []
    model = recore.ALS(num_threads=arguments.threads, **model_options(arguments))
    model.fit(user_items, callback=lambda iteration, metrics: seconds.append(metrics["seconds"]))
    began = time.perf_counter()
    model.recommend_all(user_items, k=10, num_threads=arguments.threads)
    return {
        "seconds_per_iteration": float(np.median(seconds)),
        "recommend_all_seconds": time.perf_counter() - began,
    }


def run_distributed(user_items, arguments) -> dict:
    from dask.distributed import Client, LocalCluster
    from recore.distributed import ALS, recommend_all

    seconds, first_iteration_began = [], []
    with (
        LocalCluster(
            n_workers=arguments.workers, threads_per_worker=arguments.worker_threads, processes=True,
            dashboard_address=":0", silence_logs=40,
        ) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        model = ALS(num_threads=arguments.worker_threads, **model_options(arguments))
        began = time.perf_counter()

        def record(iteration, metrics):
            elapsed = metrics["seconds"]
            if not first_iteration_began:
                first_iteration_began.append(time.perf_counter() - elapsed)
            seconds.append(elapsed)

        model.fit(user_items, client=client, callback=record)
        setup = first_iteration_began[0] - began
        began = time.perf_counter()
        recommend_all(model.user_factors_, model.item_factors_, 10, user_items=user_items, client=client)
        recommend = time.perf_counter() - began
    return {
        "seconds_per_iteration": float(np.median(seconds)),
        "recommend_all_seconds": recommend,
        "setup_seconds": setup,
    }


def run(arguments: argparse.Namespace) -> int:
    user_items = recore.datasets.synthetic(arguments.users, arguments.items, arguments.nnz, random_state=arguments.seed)
    print(f"machine: {context_line()}")
    print(
        f"data: {user_items.shape[0]:,} users x {user_items.shape[1]:,} items, {user_items.nnz:,} interactions; "
        f"factors {arguments.factors}; distributed: {arguments.workers} workers x {arguments.worker_threads} "
        f"thread(s); single process and Spark: {arguments.threads} threads"
    )
    results = {"distributed": run_distributed(user_items, arguments), "single": run_single(user_items, arguments)}
    results["spark"] = None
    if not arguments.no_spark:
        try:
            from peers_spark import run_spark

            results["spark"] = run_spark(user_items, arguments)
        except ImportError as missing:
            print(f"note: skipping Spark: {missing}", file=sys.stderr)
    setup = results["distributed"]["setup_seconds"]
    print(f"distributed set-up (sharding the interactions onto the workers): {setup:.2f} s")
    spark = results["spark"]
    print("| measure | recore distributed | recore single process | Spark MLlib | Spark / distributed |")
    print("|:---|---:|---:|---:|---:|")
    for key, label in (
        ("seconds_per_iteration", "ALS s / iteration"),
        ("recommend_all_seconds", "top-10, all users, s"),
    ):
        ours, single = results["distributed"][key], results["single"][key]
        theirs = f"{spark[key]:.3f} | {spark[key] / ours:.1f} x" if spark else "— | —"
        print(f"| {label} | {ours:.3f} | {single:.3f} | {theirs} |")
    if arguments.json:
        with open(arguments.json, "w") as file:
            json.dump(results, file, indent=2)
    return 0
