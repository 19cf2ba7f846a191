"""Keeping other thread pools out of the engine's way.

recore's kernels never call BLAS, but a multithreaded BLAS that numpy used just before keeps
its threads spinning for a while, competing with recore's OpenMP threads for the same
cores. During long engine work the BLAS pools are limited to one thread, and restored after.
"""

from __future__ import annotations

import contextlib

from threadpoolctl import threadpool_limits


@contextlib.contextmanager
def engine_threads():
    """BLAS limited to one thread for the duration of the block."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield
