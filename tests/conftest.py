import os

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import recore

# "ci" keeps the whole suite to a few minutes on 2 cores; HYPOTHESIS_PROFILE=thorough for more.
settings.register_profile(
    "ci", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile("thorough", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@st.composite
def sparse_matrices(draw, max_rows=24, max_cols=24, min_value=0.1, max_value=5.0):
    """Random CSR float32 matrices: any shape down to 1 x 1, density from empty to full,
    so empty rows and columns occur often."""
    rows = draw(st.integers(1, max_rows))
    cols = draw(st.integers(1, max_cols))
    density = draw(st.sampled_from([0.0, 0.05, 0.2, 0.5, 1.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    mask = rng.random((rows, cols)) < density
    values = rng.uniform(min_value, max_value, size=(rows, cols))
    return sp.csr_matrix(np.where(mask, values, 0.0).astype(np.float32))


@pytest.fixture(params=recore.available_cpu_targets())
def cpu_target(request):
    """Runs a test once per instruction set this CPU supports, then restores the choice."""
    previous = recore.cpu_target()
    recore.set_cpu_target(request.param)
    yield request.param
    recore.set_cpu_target(previous)
