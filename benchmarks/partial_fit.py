#!/usr/bin/env python
"""Streaming updates: how fast a fitted model absorbs new interactions and serves them.

    python benchmarks/partial_fit.py                       # the MovieLens-20M shape, factors 64
    python benchmarks/partial_fit.py --users 20000 --items 5000 --nnz 1000000   # a quick run

On a synthetic power-law matrix (``recore.datasets.synthetic``) it fits ALS, then measures:

- one-user updates: ``partial_fit_users`` of an existing user with ``--row`` interactions (p50 /
  p99 over ``--updates`` users), then ``recommend`` for that user, whose results are checked
  against a fresh ``ItemIndex`` search of the new factors (the recommendations are updated);
- new users: the same for ids past the end (the model grows);
- batches: events drawn like the data arrive in batches; each batch updates every user it
  touches (their whole rows) with one ``partial_fit_users`` call: batch latency and users and
  events per second;
- serving while updating: one-user ``recommend`` latency alone and with another thread running
  updates;
- items: ``partial_fit_items`` of a batch of items (the Gram matrix of the users is computed
  again after user updates, and the item factors are copied once per call);
- SGD (``--sgd-iterations`` > 0): one-user ``partial_fit_users`` of a squared-loss model.

It prints the CPU, recore's CPU target, the caches and the load average first: the machine
is shared, so compare runs made at a low load.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

import numpy as np
import recore
import scipy.sparse as sp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import context_line, machine_context  # noqa: E402


def percentiles(seconds) -> str:
    p50, p99 = np.percentile(np.asarray(seconds) * 1e6, [50, 99])
    return f"p50 {p50:8.1f} us   p99 {p99:8.1f} us"


def random_rows(rng, count: int, n_items: int, length: int) -> list:
    """``count`` one-row matrices of ``length`` distinct items each (values 1 to 5)."""
    rows = []
    for _ in range(count):
        items = np.sort(rng.choice(n_items, size=length, replace=False)).astype(np.int32)
        values = rng.integers(1, 6, size=length).astype(np.float32)
        rows.append(sp.csr_matrix((values, items, np.array([0, length], np.int32)), shape=(1, n_items)))
    return rows


def check_served(model, user: int, row, k: int) -> None:
    """The user's factors are the exact solve of ``row`` and ``recommend`` equals a fresh search."""
    np.testing.assert_array_equal(model.user_factors_[user], model.fold_in(row)[0])
    expected = recore.ItemIndex(np.ascontiguousarray(model.item_factors_)).search(
        np.ascontiguousarray(model.user_factors_[user]), k, exclude=row
    )
    for got, want in zip(model.recommend(user, row, k=k, user_items_layout="per_query"), expected):
        np.testing.assert_array_equal(got, want)


def one_user_updates(model, users, rows, k: int, serve_threads: int) -> tuple[list, list]:
    """Update latencies and recommend latencies, one user at a time."""
    update, serve = [], []
    for user, row in zip(users, rows):
        start = time.perf_counter()
        model.partial_fit_users(int(user), row)
        middle = time.perf_counter()
        model.recommend(int(user), row, k=k, user_items_layout="per_query", num_threads=serve_threads)
        update.append(middle - start)
        serve.append(time.perf_counter() - middle)
    return update, serve


def back_to_back(model, users, rows) -> list:
    seconds = []
    for user, row in zip(users, rows):
        start = time.perf_counter()
        model.partial_fit_users(int(user), row)
        seconds.append(time.perf_counter() - start)
    return seconds


def event_batches(rng, data, batches: int, events: int, new_share: float):
    """Batches of (users, items, values) drawn like the data: a stored entry's user (or, for
    ``new_share`` of them, a new user) and an item drawn by the items' popularity."""
    n_users, n_items = data.shape
    popularity = np.bincount(data.indices, minlength=n_items).astype(np.float64)
    popularity /= popularity.sum()
    entry_users = np.repeat(np.arange(n_users), np.diff(data.indptr))
    next_new = n_users
    for _ in range(batches):
        users = entry_users[rng.integers(0, len(entry_users), events)]
        new = rng.random(events) < new_share
        new_ids = next_new + rng.integers(0, max(1, int(events * new_share) // 4), new.sum())
        users[new] = new_ids
        next_new = max(next_new, int(new_ids.max()) + 1) if new.any() else next_new
        items = rng.choice(n_items, size=events, p=popularity).astype(np.int32)
        yield users, items, np.ones(events, np.float32)


def touched_rows(data, users, items, values):
    """Each touched user's whole row after the batch: stored row plus the batch's events."""
    touched = np.unique(users)
    n_items = data.shape[1]
    position = np.searchsorted(touched, users)
    events = sp.csr_matrix((values, (position, items)), shape=(len(touched), n_items))
    known = touched[touched < data.shape[0]]
    stored = sp.vstack([data[known], sp.csr_matrix((len(touched) - len(known), n_items), dtype=np.float32)])
    return touched, (stored.tocsr() + events).tocsr()


def batch_throughput(model, data, rng, batches: int, events: int, new_share: float) -> str:
    build, update, users_total = [], [], 0
    for users, items, values in event_batches(rng, data, batches, events, new_share):
        start = time.perf_counter()
        touched, rows = touched_rows(data, users, items, values)
        middle = time.perf_counter()
        model.partial_fit_users(touched, rows)
        build.append(middle - start)
        update.append(time.perf_counter() - middle)
        users_total += len(touched)
    seconds = sum(update)
    return (
        f"{events:>8,} events/batch: update {np.median(update) * 1e3:8.2f} ms/batch (median), "
        f"{users_total / seconds:10,.0f} users/s, {batches * events / seconds:10,.0f} events/s; "
        f"building the rows {np.median(build) * 1e3:7.2f} ms/batch"
    )


def serving_under_updates(model, rows, rng, k: int, queries: int, serve_threads: int) -> tuple[list, list]:
    """One-user recommend latencies without and with a thread updating users meanwhile."""
    n_users = model.user_factors_.shape[0]

    def serve() -> list:
        seconds = []
        for user in rng.integers(0, n_users, queries):
            start = time.perf_counter()
            model.recommend(int(user), k=k, num_threads=serve_threads)
            seconds.append(time.perf_counter() - start)
        return seconds

    alone = serve()
    stop = threading.Event()

    def update():
        step = 0
        while not stop.is_set():
            model.partial_fit_users(step % n_users, rows[step % len(rows)])
            step += 1

    writer = threading.Thread(target=update)
    writer.start()
    try:
        busy = serve()
    finally:
        stop.set()
        writer.join()
    return alone, busy


def run_als(arguments, data, rng) -> None:
    start = time.perf_counter()
    model = recore.ALS(
        factors=arguments.factors, iterations=arguments.iterations, regularization=0.05, random_state=0,
        num_threads=arguments.threads,
    ).fit(data)  # fmt: skip
    print(f"ALS fit: {arguments.iterations} iterations in {time.perf_counter() - start:.1f} s")
    n_users, n_items = data.shape
    rows = random_rows(rng, arguments.updates, n_items, arguments.row)
    users = rng.integers(0, n_users, arguments.updates)

    model.recommend(0, k=arguments.k)  # the serving index and its panels, made once
    start = time.perf_counter()
    model.partial_fit_users(int(users[0]), rows[0])  # the items' Gram matrix, computed once
    print(f"first update (computes the items' Gram matrix once): {(time.perf_counter() - start) * 1e3:.2f} ms")
    for user, row in zip(users[:20], rows[:20]):
        model.partial_fit_users(int(user), row)
        check_served(model, int(user), row, arguments.k)
    print("checked: 20 updated users' factors equal fold_in of their rows, recommend equals a fresh ItemIndex")

    update, serve = one_user_updates(model, users, rows, arguments.k, arguments.serve_threads)
    print(f"\none existing user, {arguments.row} interactions, factors {arguments.factors}, {n_items:,} items")
    print(f"  partial_fit_users            {percentiles(update)}")
    print(f"  then recommend (k={arguments.k})       {percentiles(serve)}")
    print("  partial_fit_users, back to back (no search between)")
    print(f"                               {percentiles(back_to_back(model, users, rows))}")
    new_users = np.arange(n_users, n_users + arguments.updates)
    update, serve = one_user_updates(model, new_users, rows, arguments.k, arguments.serve_threads)
    print("one new user (the model grows by one row each time)")
    print(f"  partial_fit_users            {percentiles(update)}")
    print(f"  then recommend (k={arguments.k})       {percentiles(serve)}")

    print("\nbatches of events (each touched user's whole row solved again; 2% of events from new users)")
    for events in arguments.batch_events:
        print("  " + batch_throughput(model, data, rng, arguments.batches, events, 0.02))

    alone, busy = serving_under_updates(model, rows, rng, arguments.k, arguments.updates, arguments.serve_threads)
    print(f"\nrecommend (k={arguments.k}), one user")
    print(f"  alone                        {percentiles(alone)}")
    print(f"  while a thread updates users {percentiles(busy)}")

    item_users = data.T.tocsr()
    print("\npartial_fit_items (after user updates: the users' Gram matrix is computed again once)")
    for count in (1, 100, 1000):
        items = rng.choice(n_items, size=count, replace=False)
        start = time.perf_counter()
        model.partial_fit_items(items, item_users[items])
        first = time.perf_counter() - start
        start = time.perf_counter()
        model.partial_fit_items(items, item_users[items])
        again = time.perf_counter() - start
        print(f"  {count:>5} items: {first * 1e3:8.2f} ms with the Gram matrix, {again * 1e3:8.2f} ms without")
        model.partial_fit_users(0, rows[0])  # the users changed: the next call computes it again


def run_sgd(arguments, data, rng) -> None:
    start = time.perf_counter()
    ratings = data.copy()
    ratings.data = rng.integers(1, 6, ratings.nnz).astype(np.float32)
    model = recore.SGD(
        factors=arguments.factors, iterations=arguments.sgd_iterations, random_state=0, num_threads=arguments.threads
    ).fit(ratings)
    print(f"\nSGD fit: {arguments.sgd_iterations} epochs in {time.perf_counter() - start:.1f} s")
    rows = random_rows(rng, arguments.updates, data.shape[1], arguments.row)
    users = rng.integers(0, data.shape[0], arguments.updates)
    model.recommend(0, k=arguments.k)
    update, serve = one_user_updates(model, users, rows, arguments.k, arguments.serve_threads)
    print(f"one existing user, {arguments.row} ratings, 10 epochs (the default)")
    print(f"  partial_fit_users            {percentiles(update)}")
    print(f"  then recommend (k={arguments.k})       {percentiles(serve)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    parser.add_argument("--users", type=int, default=138_000)
    parser.add_argument("--items", type=int, default=27_000)
    parser.add_argument("--nnz", type=int, default=17_000_000)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=3, help="ALS iterations of the fit (speed is the same)")
    parser.add_argument("--sgd-iterations", type=int, default=2, help="SGD epochs of its fit; 0 skips SGD")
    parser.add_argument("--row", type=int, default=100, help="interactions of an updated user")
    parser.add_argument("--updates", type=int, default=2000, help="one-user updates timed")
    parser.add_argument("--batches", type=int, default=5, help="batches timed per batch size")
    parser.add_argument("--batch-events", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="the models' num_threads (0: all cores)")
    parser.add_argument("--serve-threads", type=int, default=1, help="num_threads of the one-user recommend calls")
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args(argv)

    print(context_line(machine_context(None)))
    print(f"recore {recore.__version__}; data: {arguments.users:,} users x {arguments.items:,} items, "
          f"about {arguments.nnz:,} interactions (recore.datasets.synthetic)")  # fmt: skip
    rng = np.random.default_rng(arguments.seed)
    start = time.perf_counter()
    data = recore.datasets.synthetic(arguments.users, arguments.items, arguments.nnz, random_state=arguments.seed)
    print(f"made {data.nnz:,} interactions in {time.perf_counter() - start:.1f} s")
    run_als(arguments, data, rng)
    if arguments.sgd_iterations > 0:
        run_sgd(arguments, data, rng)
    print(f"\nload average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
