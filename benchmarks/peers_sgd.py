"""``peers.py sgd``: SGD matrix factorization, recore against LIBMF and Surprise.

    python benchmarks/peers.py sgd --libmf /path/to/libmf     # MovieLens-20M-shaped ratings
    python benchmarks/peers.py sgd --nnz 1000000 --skip-libmf

Data: ``recore.datasets.synthetic_ratings`` (the power-law pattern of the ALS benchmark,
ratings 1..5 from a planted rank-16 model plus noise), split 90/10 at random.

LIBMF (built from its public repository with its AVX option; never part of recore) trains
through its command-line tools on the same split written as text; its training time is the
wall time of ``mf-train -t EPOCHS`` minus that of ``mf-train -t 1`` (reading the file,
building its grid, one epoch), which is EPOCHS - 1 epochs, so both sides count epochs only;
each of the two is the median of ``--repeats`` alternating runs, and recore's figure is
that of the median of as many fits (one of each ``--storage`` per round, in turn). Beside wall
time, both are also measured in CPU time (recore: the process's, summed over its threads,
between the first and last epoch's callbacks; LIBMF: its child process's, the same difference
of two runs), which leaves out the time a shared machine gave to other work.
Both use the bias-free model LIBMF trains, its adaptive learning-rate schedule, the same factors, epochs, learning rate,
regularization and threads. Updates per second = epochs x training ratings / training
seconds.

Surprise's SVD (single-threaded, biased, constant learning rate) runs on a subset against
recore with one thread and the same model and hyperparameters.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import recore
import scipy.sparse as sp
from peers_als import DEFAULT_SEED, MOVIELENS_20M_LIKE

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import context_line, machine_context  # noqa: E402

DESCRIPTION = "Compare recore's SGD with LIBMF and Surprise on the same synthetic ratings."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--factors", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=0.1, help="LIBMF's default")
    parser.add_argument("--regularization", type=float, default=0.05)
    parser.add_argument("--users", type=int, default=MOVIELENS_20M_LIKE[0])
    parser.add_argument("--items", type=int, default=MOVIELENS_20M_LIKE[1])
    parser.add_argument("--nnz", type=int, default=MOVIELENS_20M_LIKE[2])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--libmf", metavar="DIR", help="directory holding LIBMF's mf-train and mf-predict")
    parser.add_argument("--skip-libmf", action="store_true")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of each timing against LIBMF (recore fits, LIBMF runs); the median"
    )
    parser.add_argument("--surprise-ratings", type=int, default=500_000, help="ratings in the Surprise comparison")
    parser.add_argument("--surprise-factors", type=int, default=32)
    parser.add_argument("--surprise-epochs", type=int, default=5)
    parser.add_argument("--surprise-repeats", type=int, default=3, help="alternating runs of each library")
    parser.add_argument("--cpu-target", help="run recore's kernels for this instruction set (recore.set_cpu_target)")
    parser.add_argument(
        "--storage", nargs="+", default=["float32"], choices=["float32", "float16"], help="recore's factor storage"
    )
    parser.add_argument("--blocks", type=int, default=0, help="recore's grid side (0: its own choice)")
    parser.add_argument("--json", metavar="PATH", help="also write the results here")


def split(ratings, seed):
    """90/10 random split of the stored ratings."""
    coo = ratings.tocoo()
    test = np.random.default_rng(seed).random(coo.nnz) < 0.1
    make = lambda m: sp.csr_matrix((coo.data[m], (coo.row[m], coo.col[m])), shape=ratings.shape)  # noqa: E731
    return make(~test), make(test)


def rmse(model, test) -> float:
    coo = test.tocoo()
    return float(np.sqrt(np.mean((model.predict(coo.row, coo.col) - coo.data) ** 2)))


def fit_recore(train, test, factors, arguments, *, threads, biases=False, schedule="adaptive", **overrides):
    options = dict(
        factors=factors, iterations=arguments.epochs, learning_rate=arguments.learning_rate,
        regularization=arguments.regularization, bias_regularization=arguments.regularization, biases=biases,
        schedule=schedule, init_scale=0.1, num_threads=threads, random_state=arguments.seed, blocks=arguments.blocks,
    )  # fmt: skip
    options.update(overrides)
    epoch_seconds, cpu_clock = [], []

    def after_epoch(epoch, metrics):
        epoch_seconds.append(metrics["seconds"])
        # One thread trains on the calling thread; more on the engine's team besides it.
        cpu_clock.append(time.thread_time() if threads == 1 else time.process_time())

    model = recore.SGD(**options)
    model.fit(train, callback=after_epoch)
    seconds = sum(epoch_seconds)
    result = {
        "seconds": seconds,
        "updates_per_second": options["iterations"] * train.nnz / seconds,
        "rmse": rmse(model, test),
    }
    if len(cpu_clock) > 1:
        # The CPU time between callbacks is an epoch's, without the time the machine gave to
        # others.
        result["cpu_seconds"] = float(np.median(np.diff(cpu_clock))) * options["iterations"]
        result["cpu_updates_per_second"] = options["iterations"] * train.nnz / result["cpu_seconds"]
    return result


def write_libmf(matrix, path):
    coo = matrix.tocoo()
    np.savetxt(path, np.column_stack([coo.row, coo.col, coo.data]), fmt=["%d", "%d", "%.0f"], delimiter=" ")


def fit_libmf(train_path, test_path, count, factors, arguments, directory):
    def train(epochs, model_path):
        command = [
            os.path.join(directory, "mf-train"), "-k", str(factors), "-t", str(epochs), "-r",
            str(arguments.learning_rate), "-l2", str(arguments.regularization), "-s", str(arguments.threads),
            "--quiet", train_path, model_path,
        ]  # fmt: skip
        began, cpu_began = time.perf_counter(), children_cpu_seconds()
        subprocess.run(command, check=True, capture_output=True)
        return time.perf_counter() - began, children_cpu_seconds() - cpu_began

    with tempfile.TemporaryDirectory() as work:
        model_path = os.path.join(work, "model")
        # (mf-train crashes with -t 0, so the baseline is one epoch.) Each is the median of
        # alternating runs: the difference of two noisy wall times is noisier still.
        overheads, totals = [], []
        for _ in range(arguments.repeats):
            overheads.append(train(1, model_path))
            totals.append(train(arguments.epochs, model_path))
        overhead, total = np.median(overheads, axis=0), np.median(totals, axis=0)
        output = os.path.join(work, "predictions")
        result = subprocess.run(
            [os.path.join(directory, "mf-predict"), "-e", "0", test_path, model_path, output],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
    # As if for every epoch: wall, then CPU seconds.
    seconds, cpu_seconds = (float(v) for v in (total - overhead) * arguments.epochs / (arguments.epochs - 1))
    reported = [line for line in result.stdout.splitlines() if "RMSE" in line]
    test_rmse = float(reported[-1].split("=")[-1]) if reported else float("nan")
    return {
        "seconds": seconds, "updates_per_second": arguments.epochs * count / seconds, "cpu_seconds": cpu_seconds,
        "cpu_updates_per_second": arguments.epochs * count / cpu_seconds, "rmse": test_rmse,
    }  # fmt: skip


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fit_surprise(train, test, arguments):
    import pandas as pd
    from surprise import SVD, Dataset, Reader

    coo = train.tocoo()
    frame = pd.DataFrame({"user": coo.row, "item": coo.col, "rating": coo.data})
    data = Dataset.load_from_df(frame, Reader(rating_scale=(1, 5))).build_full_trainset()
    model = SVD(
        n_factors=arguments.surprise_factors, n_epochs=arguments.surprise_epochs, lr_all=0.005, reg_all=0.02,
        random_state=0,
    )  # fmt: skip
    began, cpu_began = time.perf_counter(), time.thread_time()
    model.fit(data)
    seconds, cpu_seconds = time.perf_counter() - began, time.thread_time() - cpu_began
    test_coo = test.tocoo()
    predictions = [model.predict(u, i).est for u, i in zip(test_coo.row[:20000], test_coo.col[:20000])]
    error = float(np.sqrt(np.mean((np.array(predictions) - test_coo.data[:20000]) ** 2)))
    updates = arguments.surprise_epochs * train.nnz
    return {
        "seconds": seconds, "updates_per_second": updates / seconds, "cpu_seconds": cpu_seconds,
        "cpu_updates_per_second": updates / cpu_seconds, "rmse": error,
    }  # fmt: skip


def run(arguments: argparse.Namespace) -> int:
    began = time.perf_counter()
    ratings = recore.datasets.synthetic_ratings(
        arguments.users, arguments.items, arguments.nnz, random_state=arguments.seed
    )
    train, test = split(ratings, arguments.seed)
    print(
        f"data: {ratings.shape[0]:,} users x {ratings.shape[1]:,} items, {train.nnz:,} training and {test.nnz:,} "
        f"test ratings (generated in {time.perf_counter() - began:.1f} s); {arguments.epochs} epochs, "
        f"{arguments.threads} threads, learning rate {arguments.learning_rate}, regularization "
        f"{arguments.regularization}, no biases, adaptive schedule"
    )
    if arguments.cpu_target:
        recore.set_cpu_target(arguments.cpu_target)
    print(f"machine: {context_line(machine_context(None))}")
    records = []
    libmf = None if arguments.skip_libmf else arguments.libmf
    paths = None
    if libmf:
        work = tempfile.mkdtemp()
        paths = (os.path.join(work, "train.txt"), os.path.join(work, "test.txt"))
        write_libmf(train, paths[0])
        write_libmf(test, paths[1])
    print(
        "| factors | library | storage | training s | updates / s | updates / CPU s | test RMSE | recore over peer "
        "(wall, CPU) | RMSE difference |"
    )
    print("|---:|:---|:---|---:|---:|---:|---:|---:|---:|")
    for factors in arguments.factors:
        fits = {storage: [] for storage in arguments.storage}
        for _ in range(arguments.repeats):
            for storage in arguments.storage:
                fits[storage].append(
                    fit_recore(train, test, factors, arguments, threads=arguments.threads, storage=storage)
                )
        theirs = fit_libmf(*paths, train.nnz, factors, arguments, libmf) if libmf else None
        for storage, runs in fits.items():
            ours = sorted(runs, key=lambda fit: fit["updates_per_second"])[len(runs) // 2]
            cpu = float(np.median([fit["cpu_updates_per_second"] for fit in runs]))
            ratios = ""
            if theirs:
                ratios = (
                    f"{ours['updates_per_second'] / theirs['updates_per_second']:.2f}, "
                    f"{cpu / theirs['cpu_updates_per_second']:.2f} | {ours['rmse'] - theirs['rmse']:+.4f}"
                )
            print(
                f"| {factors} | recore | {storage} | {ours['seconds']:.2f} | {ours['updates_per_second']:.3g} | "
                f"{cpu:.3g} | {ours['rmse']:.4f} | {ratios} |"
            )
            records.append({"factors": factors, "library": "recore", "storage": storage, **ours, "cpu_median": cpu})
        if theirs:
            print(
                f"| {factors} | LIBMF | float32 | {theirs['seconds']:.2f} | {theirs['updates_per_second']:.3g} | "
                f"{theirs['cpu_updates_per_second']:.3g} | {theirs['rmse']:.4f} | | |"
            )
            records.append({"factors": factors, "library": "LIBMF", **theirs})
        sys.stdout.flush()
    print(f"load average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")

    # Single thread against Surprise's SVD, biased model, constant rate, on a subset.
    subset = ratings[: max(1, int(ratings.shape[0] * arguments.surprise_ratings / max(ratings.nnz, 1)))]
    small_train, small_test = split(subset, arguments.seed)
    try:
        import surprise  # noqa: F401
    except ImportError as missing:
        print(f"note: skipping Surprise: {missing}", file=sys.stderr)
    else:
        print(
            f"\nsingle thread, {small_train.nnz:,} ratings, factors {arguments.surprise_factors}, "
            f"{arguments.surprise_epochs} epochs, biased, constant rate 0.005, regularization 0.02; "
            f"{arguments.surprise_repeats} alternating runs each (wall clock, and the training thread's CPU time):"
        )
        print("| run | recore updates/s (wall, CPU) | Surprise updates/s (wall, CPU) | ratio wall | ratio CPU |")
        print("|---:|---:|---:|---:|---:|")
        runs = []
        for repeat in range(arguments.surprise_repeats):
            theirs = fit_surprise(small_train, small_test, arguments)
            ours = fit_recore(
                small_train, small_test, arguments.surprise_factors, arguments, threads=1, biases=True,
                schedule="constant", iterations=arguments.surprise_epochs, learning_rate=0.005, regularization=0.02,
                bias_regularization=0.02,
            )  # fmt: skip
            wall = ours["updates_per_second"] / theirs["updates_per_second"]
            cpu = ours["cpu_updates_per_second"] / theirs["cpu_updates_per_second"]
            print(
                f"| {repeat + 1} | {ours['updates_per_second']:.3g}, {ours['cpu_updates_per_second']:.3g} | "
                f"{theirs['updates_per_second']:.3g}, {theirs['cpu_updates_per_second']:.3g} | {wall:.1f} | {cpu:.1f} |"
            )
            runs.append({"surprise": theirs, "recore_single": ours, "ratio": wall, "cpu_ratio": cpu})
        print(
            f"  test RMSE: recore {runs[-1]['recore_single']['rmse']:.4f}, Surprise {runs[-1]['surprise']['rmse']:.4f}"
        )
        print(
            f"  recore / Surprise, median of the runs: {np.median([r['ratio'] for r in runs]):.1f} x (wall clock), "
            f"{np.median([r['cpu_ratio'] for r in runs]):.1f} x (CPU time)"
        )
        records.extend(runs)
    if arguments.json:
        with open(arguments.json, "w") as file:
            json.dump(records, file, indent=2)
    return 0
