"""Synthetic data generators."""

from __future__ import annotations

import numpy as np
import pytest
import recore
from hypothesis import given
from hypothesis import strategies as st
from recore.datasets import _AliasTable


@given(weights=st.lists(st.floats(0.0, 10.0), min_size=1, max_size=30).filter(lambda w: sum(w) > 0.1))
def test_alias_table_draws_each_item_with_its_probability(weights):
    probabilities = np.array(weights) / sum(weights)
    draws = _AliasTable(probabilities).sample(np.random.default_rng(0), 200_000)
    frequencies = np.bincount(draws, minlength=len(weights)) / len(draws)
    # Binomial standard deviation of each frequency, 6 of them as the bound.
    bound = 6 * np.sqrt(probabilities * (1 - probabilities) / len(draws)) + 1e-9
    assert np.all(np.abs(frequencies - probabilities) <= bound)
    assert np.all(frequencies[probabilities == 0] == 0)


def test_synthetic_ratings_are_reproducible_ratings_on_the_pattern():
    ratings = recore.datasets.synthetic_ratings(500, 200, 8000, random_state=3)
    again = recore.datasets.synthetic_ratings(500, 200, 8000, random_state=3)
    pattern = recore.datasets.synthetic(500, 200, 8000, random_state=3)
    assert (ratings != again).nnz == 0
    np.testing.assert_array_equal(ratings.indices, pattern.indices)
    assert set(np.unique(ratings.data)) <= {1.0, 2.0, 3.0, 4.0, 5.0}


@pytest.mark.parametrize("make", [recore.datasets.synthetic_preferences, recore.datasets.synthetic_ratings])
def test_a_rank_too_large_to_plant_is_refused_before_any_work(make):
    with pytest.raises(ValueError, match="rank=9223372036854775808 needs"):
        make(1, 1, 0, rank=2**63)
    with pytest.raises(ValueError, match="rank="):
        make(1_000, 1_000, 10, rank=2**21)  # 2**32 planted values
    assert make(3, 2, 4, rank=2).shape == (3, 2)
