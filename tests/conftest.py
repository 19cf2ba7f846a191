"""Shared hypothesis profiles, strategies and fixtures.

Profiles: "ci" (the default) keeps the whole suite to well under a minute on 2 cores;
HYPOTHESIS_PROFILE=thorough runs many more examples per property.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest
import recore
import scipy.sparse as sp
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,  # the first call of a kernel spins up the OpenMP pool
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "thorough",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "fuzz",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@st.composite
def sparse_matrices(draw, max_rows=20, max_cols=20, min_value=0.1, max_value=5.0, stored_zeros=False):
    """Random canonical scipy CSR float32 matrices with int32 indices.

    Shapes go down to a single row or column; densities include exactly 0 (no entries)
    and exactly 1 (every entry); a few whole rows and columns may be blanked so that empty
    rows and columns show up even in dense matrices. Values lie in [min_value, max_value];
    with ``stored_zeros`` some stored entries hold an explicit 0 (an observation all the same).
    """
    rows = draw(st.integers(1, max_rows))
    cols = draw(st.integers(1, max_cols))
    density = draw(st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0)))
    blank_rows = draw(st.lists(st.integers(0, rows - 1), max_size=3))
    blank_cols = draw(st.lists(st.integers(0, cols - 1), max_size=3))
    # The entries themselves come from a seeded generator: hypothesis still shrinks the shape,
    # density and blanks, and a 20 x 20 matrix drawn value by value would be slow to generate.
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mask = rng.random((rows, cols)) < density
    mask[blank_rows, :] = False
    mask[:, blank_cols] = False
    values = rng.uniform(min_value, max_value, size=(rows, cols))
    if stored_zeros:
        values[rng.random((rows, cols)) < 0.3] = 0.0
    row_ids, col_ids = np.nonzero(mask)
    # Built from coordinates so that stored zeros stay stored.
    matrix = sp.csr_matrix(
        (values[row_ids, col_ids].astype(np.float32), (row_ids, col_ids)), shape=(rows, cols), dtype=np.float32
    )
    matrix.sum_duplicates()
    matrix.indices = matrix.indices.astype(np.int32)
    matrix.indptr = matrix.indptr.astype(np.int32)
    assert matrix.has_canonical_format and matrix.nnz == mask.sum()
    return matrix


# The objective's variants: feedback, confidence, weighted_regularization, unobserved_weight,
# regularization_exponent. Confidence and the unobserved weight only matter for implicit
# feedback; the last three are iALS as Rendle et al. tune it (an unobserved weight below and
# above every confidence, frequency-scaled regularization) and its explicit counterpart.
OBJECTIVES = [
    ("implicit", "linear", False, 1.0, 0.0),
    ("implicit", "scaled", False, 1.0, 0.0),
    ("implicit", "linear", True, 1.0, 0.0),
    ("explicit", "linear", False, 1.0, 0.0),
    ("explicit", "linear", True, 1.0, 0.0),
    ("implicit", "linear", False, 0.25, 0.5),
    ("implicit", "scaled", False, 3.0, 1.0),
    ("explicit", "linear", False, 1.0, 0.7),
]
objectives = st.sampled_from(OBJECTIVES)


def objective_options(kind, regularization, alpha=1.0) -> dict:
    feedback, confidence, weighted, unobserved_weight, exponent = kind
    return dict(
        regularization=regularization,
        alpha=alpha,
        feedback=feedback,
        confidence=confidence,
        weighted_regularization=weighted,
        unobserved_weight=unobserved_weight,
        regularization_exponent=exponent,
    )


def random_factors(rng: np.random.Generator, n: int, f: int, dtype) -> np.ndarray:
    """C-contiguous factors, entries N(0, 1/f): their dot products stay O(1) whatever f is,
    which keeps the normal equations reasonably conditioned."""
    return np.ascontiguousarray(rng.normal(size=(n, f)) / np.sqrt(f), dtype=dtype)


def with_dtype(matrix, dtype, index_dtype=np.int32):
    """The same CSR with values of ``dtype`` and indices of ``index_dtype`` (the kernels take
    buffers exactly as given)."""
    out = sp.csr_matrix(matrix, dtype=dtype, copy=True)
    out.indices = out.indices.astype(index_dtype)
    out.indptr = out.indptr.astype(index_dtype)
    return out


def relative_error(actual, expected) -> float:
    expected = np.asarray(expected, dtype=np.float64)
    difference = np.linalg.norm(np.asarray(actual, dtype=np.float64) - expected)
    return difference / max(np.linalg.norm(expected), 1e-300) if difference else 0.0


@contextlib.contextmanager
def using_cpu_target(name: str):
    """Selects one SIMD kernel copy for the block, and restores the previous one after."""
    previous = recore.cpu_target()
    recore.set_cpu_target(name)
    try:
        yield name
    finally:
        recore.set_cpu_target(previous)


@pytest.fixture(params=recore.available_cpu_targets())
def cpu_target(request):
    """Runs a test once per instruction set this CPU supports, then restores the choice."""
    with using_cpu_target(request.param) as name:
        yield name


@pytest.fixture(autouse=True)
def _cpu_target_restored():
    """Every test leaves the CPU target as it found it."""
    before = recore.cpu_target()
    yield
    assert recore.cpu_target() == before, "a test changed the CPU target without restoring it"
