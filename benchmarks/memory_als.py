#!/usr/bin/env python
"""Peak memory of an ALS fit, relative to its data, for recore and implicit.

    python benchmarks/memory_als.py [--factors 64] [--users 138000 --items 27000 --nnz 17000000]

Each library fits in a fresh process on the same synthetic matrix (MovieLens-20M-shaped by
default). Measured: the peak resident set size during ``fit`` above the resident size just
before it (Linux: the peak is reset through /proc/self/clear_refs), next to the data a fit
cannot do without: the user-item CSR, its item-user transpose, and both factor matrices.
The ratio counts the input CSR (held throughout) plus the growth, over that data.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from machine import context_line

PROBE = """
import json, sys
import numpy as np
import recore

def status(field):
    with open("/proc/self/status") as file:
        return next(int(line.split()[1]) for line in file if line.startswith(field)) * 1024

library, users, items, nnz, factors, iterations = sys.argv[1], *map(int, sys.argv[2:7])
user_items = recore.datasets.synthetic(users, items, nnz, random_state=20240501)
csr_bytes = user_items.data.nbytes + user_items.indices.nbytes + user_items.indptr.nbytes
transpose_bytes = csr_bytes - user_items.indptr.nbytes + (items + 1) * user_items.indptr.itemsize
data_bytes = csr_bytes + transpose_bytes + (users + items) * factors * 4
if library == "recore":
    model = recore.ALS(factors=factors, iterations=iterations, regularization=0.01, num_threads=2, random_state=0)
    fit = lambda: model.fit(user_items)
else:
    from threadpoolctl import threadpool_limits
    from implicit.cpu.als import AlternatingLeastSquares
    threadpool_limits(1, "blas")
    model = AlternatingLeastSquares(factors=factors, iterations=iterations, regularization=0.01, num_threads=2,
                                    random_state=0, calculate_training_loss=False)
    fit = lambda: model.fit(user_items, show_progress=False)
with open("/proc/self/clear_refs", "w") as file:
    file.write("5")
before = status("VmRSS:")
fit()
peak = status("VmHWM:")
print(json.dumps({"library": library, "data_bytes": data_bytes, "growth_bytes": peak - before,
                  "csr_bytes": csr_bytes}))
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--users", type=int, default=138_000)
    parser.add_argument("--items", type=int, default=27_000)
    parser.add_argument("--nnz", type=int, default=17_000_000)
    arguments = parser.parse_args(argv)
    sizes = [str(v) for v in (arguments.users, arguments.items, arguments.nnz, arguments.factors, arguments.iterations)]
    print(f"machine: {context_line()}")
    print("| library | data (CSR + transpose + factors) | peak growth during fit | (CSR + growth) / data |")
    print("|:---|---:|---:|---:|")
    for library in ("recore", "implicit"):
        try:
            output = subprocess.run(
                [sys.executable, "-c", PROBE, library, *sizes], check=True, capture_output=True, text=True
            ).stdout
        except subprocess.CalledProcessError as failure:
            print(f"note: {library} failed: {failure.stderr.strip().splitlines()[-1]}", file=sys.stderr)
            continue
        result = json.loads(output.strip().splitlines()[-1])
        data, growth = result["data_bytes"] / 2**20, result["growth_bytes"] / 2**20
        held = result["csr_bytes"] / 2**20 + growth  # the input CSR is held throughout
        print(f"| {library} | {data:.0f} MiB | {growth:.0f} MiB | {held / data:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
