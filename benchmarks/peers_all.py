"""``peers.py all``: every area against every installed peer, on one data size, one table.

    python benchmarks/peers.py all --users 20000 --items 5000 --nnz 1000000 [--libmf DIR]

Runs the ``als`` (implicit), ``topk`` (faiss, implicit), ``sgd`` (LIBMF when ``--libmf`` is
given, Surprise) and ``spark`` (Spark MLlib through pyspark) areas in turn, each printing its
own details, then prints one markdown table of times, quality and ratios. Peers that are not
installed are skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import peers_als
import peers_sgd
import peers_spark
import peers_topk

DESCRIPTION = "Every area against every installed peer, in one table."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--nnz", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--libmf", metavar="DIR", help="LIBMF's mf-train / mf-predict, built separately")
    parser.add_argument("--json", metavar="PATH", help="also write the table's rows here")


def _area_arguments(module, **overrides) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    arguments = parser.parse_args([])
    for name, value in overrides.items():
        setattr(arguments, name, value)
    return arguments


def _run(module, path, **overrides):
    module.run(_area_arguments(module, json=path, **overrides))
    with open(path) as file:
        return json.load(file)


def run(arguments: argparse.Namespace) -> int:
    size = dict(users=arguments.users, items=arguments.items, nnz=arguments.nnz, threads=arguments.threads)
    rows = []  # task, library, seconds, quality
    with tempfile.TemporaryDirectory() as work:
        for record in _run(peers_als, os.path.join(work, "als.json"), factors=[64], iterations=3, **size):
            task = f"ALS {record['solver']}, f={record['factors']}: s / iteration"
            rows.append((task, record["library"], record["seconds_per_iteration"], f"loss {record['loss']:.6g}"))
        for record in _run(peers_topk, os.path.join(work, "topk.json"), factors=[64], skip_memory=True, **size):
            if "factors" in record:
                task = f"top-10 all users, f={record['factors']}: s"
                rows.append((task, record["library"], record["seconds"], ""))
            elif "single_query" in record:
                rows.append(("top-10 one user, 1 thread: s", record["single_query"], record["seconds"], ""))
        sgd = _run(
            peers_sgd, os.path.join(work, "sgd.json"), factors=[32], epochs=10, libmf=arguments.libmf,
            skip_libmf=arguments.libmf is None, surprise_ratings=min(arguments.nnz, 200_000), **size,
        )  # fmt: skip
        for record in sgd:
            if "library" in record:
                task = f"SGD bias-free, f={record['factors']}: training s"
                rows.append((task, record["library"], record["seconds"], f"RMSE {record['rmse']:.4f}"))
            elif "surprise" in record:
                task = "SGD biased, 1 thread: training s"
                for library, key in (("recore", "recore_single"), ("Surprise", "surprise")):
                    rows.append((task, library, record[key]["seconds"], f"RMSE {record[key]['rmse']:.4f}"))
        spark = _run(peers_spark, os.path.join(work, "spark.json"), iterations=3, **size)
        for library, key in (("recore", "recore"), ("Spark MLlib", "spark")):
            if spark[key]:
                measures = spark[key]
                rows.append(
                    ("ALS CG, f=64, Spark's setup: s / iteration", library, measures["seconds_per_iteration"], "")
                )
                rows.append(("top-10 all users, Spark's setup: s", library, measures["recommend_all_seconds"], ""))
    print()
    print("| task | library | seconds | quality | recore / this |")
    print("|:---|:---|---:|:---|---:|")
    ours = {}
    for task, library, seconds, _ in rows:
        if library.startswith("recore"):
            ours.setdefault(task, seconds)  # float32 before bfloat16
    for task, library, seconds, quality in rows:
        base = ours.get(task)
        ratio = f"{base / seconds:.2f}" if base and not library.startswith("recore") else "—"
        print(f"| {task} | {library} | {seconds:.4g} | {quality} | {ratio} |")
    if arguments.json:
        with open(arguments.json, "w") as file:
            json.dump([dict(zip(("task", "library", "seconds", "quality"), row)) for row in rows], file, indent=2)
    sys.stdout.flush()
    return 0
