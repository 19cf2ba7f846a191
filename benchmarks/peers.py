#!/usr/bin/env python
"""recore side by side with other libraries: same data, same threads, one run.

    python benchmarks/peers.py als [options]     # ALS against implicit
    python benchmarks/peers.py sgd [options]     # SGD against LIBMF and Surprise
    python benchmarks/peers.py topk [options]    # top-k against faiss and implicit
    python benchmarks/peers.py spark [options]   # ALS and all-users top-10 against Spark MLlib
    python benchmarks/peers.py distributed [options]  # recore on Dask against one process and Spark
    python benchmarks/peers.py all [options]     # every area and installed peer, one table
    python benchmarks/peers.py als --help        # each area's options

Each area lives in its own module, ``peers_<area>.py``, with ``DESCRIPTION``,
``add_arguments(parser)`` and ``run(arguments) -> exit status``. A peer that is not installed
is skipped with a note. Without an area, ``als`` runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

AREAS = ("als", "sgd", "topk", "spark", "distributed", "all")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in AREAS + ("-h", "--help"):
        argv.insert(0, AREAS[0])
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    areas = parser.add_subparsers(dest="area", required=True)
    for area in AREAS:
        module = importlib.import_module(f"peers_{area}")
        sub = areas.add_parser(
            area, description=module.DESCRIPTION, formatter_class=argparse.ArgumentDefaultsHelpFormatter
        )
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    arguments = parser.parse_args(argv)
    return arguments.run(arguments)


if __name__ == "__main__":
    sys.exit(main())
