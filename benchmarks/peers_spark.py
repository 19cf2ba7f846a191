"""``peers.py spark``: implicit ALS and all-users top-10, recore against Spark MLlib.

    python benchmarks/peers.py spark --users 20000 --items 5000 --nnz 1000000

Spark runs in local mode with as many cores as recore has threads (``local[N]``), on the same
synthetic interactions (``implicitPrefs=True``, the same rank, regularization and alpha; Spark's
confidence is 1 + alpha * value, recore's ``confidence="linear"``). Seconds per iteration:
(fit with ``--iterations`` minus fit with one iteration) / (iterations - 1) for Spark, so its
start-up and data loading do not count; recore's own per-iteration times. Top-10 for every
user: Spark's ``recommendForAllUsers(10)`` (which does not exclude seen items) against
recore's ``recommend_all`` (which does).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import recore
from machine import context_line
from peers_als import DEFAULT_SEED, MOVIELENS_20M_LIKE

DESCRIPTION = "Compare recore's ALS and all-users top-10 with Spark MLlib's."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--regularization", type=float, default=0.05)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--users", type=int, default=MOVIELENS_20M_LIKE[0])
    parser.add_argument("--items", type=int, default=MOVIELENS_20M_LIKE[1])
    parser.add_argument("--nnz", type=int, default=MOVIELENS_20M_LIKE[2])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--json", metavar="PATH", help="also write the results here")


def load_interactions(spark, user_items, directory: str):
    """The interactions as a cached Spark DataFrame, read by Spark from a Parquet file.

    Building the DataFrame from Python rows pickles every row through Py4J: at 17M rows that
    alone took longer than ten minutes here. Parquet written by pyarrow and read by Spark
    itself loads the same rows in seconds.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    coo = user_items.tocoo()
    path = os.path.join(directory, "interactions.parquet")
    table = pa.table({"user": coo.row.astype(np.int32), "item": coo.col.astype(np.int32), "value": coo.data.astype(np.float32)})
    pq.write_table(table, path)
    frame = spark.read.parquet(path).cache()
    frame.count()
    return frame


def run_spark(user_items, arguments) -> dict:
    with tempfile.TemporaryDirectory(prefix="recore-spark-") as directory:
        return _run_spark(user_items, arguments, directory)


def _run_spark(user_items, arguments, directory: str) -> dict:
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master(f"local[{arguments.threads}]")
        .config("spark.driver.memory", "8g")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    frame = load_interactions(spark, user_items, directory)

    def fit(iterations):
        als = ALS(
            rank=arguments.factors, maxIter=iterations, regParam=arguments.regularization, alpha=arguments.alpha,
            implicitPrefs=True, userCol="user", itemCol="item", ratingCol="value", seed=arguments.seed,
        )  # fmt: skip
        began = time.perf_counter()
        model = als.fit(frame)
        model.userFactors.count()  # fitting is lazy until the factors are used
        return model, time.perf_counter() - began

    fit(1)  # the first fit also warms the JVM up
    _, one = fit(1)
    model, many = fit(arguments.iterations)
    began = time.perf_counter()
    model.recommendForAllUsers(10).count()
    recommend = time.perf_counter() - began
    spark.stop()
    return {"seconds_per_iteration": (many - one) / (arguments.iterations - 1), "recommend_all_seconds": recommend}


def run(arguments: argparse.Namespace) -> int:
    user_items = recore.datasets.synthetic(arguments.users, arguments.items, arguments.nnz, random_state=arguments.seed)
    print(f"machine: {context_line()}")
    print(
        f"data: {user_items.shape[0]:,} users x {user_items.shape[1]:,} items, {user_items.nnz:,} interactions; "
        f"factors {arguments.factors}, {arguments.threads} threads"
    )
    seconds = []
    model = recore.ALS(
        factors=arguments.factors, iterations=arguments.iterations, regularization=arguments.regularization,
        alpha=arguments.alpha, num_threads=arguments.threads, random_state=arguments.seed,
    )  # fmt: skip
    model.fit(user_items, callback=lambda iteration, metrics: seconds.append(metrics["seconds"]))
    began = time.perf_counter()
    model.recommend_all(user_items, k=10, num_threads=arguments.threads)
    ours = {"seconds_per_iteration": float(np.median(seconds)), "recommend_all_seconds": time.perf_counter() - began}
    try:
        theirs = run_spark(user_items, arguments)
    except ImportError as missing:
        print(f"note: skipping Spark: {missing}", file=sys.stderr)
        theirs = None
    print("| measure | recore | Spark MLlib | recore / Spark |")
    print("|:---|---:|---:|---:|")
    for key, label in (
        ("seconds_per_iteration", "ALS s / iteration"),
        ("recommend_all_seconds", "top-10, all users, s"),
    ):
        if theirs:
            print(f"| {label} | {ours[key]:.3f} | {theirs[key]:.3f} | {ours[key] / theirs[key]:.3f} |")
        else:
            print(f"| {label} | {ours[key]:.3f} | — | — |")
    if arguments.json:
        with open(arguments.json, "w") as file:
            json.dump({"recore": ours, "spark": theirs}, file, indent=2)
    return 0
