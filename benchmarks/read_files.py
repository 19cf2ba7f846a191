"""Rows per second reading interaction files the way ``recore`` commands do.

Writes a MovieLens-20M-shaped file of 20,000,263 ratings (``userId,movieId,rating,timestamp``,
comma separated with a header; ids drawn on MovieLens-20M's power-law pattern) into a
temporary directory, then times :func:`recore._files.read_interactions` on it: the streaming
parse alone (pyarrow's CSV reader, record batches) and the whole read into a users x items
matrix. ``--formats`` adds the same rows as MovieLens 100K's tab-separated headerless layout,
MovieLens 1M's ``::`` layout, whitespace and Parquet.

    python benchmarks/read_files.py                  # 20M rows, the ratings.csv layout
    python benchmarks/read_files.py --rows 2000000 --formats csv tsv dat whitespace parquet
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

LAYOUTS = {
    # name: (file name, separator, header)
    "csv": ("ratings.csv", ",", True),
    "tsv": ("u.data", "\t", False),
    "dat": ("ratings.dat", "::", False),
    "whitespace": ("ratings.txt", " ", False),
    "parquet": ("ratings.parquet", None, True),
}


def ratings_table(rows: int, seed: int):
    """A pyarrow table of ``rows`` (user, item, rating, timestamp) records."""
    import pyarrow as pa
    import recore

    users, items, _ = recore.datasets.MOVIELENS_20M_SHAPE
    pattern = recore.datasets.synthetic(users, items, rows, random_state=seed).tocoo()
    rng = np.random.default_rng(seed)
    order = rng.permutation(pattern.nnz)  # files are rarely sorted
    return pa.table(
        {
            "userId": (pattern.row[order] + 1).astype(np.int64),
            "movieId": (pattern.col[order] * 3 + 1).astype(np.int64),  # sparse ids, as MovieLens's
            "rating": rng.integers(1, 11, pattern.nnz).astype(np.float32) / 2,
            "timestamp": rng.integers(789_652_009, 1_427_784_002, pattern.nnz),
        }
    )


def write(table, directory: str, layout: str) -> str:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    name, separator, header = LAYOUTS[layout]
    path = os.path.join(directory, name)
    if layout == "parquet":
        pq.write_table(table, path)
        return path
    single = separator if len(separator) == 1 else "\t"
    options = pacsv.WriteOptions(include_header=header, delimiter=single, quoting_style="none")
    pacsv.write_csv(table, path, write_options=options)
    if separator == "::":  # pyarrow writes one-character separators: rewrite the file's tabs
        with open(path, "rb") as source, open(path + ".tmp", "wb") as target:
            for block in iter(lambda: source.read(1 << 24), b""):
                target.write(block.replace(b"\t", b"::"))
        os.replace(path + ".tmp", path)
    return path


def measure(path: str, repeats: int) -> dict:
    from recore import _files

    parse, whole = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        layout = _files.sniff(path)
        columns = _files.read_columns(layout)
        parse.append(time.perf_counter() - start)
        rows = len(columns["user"])
        del columns
        start = time.perf_counter()
        data = _files.read_interactions(path, layout=layout)
        whole.append(time.perf_counter() - start)
        stored = data.matrix.nnz
        del data
    return {"rows": rows, "stored": stored, "parse": min(parse), "whole": min(whole), "layout": layout.describe()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_263)
    parser.add_argument("--formats", nargs="+", choices=sorted(LAYOUTS), default=["csv"])
    parser.add_argument("--repeats", type=int, default=2, help="the best of this many reads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--directory", help="where to write the files (default: a temporary directory)")
    args = parser.parse_args()
    import pyarrow
    import recore
    from machine import context_line

    print(f"recore {recore.__version__}, pyarrow {pyarrow.__version__}; machine: {context_line()}")
    table = ratings_table(args.rows, args.seed)
    with tempfile.TemporaryDirectory(dir=args.directory) as directory:
        print("| layout | file | rows | MB | parse s | parse rows/s | read into a matrix s | rows/s |")
        print("|:---|:---|---:|---:|---:|---:|---:|---:|")
        for layout in args.formats:
            path = write(table, directory, layout)
            size = os.path.getsize(path) / 1e6
            result = measure(path, args.repeats)
            print(
                f"| {result['layout']} | {os.path.basename(path)} | {result['rows']:,} | {size:,.0f} | "
                f"{result['parse']:.2f} | {result['rows'] / result['parse']:,.0f} | {result['whole']:.2f} | "
                f"{result['rows'] / result['whole']:,.0f} |",
                flush=True,
            )
            os.remove(path)


if __name__ == "__main__":
    main()
