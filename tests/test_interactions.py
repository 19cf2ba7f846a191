"""Interactions: arbitrary ids to indices and back, from arrays, data frames and files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import recore
from hypothesis import given
from hypothesis import strategies as st

FRAME = pd.DataFrame(
    {
        "user": ["ann", "bob", "ann", "cy", "bob", "ann"],
        "item": [30, 10, 10, 20, 10, 40],
        "value": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        "time": [5, 1, 2, 9, 7, 3],
    }
)


def test_from_dataframe_sums_duplicates_and_keeps_the_latest_time():
    data = recore.Interactions.from_dataframe(FRAME, value="value", timestamp="time")
    assert list(data.user_ids) == ["ann", "bob", "cy"] and list(data.item_ids) == [10, 20, 30, 40]
    np.testing.assert_array_equal(data.matrix.toarray(), [[3, 0, 1, 6], [7, 0, 0, 0], [0, 4, 0, 0]])
    np.testing.assert_array_equal(data.timestamps, [2, 5, 3, 7, 9])  # CSR order
    assert data.matrix.has_canonical_format


def test_duplicates_can_be_refused():
    with pytest.raises(ValueError, match="more than once"):
        recore.Interactions.from_dataframe(FRAME, duplicates="error")


@pytest.mark.parametrize("kind", ["csv", "tsv", "parquet"])
def test_files(tmp_path, kind):
    path = tmp_path / f"data.{kind}"
    if kind == "parquet":
        FRAME.to_parquet(path)
        data = recore.Interactions.from_parquet(path, value="value")
    else:
        FRAME.to_csv(path, sep="," if kind == "csv" else "\t", index=False)
        data = recore.Interactions.from_csv(path, value="value", sep="," if kind == "csv" else "\t")
    np.testing.assert_array_equal(data.matrix.toarray(), [[3, 0, 1, 6], [7, 0, 0, 0], [0, 4, 0, 0]])


@given(
    users=st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=30),
    seed=st.integers(0, 1000),
)
def test_ids_round_trip(users, seed):
    rng = np.random.default_rng(seed)
    items = rng.integers(1000, 1010, len(users))
    data = recore.Interactions(users, items)
    rows, cols = data.matrix.nonzero()
    pairs = {(data.user_ids[r], data.item_ids[c]) for r, c in zip(rows, cols)}
    assert pairs == set(zip(users, items.tolist()))
    np.testing.assert_array_equal(data.user_ids[data.user_index(users)], users)
    np.testing.assert_array_equal(data.item_ids_of(data.item_index(items)), items)


def test_recommendations_come_back_as_item_ids():
    data = recore.Interactions.from_dataframe(FRAME)
    model = recore.ALS(factors=2, iterations=2, random_state=0).fit(data.matrix)
    ids, scores = data.recommend(model, ["ann", "cy"], k=5)
    assert ids.shape == (2, 5)
    assert ids[0][0] == 20 and list(ids[0][1:]) == [None] * 4  # ann has seen every item but 20
    assert set(ids[1][:3]) == {10, 30, 40} and list(ids[1][3:]) == [None] * 2  # cy has seen 20
    assert np.isneginf(scores[0][1:]).all()


def test_bad_input():
    with pytest.raises(ValueError, match="same length"):
        recore.Interactions(["a", "b"], [1])
    with pytest.raises(ValueError, match="users contains NaN"):
        recore.Interactions([1.0, np.nan], [1, 2])
    with pytest.raises(IndexError, match="unknown id 'zed'"):
        recore.Interactions.from_dataframe(FRAME).user_index(["zed"])
    with pytest.raises(KeyError, match="rating"):
        recore.Interactions.from_dataframe(FRAME, value="rating")
    with pytest.raises(ValueError, match="duplicates"):
        recore.Interactions(["a"], [1], duplicates="max")
