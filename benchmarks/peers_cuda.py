"""The CUDA engine's measurements on the MovieLens-20M-shaped synthetic matrix (138,000 x
27,000, 17M entries), where a GPU is usable:

    python benchmarks/peers_cuda.py                 # everything below
    python benchmarks/peers_cuda.py --quick         # a 10x smaller matrix, to check the script

- ALS: seconds per iteration on the GPU at factors 64 and 128 (implicit feedback, CG with
  3 steps, and Cholesky), next to recore's CPU engine on this machine's cores.
- SGD: updates per second on the GPU at factors 32 and 128 (biased MF on the synthetic
  ratings, the default adaptive schedule), next to recore's CPU engine.
- top-k: all-users top-10 with each user's training items excluded, recore's GPU engine in
  float32 and bfloat16 against ``torch.topk(U @ I.T)`` (float32 and bfloat16 matmul,
  tiled over users so the score matrix fits, without exclusion: it does less work) on the
  same GPU, and against recore's CPU engine; the ids must equal the CPU engine's.

Without a usable GPU it says why and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import recore
from machine import context_line

MOVIELENS_20M_LIKE = (138_000, 27_000, 17_000_000)


def synchronize():
    import cupy as cp

    cp.cuda.get_current_stream().synchronize()


def timed(function, repeats=1):
    """Best wall time of `repeats` runs (after one warm-up run), GPU work included."""
    function()
    synchronize()
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        synchronize()
        best = min(best, time.perf_counter() - began)
    return best


def als_seconds_per_iteration(matrix, device_matrix, factors, solver, iterations, cpu):
    params = dict(factors=factors, iterations=iterations, solver=solver, random_state=0, regularization=0.05)
    times = []
    recore.ALS(**params, device="cuda").fit(device_matrix, callback=lambda i, metrics: times.append(metrics["seconds"]))
    gpu = float(np.median(times))
    result = {"factors": factors, "solver": solver, "gpu_seconds_per_iteration": gpu}
    if cpu:
        times = []
        recore.ALS(**{**params, "iterations": 2}).fit(matrix, callback=lambda i, metrics: times.append(metrics["seconds"]))
        result["cpu_seconds_per_iteration"] = float(np.median(times))
    return result


def sgd_updates_per_second(ratings, factors, epochs, cpu):
    params = dict(factors=factors, iterations=epochs, random_state=0)
    times = []
    recore.SGD(**params, device="cuda").fit(ratings, callback=lambda e, metrics: times.append(metrics["seconds"]))
    result = {"factors": factors, "gpu_updates_per_second": ratings.nnz / float(np.median(times[1:] or times))}
    if cpu:
        times = []
        recore.SGD(**{**params, "iterations": 2}).fit(ratings, callback=lambda e, metrics: times.append(metrics["seconds"]))
        result["cpu_updates_per_second"] = ratings.nnz / float(np.median(times))
    return result


def torch_topk_seconds(users, items, k, dtype):
    import torch

    u = torch.as_tensor(users, device="cuda").to(dtype)
    v = torch.as_tensor(items, device="cuda").to(dtype)
    # Tiles of users so that one tile's score matrix stays under about 4 GiB.
    tile = max(1, (1 << 30) // items.shape[0])

    def run():
        out = []
        for begin in range(0, u.shape[0], tile):
            out.append(torch.topk(u[begin : begin + tile] @ v.T, k, dim=1).indices)
        torch.cuda.synchronize()
        return torch.cat(out)

    run()
    began = time.perf_counter()
    ids = run()
    return time.perf_counter() - began, ids.cpu().numpy()


def topk_comparison(matrix, factors, k, cpu):
    import cupy as cp
    import cupyx.scipy.sparse as cusp

    rng = np.random.default_rng(0)
    users = rng.standard_normal((matrix.shape[0], factors), dtype=np.float32)
    items = rng.standard_normal((matrix.shape[1], factors), dtype=np.float32)
    d_users, d_items, d_seen = cp.asarray(users), cp.asarray(items), cusp.csr_matrix(matrix)
    result = {"factors": factors, "k": k}
    ids = {}
    for precision in ("float32", "bfloat16"):
        result[f"recore_gpu_{precision}_seconds"] = timed(
            lambda p=precision: ids.__setitem__(p, recore.topk(d_users, d_items, k, exclude=d_seen, precision=p)[0])
        )
    try:
        import torch

        for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
            seconds, _ = torch_topk_seconds(users, items, k, dtype)
            result[f"torch_topk_{name}_seconds"] = seconds
    except ImportError:
        result["torch"] = "not installed"
    if cpu:
        began = time.perf_counter()
        cpu_ids, _ = recore.topk(users, items, k, exclude=matrix)
        result["recore_cpu_seconds"] = time.perf_counter() - began
        for precision in ("float32", "bfloat16"):
            result[f"gpu_{precision}_ids_equal_cpu"] = bool(np.array_equal(ids[precision].get(), cpu_ids))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 10x smaller matrix")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU engine's figures")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    if not recore.cuda.is_available():
        print(f"peers_cuda: no usable GPU here: {recore.cuda.unavailable_reason()}", file=sys.stderr)
        return 2
    import cupy as cp
    import cupyx.scipy.sparse as cusp

    shape = MOVIELENS_20M_LIKE if not args.quick else tuple(n // 10 for n in MOVIELENS_20M_LIKE)
    print(f"machine: {context_line()}")
    print(f"device: {cp.cuda.runtime.getDeviceProperties(cp.cuda.runtime.getDevice())['name'].decode()}")
    print(f"matrix: {shape[0]:,} x {shape[1]:,}, {shape[2]:,} entries (recore.datasets.synthetic)")
    matrix = recore.datasets.synthetic(*shape, random_state=0)
    ratings = recore.datasets.synthetic_ratings(*shape, random_state=0)
    device_matrix = cusp.csr_matrix(matrix)
    cpu = not args.no_cpu
    report = {"shape": shape, "als": [], "sgd": [], "topk": []}
    for factors in (64, 128):
        for solver in ("cg", "cholesky"):
            row = als_seconds_per_iteration(matrix, device_matrix, factors, solver, args.iterations, cpu)
            report["als"].append(row)
            print("ALS", row, flush=True)
    for factors in (32, 128):
        row = sgd_updates_per_second(ratings, factors, args.epochs, cpu)
        report["sgd"].append(row)
        print("SGD", row, flush=True)
    for factors in (64, 128):
        row = topk_comparison(matrix, factors, 10, cpu)
        report["topk"].append(row)
        print("top-k", row, flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
