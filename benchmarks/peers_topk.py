"""``peers.py topk``: top-k for every user, recore against faiss and implicit.

    python benchmarks/peers.py topk                      # MovieLens-20M-sized, factors 64 and 128
    python benchmarks/peers.py topk --factors 64 --users 20000 --items 5000 --nnz 1000000

Factors are random normal (shaped like a model of ``recore.datasets.synthetic``'s
MovieLens-20M-sized matrix); each user's training items, from that matrix, are excluded by
recore and by implicit's ``recommend`` (``filter_already_liked_items``). faiss's
``IndexFlatIP`` searches without any exclusion (it has no per-query filter), so it does
less work. Every library gets the same threads; implicit's BLAS is limited to one thread.

Also measured: the latency of one user's query (1 thread each, median of many), and the peak
memory one search of 10,000 queries over a 1,000,000-item catalog adds beyond its inputs
and outputs (in a fresh process, from the peak resident set size).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np
import recore
from machine import context_line
from peers_als import DEFAULT_SEED, MOVIELENS_20M_LIKE

DESCRIPTION = "Compare recore's exact top-k with faiss and implicit on the same factors."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--factors", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--users", type=int, default=MOVIELENS_20M_LIKE[0])
    parser.add_argument("--items", type=int, default=MOVIELENS_20M_LIKE[1])
    parser.add_argument("--nnz", type=int, default=MOVIELENS_20M_LIKE[2])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--latency-repeats", type=int, default=300)
    parser.add_argument("--skip-memory", action="store_true", help="skip the 1,000,000-item memory probe")
    parser.add_argument("--json", metavar="PATH", help="also write the results here")


def timed(function):
    began = time.perf_counter()
    result = function()
    return time.perf_counter() - began, result


def recore_search(users, items, k, seen, threads, precision="float32"):
    return recore.topk(users, items, k, exclude=seen, precision=precision, num_threads=threads)


def faiss_search(users, items, k, threads):
    import faiss

    faiss.omp_set_num_threads(threads)
    index = faiss.IndexFlatIP(items.shape[1])
    index.add(items)
    scores, ids = index.search(users, k)
    return ids, scores


def implicit_search(users, items, k, seen, threads):
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=users.shape[1], num_threads=threads)
        model.user_factors, model.item_factors = users, items
        ids, scores = model.recommend(np.arange(users.shape[0]), seen, N=k, filter_already_liked_items=True)
    return ids, scores


def latencies(functions: dict, repeats: int, rounds: int = 6) -> dict:
    """Median seconds per call of each function: rounds of `repeats / rounds` consecutive
    calls each, the libraries taking turns, so that each serves with its own data warm in
    cache (as a server answering one user after another does) and all see the same load."""
    times = {name: [] for name in functions}
    per_round = max(1, repeats // rounds)
    for _ in range(rounds):
        for name, function in functions.items():
            function()  # warm this library's data again
            for _ in range(per_round):
                began = time.perf_counter()
                function()
                times[name].append(time.perf_counter() - began)
    return {name: statistics.median(values) for name, values in times.items()}


MEMORY_PROBE = """
import sys, numpy as np, recore

def status(field):
    with open("/proc/self/status") as file:
        return next(int(line.split()[1]) for line in file if line.startswith(field))  # kB

n_items, n_queries, f = 1_000_000, 10_000, 64
rng = np.random.default_rng(0)
items = rng.standard_normal((n_items, f), dtype=np.float32)
queries = rng.standard_normal((n_queries, f), dtype=np.float32)
recore.topk(queries[:100], items[:1000], 10)  # load the engine and its thread pool
with open("/proc/self/clear_refs", "w") as file:
    file.write("5")  # reset the peak resident set size to the current one
before = status("VmRSS:")
found, best = recore.topk(queries, items, 10, num_threads=int(sys.argv[1]))
peak = status("VmHWM:")
outputs = (found.nbytes + best.nbytes) / 1024
print((peak - before - outputs) / 1024)
"""


def memory_growth_mb(threads: int) -> float:
    """Peak resident growth of one search, in MB, beyond its inputs and outputs (Linux: the
    peak is reset through /proc/self/clear_refs just before the search)."""
    output = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(threads)], check=True, capture_output=True, text=True
    )
    return float(output.stdout.strip())


def run(arguments: argparse.Namespace) -> int:
    rng = np.random.default_rng(arguments.seed)
    began = time.perf_counter()
    user_items = recore.datasets.synthetic(arguments.users, arguments.items, arguments.nnz, random_state=arguments.seed)
    print(
        f"data: {user_items.shape[0]:,} users x {user_items.shape[1]:,} items, {user_items.nnz:,} training items "
        f"excluded (generated in {time.perf_counter() - began:.1f} s); k={arguments.k}, {arguments.threads} threads"
    )
    print(f"machine: {context_line()}")
    records = []
    k, threads = arguments.k, arguments.threads
    for factors in arguments.factors:
        users = rng.standard_normal((user_items.shape[0], factors), dtype=np.float32) / np.float32(np.sqrt(factors))
        items = rng.standard_normal((user_items.shape[1], factors), dtype=np.float32)
        searches = {
            "recore float32": lambda u=users, i=items: recore_search(u, i, k, user_items, threads),
            "recore bfloat16": lambda u=users, i=items: recore_search(u, i, k, user_items, threads, "bfloat16"),
            "faiss IndexFlatIP (no exclusion)": lambda u=users, i=items: faiss_search(u, i, k, threads),
            "implicit recommend": lambda u=users, i=items: implicit_search(u, i, k, user_items, threads),
        }
        results = {}
        for name, function in searches.items():
            try:
                results[name] = timed(function)
            except ImportError as missing:
                print(f"note: skipping {name}: {missing}", file=sys.stderr)
        reference_ids = results["recore float32"][1][0]
        identical = np.array_equal(results["recore bfloat16"][1][0], reference_ids)
        base = results["recore float32"][0]
        for name, (seconds, _) in results.items():
            records.append(
                {"factors": factors, "library": name, "seconds": seconds, "recore_over_peer": base / seconds}
            )
            print(f"  factors {factors:>4} {name:<34} {seconds:8.3f} s   recore float32 / this {base / seconds:5.2f}")
        print(
            f"  bfloat16 ids identical to float32: {identical}  "
            f"(bfloat16 kernel on this CPU: {recore.bfloat16_supported()})"
        )

    # One user at a time, 1 thread each, over the catalog of the first factor count.
    factors = arguments.factors[0]
    items = rng.standard_normal((user_items.shape[1], factors), dtype=np.float32)
    query = rng.standard_normal((1, factors), dtype=np.float32)
    # recore serves from an ItemIndex prepared once, as faiss serves from its index; its
    # bfloat16 search returns the float32 results (checked here).
    assert all(
        np.array_equal(a, b)
        for a, b in zip(
            recore.ItemIndex(items).search(query, k, num_threads=1),
            recore.ItemIndex(items).search(query, k, num_threads=1, precision="bfloat16"),
        )
    )
    prepared = recore.ItemIndex(items)
    functions = {
        "recore": lambda: prepared.search(query, k, num_threads=1),
        "recore bfloat16": lambda: prepared.search(query, k, num_threads=1, precision="bfloat16"),
    }
    try:
        import faiss

        faiss.omp_set_num_threads(1)
        index = faiss.IndexFlatIP(factors)
        index.add(items)
        functions["faiss"] = lambda: index.search(query, k)
    except ImportError as missing:
        print(f"note: skipping faiss latency: {missing}", file=sys.stderr)
    single = latencies(functions, arguments.latency_repeats)
    for name, seconds in single.items():
        ratio = seconds / single["faiss"] if "faiss" in single else float("nan")
        print(
            f"  single user, {items.shape[0]:,} items, factors {factors}: {name:<16} "
            f"{seconds * 1e6:8.1f} us   this / faiss {ratio:5.2f}"
        )
        records.append({"single_query": name, "seconds": seconds, "over_faiss": ratio})

    if not arguments.skip_memory:
        growth = memory_growth_mb(arguments.threads)
        print(
            f"  1,000,000 items x 10,000 queries, factors 64: peak memory growth {growth:.1f} MB "
            "beyond inputs and outputs"
        )
        records.append({"memory_growth_mb": growth})
    if arguments.json:
        with open(arguments.json, "w") as file:
            json.dump(records, file, indent=2)
    return 0
