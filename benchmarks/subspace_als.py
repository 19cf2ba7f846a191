"""The iALS++ subspace solver against conjugate gradient: seconds per iteration and the loss
they reach, at large factor counts.

    python benchmarks/subspace_als.py                          # MovieLens-20M shape, f = 256 and 512
    python benchmarks/subspace_als.py --scale 0.1 --factors 512 --subspace 16 32 32x2 64

Every configuration runs the iterations of ``recore.ALS.fit`` (from its initial factors for
``--seed``: the same calls to ``recore.kernels.gram_matrix`` and ``als_half_step``, users then
items) for the same number of iterations, on the same synthetic power-law data
(``recore.datasets.synthetic``, shaped like MovieLens-20M: 138,000 users x 27,000 items x
17,000,000 entries, times ``--scale``), with the same objective: implicit feedback as Rendle et
al. tune it ("Revisiting the Performance of iALS on Item Recommendation Benchmarks", 2022), an
unobserved weight and frequency-scaled regularization. CG runs ``--cg-steps`` steps per row; each
subspace configuration is ``BLOCK`` or ``BLOCKxSWEEPS`` (``block_size``, ``subspace_sweeps``).
Reported per configuration: the median seconds per iteration, in wall time and in the process's
CPU time (all threads; on a shared machine the CPU time is the steadier figure, since time spent
waiting for a core is not counted), the training loss after every iteration (computed outside
the timing), and the ratios to CG's.

The load average is printed with every figure, with the CPU model, the instruction set recore
uses and the cache sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time

import numpy as np
import recore
from machine import context_line
from recore import kernels

MOVIELENS_20M_LIKE = (138_000, 27_000, 17_000_000)  # users, items, stored entries
DEFAULT_SEED = 20240501


def cpu_description() -> dict:
    """The CPU model, the caches and the instruction set recore's kernels use."""
    described = {"machine": platform.machine(), "cpu_target": recore.cpu_target(), "threads_available": os.cpu_count()}
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        lines = []
    for line in lines:
        name, _, value = line.partition(":")
        if name.strip() in ("Model name", "L1d cache", "L2 cache", "L3 cache"):
            described[name.strip()] = value.strip()
    return described


def kernels_transpose(user_items):
    """The item-user CSR the items' half-steps read, as recore.ALS builds it."""
    import scipy.sparse as sp

    item_users = sp.csr_matrix(user_items.T)
    item_users.sort_indices()
    return item_users


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def configurations(cg_steps: int, subspace: list[str]) -> list[tuple[str, dict]]:
    """(label, solver options): CG first, then every subspace configuration asked for."""
    found = [(f"cg, {cg_steps} steps", dict(solver="cg", cg_steps=cg_steps))]
    for spec in subspace:
        block, _, sweeps = spec.partition("x")
        options = dict(solver="subspace", block_size=int(block), subspace_sweeps=int(sweeps or 1))
        found.append((f"subspace, blocks of {block}, {sweeps or 1} sweep(s)", options))
    return found


def initial_factors(n_users: int, n_items: int, factors: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """recore.ALS's starting point for ``random_state=seed`` (float32, uniform in [0, 0.01))."""
    rng = np.random.default_rng(seed)
    users = rng.random((n_users, factors), dtype=np.float32) * np.float32(0.01)
    items = rng.random((n_items, factors), dtype=np.float32) * np.float32(0.01)
    return users, items


def fit(user_items, item_users, factors: int, options: dict, args) -> dict:
    """The iterations of recore.ALS.fit, each timed in wall and CPU time; the loss after each."""
    objective = dict(
        regularization=args.regularization, alpha=args.alpha, unobserved_weight=args.unobserved_weight,
        regularization_exponent=args.regularization_exponent, num_threads=args.threads,
    )  # fmt: skip
    users, items = initial_factors(*user_items.shape, factors, args.seed)
    load_before = load_average()
    wall, cpu, losses = [], [], []
    for _ in range(args.iterations):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        for rows, fixed, target in ((user_items, items, users), (item_users, users, items)):
            gram = kernels.gram_matrix(fixed, num_threads=args.threads)
            kernels.als_half_step(rows, fixed, gram, target, **options, **objective)
        wall.append(time.perf_counter() - wall_start)
        cpu.append(time.process_time() - cpu_start)
        losses.append(kernels.als_loss(user_items, users, items, **objective))
    return {
        "seconds": wall,
        "cpu_seconds": cpu,
        "median_seconds": statistics.median(wall),
        "median_cpu_seconds": statistics.median(cpu),
        "loss": losses,
        "load_before": load_before,
        "load_after": load_average(),
    }


def report(factors: int, results: list[tuple[str, dict]], cpu: dict) -> None:
    (_, cg), *others = results
    print(f"\nf = {factors}: {cpu.get('Model name', '?')}, recore CPU target {cpu['cpu_target']}, "
          f"L1d {cpu.get('L1d cache', '?')}, L2 {cpu.get('L2 cache', '?')}, L3 {cpu.get('L3 cache', '?')}")  # fmt: skip
    header = f"{'solver':<40} {'wall s/it':>10} {'CPU s/it':>9} {'final loss':>12} {'wall/cg':>8} {'CPU/cg':>7}"
    print(f"{header} {'loss/cg':>8}  load (1, 5, 15 min)")
    for label, result in results:
        wall = result["median_seconds"] / cg["median_seconds"]
        used = result["median_cpu_seconds"] / cg["median_cpu_seconds"]
        loss_change = result["loss"][-1] / cg["loss"][-1] - 1
        print(
            f"{label:<40} {result['median_seconds']:>10.2f} {result['median_cpu_seconds']:>9.2f} "
            f"{result['loss'][-1]:>12.6g} {wall:>7.2f}x {used:>6.2f}x {loss_change:>+8.2%}  "
            f"{result['load_before']} -> {result['load_after']}"
        )
    for label, result in results:
        losses = ", ".join(f"{loss:.6g}" for loss in result["loss"])
        print(f"  loss per iteration, {label}: {losses}")
    for label, result in others:
        used = result["median_cpu_seconds"] / cg["median_cpu_seconds"]
        loss_change = result["loss"][-1] / cg["loss"][-1] - 1
        met = used <= 0.5 and loss_change <= 0.005
        print(f"  bar (CPU s/iteration <= 0.5 x CG's, final loss within 0.5%): {label}: {'met' if met else 'NOT met'} "
              f"({used:.2f}x, {loss_change:+.2%})")  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the MovieLens-20M shape")
    parser.add_argument("--factors", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cg-steps", type=int, default=3)
    parser.add_argument("--subspace", nargs="+", default=["16", "32", "32x2"], help="BLOCK or BLOCKxSWEEPS")
    parser.add_argument("--regularization", type=float, default=0.003)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--unobserved-weight", type=float, default=0.1)
    parser.add_argument("--regularization-exponent", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    cpu = cpu_description()
    print(f"machine: {context_line()}")
    users, items, nnz = (max(1, round(n * args.scale)) for n in MOVIELENS_20M_LIKE)
    start = time.perf_counter()
    user_items = recore.datasets.synthetic(users, items, nnz, random_state=args.seed)
    item_users = kernels_transpose(user_items)
    print(f"data: {user_items.shape[0]} users x {user_items.shape[1]} items, {user_items.nnz} entries "
          f"({time.perf_counter() - start:.1f} s); {args.iterations} iterations, {args.threads} threads; objective: "
          f"regularization {args.regularization}, alpha {args.alpha} (linear confidence), unobserved weight "
          f"{args.unobserved_weight}, regularization exponent {args.regularization_exponent}")  # fmt: skip
    print(f"CPU: {json.dumps(cpu)}")
    everything = {"cpu": cpu, "arguments": vars(args), "shape": [*user_items.shape, user_items.nnz], "results": {}}
    for factors in args.factors:
        results = []
        for label, options in configurations(args.cg_steps, args.subspace):
            result = fit(user_items, item_users, factors, options, args)
            results.append((label, result))
            seconds, loss = result["median_seconds"], result["loss"][-1]
            print(f"  f = {factors}, {label}: {seconds:.2f} s/iteration, loss {loss:.6g}", flush=True)
        report(factors, results, cpu)
        everything["results"][str(factors)] = {label: result for label, result in results}
    if args.json:
        with open(args.json, "w") as file:
            json.dump(everything, file, indent=1)


if __name__ == "__main__":
    main()
