#!/usr/bin/env python
"""One query at a time: the latency of recore's single-query searches against faiss.

    python benchmarks/one_query.py                      # the best instruction set of this CPU
    python benchmarks/one_query.py --cpu-target avx2    # recore's and faiss's AVX2 kernels
    python benchmarks/one_query.py --json results.json
    python benchmarks/one_query.py --seeds 1 2 3 4 5 6 7 8 --burst 50 10   # 16 runs and their ranges
    python benchmarks/one_query.py --threads 2          # every library on 2 threads
    python benchmarks/one_query.py --threads 2 --faiss-threads 1   # each at its fastest here

Same data for every library: 27,000 x 64 random normal float32 items (the MovieLens-20M
catalog), one random query, and a one-row exclusion CSR of 100 seen items. One thread each by
default (``num_threads=1``; ``faiss.omp_set_num_threads(1)``), or ``--threads`` each
(``--faiss-threads`` sets faiss's apart: its one-query search can be slower on more threads).
Measured, side by side:

- faiss ``IndexFlatIP.search`` on an index built once (no exclusion: it has no per-query
  filter, so it does less work);
- ``recore.topk(q, items, 10, exclude=row, num_threads=threads)``: everything per call, nothing
  prepared (with and without ``check_finite``);
- ``ItemIndex.search(q, 10, exclude=row, num_threads=threads)``, float32 and bfloat16, on an
  index built once;
- ``model.recommend(user_id, user_items, k=10)`` of an ALS model whose item factors are those
  items, ``user_items`` the whole users x items matrix (138,000 users by default).

Every function is warmed up, then called in rounds (the order rotated every round, each
taking a short burst of calls so that it serves with its own data in cache, as a server
answering one user after another does); p50 and p99 are over all calls, in wall time and
in CPU time: the calling thread's on one thread (every search then runs on that thread, so CPU
time leaves out the time a busy machine gave the core to other processes), the process's on
several (the work of every thread, spinning or waiting for work included). Each table is
printed with the CPU model, recore's CPU target, the CPU's AVX2 / AVX-512 flags, its cache
sizes and the load average, since shared machines vary. The model searches with its own
``num_threads``, set to ``--threads`` here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import numpy as np
import recore
import scipy.sparse as sp
from machine import context_line, machine_context

DEFAULT_SEED = 0


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    parser.add_argument("--items", type=int, default=27_000)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--users", type=int, default=138_000, help="rows of the model's user_items matrix")
    parser.add_argument("--seen", type=int, default=100, help="items excluded from the query's results")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="threads of every library's search")
    parser.add_argument("--faiss-threads", type=int, help="faiss's threads (default: --threads)")
    parser.add_argument("--calls", type=int, default=2000, help="calls of each function per run")
    parser.add_argument("--burst", type=int, nargs="+", default=[10],
                        help="consecutive calls of one function per round; several: a run for each")  # fmt: skip
    parser.add_argument("--cpu-target", help="lower recore's (and faiss's) instruction set, e.g. avx2")
    parser.add_argument("--seeds", type=int, nargs="+", default=[DEFAULT_SEED],
                        help="data seeds; several: a run for each (with each --burst), then the ranges")  # fmt: skip
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    return parser.parse_args(argv)


# -- the data -------------------------------------------------------------------------------


def make_user_items(n_users: int, n_items: int, seen: int, rng: np.random.Generator) -> sp.csr_matrix:
    """``seen`` distinct items per user (a canonical float32 CSR with int32 indices)."""
    columns = np.sort(rng.integers(0, n_items, size=(n_users, seen), dtype=np.int32), axis=1)
    keep = np.ones(columns.shape, dtype=bool)
    keep[:, 1:] = columns[:, 1:] != columns[:, :-1]  # drop repeated draws
    indptr = np.zeros(n_users + 1, dtype=np.int32)
    np.cumsum(keep.sum(axis=1), out=indptr[1:])
    indices = columns[keep].astype(np.int32)
    return sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr), shape=(n_users, n_items))


def als_model(items: np.ndarray, n_users: int, rng: np.random.Generator, threads: int):
    """An ALS model (fitted on a small matrix, so that it is a real fitted model) whose
    item factors are ``items`` and whose user factors are random."""
    small = make_user_items(64, items.shape[0], 20, rng)
    model = recore.ALS(factors=items.shape[1], iterations=1, random_state=0, num_threads=threads).fit(small)
    model.item_factors_ = items
    model.user_factors_ = rng.standard_normal((n_users, items.shape[1]), dtype=np.float32) / np.float32(8)
    return model


# -- timing ---------------------------------------------------------------------------------


def measure(functions: dict, rounds: int, burst: int, threads: int) -> dict:
    """Seconds per call of each function over ``rounds`` rounds of ``burst`` calls each, the
    functions taking turns in an order rotated every round: {name: (wall, cpu)}, where cpu
    is the calling thread's CPU time, taken on one thread only (NaN on several: the kernel
    adds other threads' time to the process's in scheduler ticks, too coarse for one call).
    On one thread every search runs on the caller's, so its CPU time leaves out the time
    other processes held the core (it still counts what they did to the caches)."""
    for function in functions.values():  # warm up: first-use work, caches, page faults
        for _ in range(burst):
            function()
    names = list(functions)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    clock = time.perf_counter
    thread_clock = time.thread_time if threads == 1 else lambda: float("nan")
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            function, wall_samples, cpu_samples = functions[name], wall[name], cpu[name]
            for _ in range(burst):
                began, began_cpu = clock(), thread_clock()
                function()
                wall_samples.append(clock() - began)
                cpu_samples.append(thread_clock() - began_cpu)
    return {name: (np.array(wall[name]), np.array(cpu[name])) for name in names}


def percentile_us(samples: np.ndarray, q: float) -> float:
    return float(np.percentile(samples, q) * 1e6)


# -- the comparison -------------------------------------------------------------------------


def searches(arguments, items, query, row, model, user_id, user_items, faiss_index):
    k = arguments.k
    single = query.reshape(-1)
    prepared = recore.ItemIndex(items)
    functions = {}
    if faiss_index is not None:
        batch = query.reshape(1, -1)
        functions["faiss IndexFlatIP.search (prepared, no exclusion)"] = lambda: faiss_index.search(batch, k)
    threads = arguments.threads
    functions["recore.topk(q, items, exclude=row)"] = lambda: recore.topk(single, items, k, exclude=row,
                                                                            num_threads=threads)  # fmt: skip
    functions["recore.topk(..., check_finite=False)"] = lambda: recore.topk(
        single, items, k, exclude=row, num_threads=threads, check_finite=False
    )
    functions["ItemIndex.search float32"] = lambda: prepared.search(single, k, exclude=row, num_threads=threads)
    functions["ItemIndex.search bfloat16"] = lambda: prepared.search(
        single, k, exclude=row, num_threads=threads, precision="bfloat16"
    )
    functions["model.recommend(user_id, user_items)"] = lambda: model.recommend(user_id, user_items, k=k)
    return functions, prepared


def check_agreement(arguments, items, query, row, model, user_id, user_items, prepared, faiss_index) -> None:
    """Every recore path, on the measured threads, returns the ids and scores of recore.topk on
    one thread; faiss agrees with recore searched without the exclusion."""
    k, threads = arguments.k, arguments.threads
    single = query.reshape(-1)
    reference = recore.topk(single, items, k, exclude=row, num_threads=1)
    for ids, scores in (
        recore.topk(single, items, k, exclude=row, num_threads=threads),
        prepared.search(single, k, exclude=row, num_threads=threads),
        prepared.search(single, k, exclude=row, num_threads=threads, precision="bfloat16"),
        model.recommend(user_id, user_items, k=k),
    ):
        if not (np.array_equal(ids, reference[0]) and np.array_equal(scores, reference[1])):
            raise AssertionError("recore's single-query paths disagree")
    if faiss_index is not None:
        _, faiss_ids = faiss_index.search(query.reshape(1, -1), k)
        unfiltered, _ = recore.topk(single, items, k, num_threads=1)
        if not np.array_equal(np.sort(faiss_ids[0]), np.sort(unfiltered)):
            raise AssertionError("faiss and recore disagree on the unfiltered top-k")


def open_faiss(items: np.ndarray, cpu_target: str | None, threads: int):
    """A prepared faiss IndexFlatIP on ``threads`` threads, at the same instruction set as
    recore when one is asked for; (None, None) without faiss."""
    try:
        import faiss
    except ImportError as missing:
        print(f"note: skipping faiss: {missing}", file=sys.stderr)
        return None, None
    faiss.omp_set_num_threads(threads)
    level = None
    config = getattr(faiss, "SIMDConfig", None)
    if config is not None:
        if cpu_target == "avx2":
            config.set_level(faiss.SIMDLevel_AVX2)
        elif cpu_target == "baseline":
            config.set_level(faiss.SIMDLevel_NONE)
        level = config.get_level_name()
    index = faiss.IndexFlatIP(items.shape[1])
    index.add(items)
    return index, level


def run(arguments: argparse.Namespace) -> int:
    if arguments.cpu_target:
        recore.set_cpu_target(arguments.cpu_target)
    # Repeating recore.topk on one catalog is the point here: its advice to use an ItemIndex is
    # measured, not needed.
    warnings.filterwarnings("ignore", message="recore.topk searched the same items")
    records = []
    for seed in arguments.seeds:
        for burst in arguments.burst:
            records += run_once(arguments, seed, burst)
    if len(arguments.seeds) * len(arguments.burst) > 1:
        print_ranges(records)
    if arguments.json:
        with open(arguments.json, "w") as file:
            json.dump(records, file, indent=2)
    return 0


def print_ranges(records: list) -> None:
    """Each function's p50 / faiss over all the runs: lowest - highest, and the median."""
    print(f"over {len({(r['seed'], r['burst']) for r in records})} runs (seeds x bursts): p50 / faiss")
    for name in dict.fromkeys(record["search"] for record in records):
        ratios = [record["p50_over_faiss"] for record in records if record["search"] == name]
        print(f"  {name:<52} {min(ratios):5.2f} - {max(ratios):5.2f}, median {float(np.median(ratios)):5.2f}")


def run_once(arguments: argparse.Namespace, seed: int, burst: int) -> list:
    """One run: the data of ``seed``, every function called in bursts of ``burst``."""
    rounds = max(1, arguments.calls // burst)
    rng = np.random.default_rng(seed)
    items = rng.standard_normal((arguments.items, arguments.factors), dtype=np.float32)
    user_items = make_user_items(arguments.users, arguments.items, arguments.seen, rng)
    user_id = int(arguments.users // 2)
    row = user_items[user_id]  # a 1-row CSR: this user's seen items
    model = als_model(items, arguments.users, rng, arguments.threads)
    query = np.ascontiguousarray(model.user_factors_[user_id])
    faiss_threads = arguments.faiss_threads or arguments.threads
    faiss_index, faiss_level = open_faiss(items, arguments.cpu_target, faiss_threads)

    functions, prepared = searches(arguments, items, query, row, model, user_id, user_items, faiss_index)
    check_agreement(arguments, items, query, row, model, user_id, user_items, prepared, faiss_index)
    before = machine_context(faiss_level)
    samples = measure(functions, rounds, burst, max(arguments.threads, faiss_threads))
    context = machine_context(faiss_level)
    context["load_average_before"] = before["load_average"]

    print(
        f"one query, {arguments.items:,} items x {arguments.factors} factors, k={arguments.k}, "
        f"recore on {arguments.threads} thread{'s' if arguments.threads > 1 else ''}, faiss on {faiss_threads}, "
        f"{row.nnz} items excluded; user_items {arguments.users:,} x {arguments.items:,}; "
        f"{rounds} rounds x {burst} calls each, data seed {seed}"
    )
    print(f"  load average before: {', '.join(f'{v:.2f}' for v in before['load_average'])}")
    print(f"  {context_line(context)}")
    faiss_name = next((name for name in functions if name.startswith("faiss")), None)
    faiss_p50 = percentile_us(samples[faiss_name][0], 50) if faiss_name else float("nan")
    faiss_cpu_p50 = percentile_us(samples[faiss_name][1], 50) if faiss_name else float("nan")
    print(
        f"  {'search':<52} {'p50 us':>9} {'p99 us':>9} {'p50 / faiss':>12} {'cpu p50 us':>11} {'cpu p99 us':>11} "
        f"{'cpu p50 / faiss':>16}"
    )
    records = []
    for name, (wall, cpu) in samples.items():
        p50, p99 = percentile_us(wall, 50), percentile_us(wall, 99)
        cpu_p50, cpu_p99 = percentile_us(cpu, 50), percentile_us(cpu, 99)
        ratio, cpu_ratio = p50 / faiss_p50, cpu_p50 / faiss_cpu_p50
        print(
            f"  {name:<52} {p50:9.1f} {p99:9.1f} {ratio:12.2f} {cpu_p50:11.1f} {cpu_p99:11.1f} {cpu_ratio:16.2f}"
            f"   [{context['recore_cpu_target']}]".replace(" nan", "   -")
        )
        cpu_figures = {"cpu_p50_us": cpu_p50, "cpu_p99_us": cpu_p99, "cpu_p50_over_faiss": cpu_ratio}
        cpu_figures = {key: None if np.isnan(value) else value for key, value in cpu_figures.items()}  # several threads
        records.append(
            {
                "search": name,
                "p50_us": p50,
                "p99_us": p99,
                "p50_over_faiss": ratio,
                **cpu_figures,
                "calls": len(wall),
                "seed": seed,
                "burst": burst,
                "threads": arguments.threads,
                "faiss_threads": faiss_threads,
                **context,
            }
        )
    return records


if __name__ == "__main__":
    sys.exit(run(parse_arguments()))
