"""The contract every recore model keeps: its serving, persistence and bad-input promises.

``ModelContract`` holds the tests; each ``Test...Contract`` class below runs all of them
against one model (ALS on implicit feedback, ALS on ratings, SGD with squared loss, SGD with
BPR), fitted once per class on a small synthetic matrix. A model class says how to build
it, what data it learns from and how its scores and fold-in are computed in numpy; a
promise that holds for one model and not another shows up as a failure of that class alone.

The promises come from README.md ("Recommending", "Saving models"), DESIGN.md ("Data
conventions", "Errors") and the docstrings of ``recore._recommend``, ``recore.topk``,
``recore._estimator``, ``recore.als`` and ``recore.sgd``.
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
import re
import struct
import zipfile

import numpy as np
import pytest
import recore
import reference
import scipy.sparse as sp
import topk_reference
from conftest import relative_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

N_USERS, N_ITEMS, NNZ = 60, 40, 600
SEED = 7

# Scores from the engine (float32 dot products of float32 copies) against float64 references.
SCORE_TOLERANCE = dict(rtol=1e-5, atol=1e-5)

# -- names under renaming ------------------------------------------------------------------
# The estimators are moving to new names; the old ones keep working for a release with a
# FutureWarning, which this suite turns into an error. Every renamed name the contract uses
# is read in this section alone, the new name first when the installed recore has it, so
# the tests run unchanged before and after the switch. Once the old names are gone each
# helper collapses to its first branch.


def _takes(function, name: str) -> bool:
    return name in inspect.signature(function).parameters


# Old constructor arguments kept as aliases of renamed ones (not reported by get_params).
RENAMED_PARAMS = {"epochs"}


def iterations_param(model_class) -> str:
    """The hyperparameter counting passes over the data: ``iterations`` (SGD's ``epochs``
    before the rename)."""
    return "iterations" if _takes(model_class, "iterations") else "epochs"


def filter_names(model) -> tuple[str, str]:
    """The deny-list and allow-list keywords of ``recommend``: ``deny`` and ``allow``
    (``filter_items`` and ``items`` before the rename)."""
    return ("deny", "allow") if _takes(model.recommend, "deny") else ("filter_items", "items")


def filters(model, *, deny=None, allow=None) -> dict:
    """Keyword arguments for ``recommend`` / ``recommend_vectors`` with these lists."""
    deny_name, allow_name = filter_names(model)
    options = {}
    if deny is not None:
        options[deny_name] = deny
    if allow is not None:
        options[allow_name] = allow
    return options


def layout(model, user_items_layout: str) -> dict:
    """``user_items_layout=`` ("full": rows by user id, "per_query": one row per queried
    user) once ``recommend`` takes it; before, the layout follows from the row count."""
    return {"user_items_layout": user_items_layout} if _takes(model.recommend, "user_items_layout") else {}


def training_history(model) -> dict:
    """What the fit measured of the model, per iteration, as a dict of lists: ``history_``
    without its wall-clock ``"seconds"`` (a fact about the run, not the model). ALS kept
    only the loss, as ``loss_history_``, before the rename."""
    history = model.__dict__.get("history_")
    if not isinstance(history, dict):
        history = {"loss": model.loss_history_}
    return {name: list(values) for name, values in history.items() if name != "seconds"}


def iterations_completed(model) -> int | None:
    """Iterations the fitted factors went through: ``iterations_completed_`` (SGD's
    ``epochs_completed_`` before the rename; ALS had none)."""
    for name in ("iterations_completed_", "epochs_completed_"):
        if name in model.__dict__ or isinstance(getattr(type(model), name, None), property):
            return getattr(model, name)
    return None


# -- numpy references -----------------------------------------------------------------------


def assert_sorted_rows(ids: np.ndarray, scores: np.ndarray) -> None:
    """Each row: valid ids first, by score descending and equal scores by id ascending, then
    padding (id -1, score -inf) alone."""
    for row_ids, row_scores in zip(np.atleast_2d(ids), np.atleast_2d(scores)):
        valid = row_ids >= 0
        count = int(valid.sum())
        assert valid[:count].all(), f"padding before a valid id: {row_ids}"
        assert (row_scores[count:] == -np.inf).all() and (row_ids[count:] == -1).all()
        assert np.isfinite(row_scores[:count]).all()
        assert len(set(row_ids[:count].tolist())) == count, f"an id twice in one row: {row_ids}"
        found_ids, found_scores = row_ids[:count], row_scores[:count]
        first, second = found_scores[:-1], found_scores[1:]
        in_order = (first > second) | ((first == second) & (found_ids[:-1] < found_ids[1:]))
        assert in_order.all(), f"row out of order: {row_ids} {row_scores}"


def assert_matches_reference(ids, scores, expected_ids, expected_scores, all_scores, candidates) -> None:
    """Results equal to the reference's, up to the order of near-equal scores: the same
    number of results, the same scores, and every id a candidate whose reference score is
    the one returned. (Exact ties, which the engine and the reference order by id, are
    checked apart, on models with duplicated items.)"""
    ids, scores = np.atleast_2d(ids), np.atleast_2d(scores)
    assert ids.shape == expected_ids.shape
    np.testing.assert_array_equal(ids >= 0, expected_ids >= 0)
    found = ids >= 0
    np.testing.assert_allclose(scores[found], expected_scores[found], **SCORE_TOLERANCE)
    rows, _ = np.nonzero(found)
    assert candidates[rows, ids[found]].all(), "an item that is no candidate was returned"
    np.testing.assert_allclose(scores[found], all_scores[rows, ids[found]], **SCORE_TOLERANCE)


def candidate_mask(n_queries, n_items, *, exclude=None, deny=None, allow=None) -> np.ndarray:
    mask = np.ones((n_queries, n_items), dtype=bool)
    if exclude is not None:
        mask &= ~topk_reference.stored(exclude)
    if allow is not None:
        allowed = np.zeros(n_items, dtype=bool)
        allowed[np.asarray(allow, dtype=np.int64)] = True
        mask &= allowed
    if deny is not None:
        mask[:, np.asarray(deny, dtype=np.int64)] = False
    return mask


def with_item_copied(model, source: int, target: int):
    """A copy of ``model`` whose item ``target`` scores exactly as item ``source`` (same
    factors, same bias), so that every query ties them."""
    twin = copy.deepcopy(model)
    for name in ("item_factors_", "item_biases_"):
        if hasattr(twin, name):
            values = getattr(twin, name).copy()
            values[target] = values[source]
            setattr(twin, name, values)
    return twin


def stored_bytes(path, whole: bytes, member: str, length: int) -> tuple[int, int]:
    """Where the last ``length`` bytes of an uncompressed archive member (an array's data,
    after its .npy header) lie in the file."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    assert info.compress_type == zipfile.ZIP_STORED
    # A local file header is 30 bytes, then the name and an extra field of the lengths
    # stored at offsets 26 and 28.
    name_length, extra_length = struct.unpack("<HH", whole[info.header_offset + 26 : info.header_offset + 30])
    end = info.header_offset + 30 + name_length + extra_length + info.compress_size
    return end - length, end


def assert_refused(call, name: str, value, error: type) -> None:
    """``call()`` raises ``error`` with ``name`` in its message."""
    try:
        call()
    except error as caught:
        assert re.search(rf"\b{name}\b", str(caught)), f"{name}={value!r}: the message does not name it: {caught}"
    else:
        pytest.fail(f"{name}={value!r} was accepted")


def flipped(data: bytes, position: int) -> bytes:
    damaged = bytearray(data)
    damaged[position] ^= 0x5A
    return bytes(damaged)


# Hyperparameter values every model refuses, on construction and on set_params:
# (name, value, exception). "ITERATIONS" stands for the iteration-count parameter.
BAD_COMMON_PARAMS = [
    ("factors", "8", TypeError),
    ("factors", 2.5, TypeError),
    ("factors", True, TypeError),
    ("factors", 0, ValueError),
    ("regularization", "0.1", TypeError),
    ("regularization", -0.5, ValueError),
    ("regularization", math.nan, ValueError),
    ("ITERATIONS", -1, ValueError),
    ("ITERATIONS", 2.0, TypeError),
    ("num_threads", -1, ValueError),
    ("num_threads", 1.0, TypeError),
    ("random_state", "0", TypeError),
    ("random_state", -3, ValueError),
    ("device", "tpu", ValueError),
    ("device", 0, TypeError),
]


def _param_cases():
    return [pytest.param(name, value, error, id=f"{name}={value!r}") for name, value, error in BAD_COMMON_PARAMS]


# Shared fixtures, one fit per model class: the test's class says how to build the data and the
# model. Module-level, since pytest 9.2 deprecates class-scoped fixtures written as methods.
@pytest.fixture(scope="class")
def user_items(request):
    return request.cls().make_data()


@pytest.fixture(scope="class")
def model(request, user_items):
    return request.cls().make_model().fit(user_items)


class ModelContract:
    """The promises every recore model keeps. A subclass defines ``make_model`` and
    ``make_data`` (and, for models with biases, the scoring vectors and fold-in reference)."""

    MODEL_CLASS: type = None
    # Stored values below zero are refused for implicit feedback.
    ACCEPTS_NEGATIVE_VALUES = True
    # Fitted arrays that save/load must give back bitwise.
    FITTED_ARRAYS = ("user_factors_", "item_factors_")
    # Model-specific hyperparameter values refused: (name, value, exception).
    BAD_PARAMS: list = []
    # Valid hyperparameter changes for the set_params checks.
    PARAM_CHANGES: dict = {}

    # -- what a model class defines ---------------------------------------------------------

    def make_model(self, **params):
        raise NotImplementedError

    def make_data(self) -> sp.csr_matrix:
        raise NotImplementedError

    def query_vectors(self, model, users) -> np.ndarray:
        """float64 vectors whose dot products with :meth:`item_vectors` are the model's scores."""
        return np.asarray(model.user_factors_[users], dtype=np.float64)

    def folded_query_vectors(self, model, vectors) -> np.ndarray:
        """The scoring vectors of users given by their factors (``recommend_vectors``)."""
        return np.asarray(vectors, dtype=np.float64)

    def item_vectors(self, model) -> np.ndarray:
        return np.asarray(model.item_factors_, dtype=np.float64)

    def fold_in_reference(self, model, rows) -> np.ndarray:
        """Each row's exact least-squares factors with the item factors fixed (float64)."""
        raise NotImplementedError

    def reference_topk(self, model, query_vectors, k, *, exclude=None, deny=None, allow=None):
        """The obviously correct top-k over the model's float64 scoring vectors."""
        return topk_reference.topk(query_vectors, self.item_vectors(model), k, exclude=exclude, deny=deny, allow=allow)

    # -- serving: shapes and types ----------------------------------------------------------

    def test_one_user_gives_one_row_of_int32_ids_and_float32_scores(self, model, user_items):
        ids, scores = model.recommend(3, user_items, k=7)
        assert ids.shape == scores.shape == (7,)
        assert ids.dtype == np.int32 and scores.dtype == np.float32
        same_with_numpy_id = model.recommend(np.int64(3), user_items, k=7)
        np.testing.assert_array_equal(same_with_numpy_id[0], ids)

    def test_a_batch_gives_one_row_per_user_equal_to_single_calls(self, model, user_items):
        users = [3, 17, 3, 59]
        ids, scores = model.recommend(users, user_items, k=6)
        assert ids.shape == scores.shape == (4, 6)
        assert ids.dtype == np.int32 and scores.dtype == np.float32
        for row, user in enumerate(users):
            single_ids, single_scores = model.recommend(user, user_items, k=6)
            np.testing.assert_array_equal(ids[row], single_ids)
            np.testing.assert_array_equal(scores[row], single_scores)

    def test_user_items_as_the_whole_matrix_or_one_row_per_query_mean_the_same(self, model, user_items):
        users = np.array([40, 2, 11])
        whole = model.recommend(users, user_items, k=8, **layout(model, "full"))
        per_query = model.recommend(users, user_items[users], k=8, **layout(model, "per_query"))
        np.testing.assert_array_equal(whole[0], per_query[0])
        np.testing.assert_array_equal(whole[1], per_query[1])

    def test_recommend_all_is_recommend_for_every_user_in_order(self, model, user_items):
        ids, scores = model.recommend_all(user_items, k=5)
        assert ids.shape == scores.shape == (N_USERS, 5)
        assert ids.dtype == np.int32 and scores.dtype == np.float32
        every = model.recommend(np.arange(N_USERS), user_items, k=5, **layout(model, "full"))
        np.testing.assert_array_equal(ids, every[0])
        np.testing.assert_array_equal(scores, every[1])
        np.testing.assert_array_equal(ids[[0, 25, 31]], model.recommend([0, 25, 31], user_items, k=5)[0])

    def test_an_empty_batch_gives_empty_results(self, model, user_items):
        ids, scores = model.recommend(np.array([], dtype=np.int64), user_items, k=4)
        assert ids.shape == scores.shape == (0, 4)
        assert ids.dtype == np.int32 and scores.dtype == np.float32

    # -- serving: what is returned ----------------------------------------------------------

    def test_rows_are_sorted_by_score_then_lower_id(self, model, user_items):
        ids, scores = model.recommend_all(user_items, k=N_ITEMS)
        assert_sorted_rows(ids, scores)
        ids, scores = model.recommend_all(k=N_ITEMS)
        assert_sorted_rows(ids, scores)

    def test_equal_scores_go_lower_id_first(self, model, user_items):
        twin = with_item_copied(model, source=31, target=4)
        users = np.arange(N_USERS)
        ids, scores = twin.recommend(users, k=N_ITEMS)  # nothing excluded: both items in every row
        assert_sorted_rows(ids, scores)
        for row_ids, row_scores in zip(ids, scores):
            place_low, place_high = np.flatnonzero(row_ids == 4)[0], np.flatnonzero(row_ids == 31)[0]
            assert row_scores[place_low] == row_scores[place_high]
            if np.count_nonzero(row_scores == row_scores[place_low]) == 2:  # (a user with zero factors ties all)
                assert place_high == place_low + 1
        single_ids, _ = twin.recommend(9, k=N_ITEMS, precision="bfloat16")
        assert np.flatnonzero(single_ids == 31)[0] == np.flatnonzero(single_ids == 4)[0] + 1

    def test_scores_are_the_predictions_of_the_returned_items(self, model, user_items):
        users = np.arange(N_USERS)
        ids, scores = model.recommend(users, user_items, k=N_ITEMS)
        found = ids >= 0
        rows = np.broadcast_to(users[:, None], ids.shape)[found]
        predicted = model.predict(rows, ids[found])
        np.testing.assert_allclose(scores[found], predicted, **SCORE_TOLERANCE)
        np.testing.assert_allclose(
            model.predict(users[:, None], np.arange(N_ITEMS)[None, :]),
            self.query_vectors(model, users) @ self.item_vectors(model).T,
            **SCORE_TOLERANCE,
        )

    def test_seen_items_never_appear_and_short_rows_are_padded(self, model, user_items):
        before = (user_items.data.copy(), user_items.indices.copy(), user_items.indptr.copy())
        ids, scores = model.recommend_all(user_items, k=N_ITEMS + 3)
        for user in range(N_USERS):
            seen = set(user_items[user].indices.tolist())
            row = ids[user][ids[user] >= 0]
            assert not seen & set(row.tolist())
            assert len(row) == N_ITEMS - len(seen)  # every other item, then padding
            assert (ids[user][len(row) :] == -1).all() and (scores[user][len(row) :] == -np.inf).all()
        for saved, now in zip(before, (user_items.data, user_items.indices, user_items.indptr)):
            np.testing.assert_array_equal(saved, now)  # the caller's matrix is left as it was

    def test_stored_zeros_count_as_seen(self, model, user_items):
        row = sp.csr_matrix((np.zeros(3, np.float32), ([0, 0, 0], [5, 6, 7])), shape=(1, N_ITEMS))
        ids, _ = model.recommend([12], row, k=N_ITEMS, **layout(model, "per_query"))
        assert not {5, 6, 7} & set(ids[0].tolist()) and (ids[0] >= 0).sum() == N_ITEMS - 3

    def test_exclude_seen_false_and_no_user_items_exclude_nothing(self, model, user_items):
        kept = model.recommend(8, user_items, k=N_ITEMS, exclude_seen=False)
        plain = model.recommend(8, k=N_ITEMS)
        assert sorted(kept[0].tolist()) == list(range(N_ITEMS))
        np.testing.assert_array_equal(kept[0], plain[0])
        np.testing.assert_array_equal(kept[1], plain[1])

    def test_deny_and_allow_lists_are_honoured(self, model, user_items):
        best, _ = model.recommend(5, user_items, k=10)
        denied = best[:3]
        ids, _ = model.recommend(5, user_items, k=10, **filters(model, deny=denied))
        assert not set(denied.tolist()) & set(ids.tolist())
        np.testing.assert_array_equal(ids[:7], best[3:])  # the others keep their places
        allowed = np.arange(0, N_ITEMS, 3)
        ids, scores = model.recommend([5, 6], user_items, k=N_ITEMS, **filters(model, allow=allowed))
        for row, user in enumerate((5, 6)):
            expected = set(allowed.tolist()) - set(user_items[user].indices.tolist())
            assert set(ids[row][ids[row] >= 0].tolist()) == expected
            assert (ids[row] >= 0).sum() == len(expected)
        both = model.recommend(5, k=N_ITEMS, **filters(model, deny=[0, 3], allow=[0, 1, 3, 4]))
        assert both[0][:2].tolist() in ([1, 4], [4, 1]) and (both[0][2:] == -1).all()

    def test_fewer_candidates_than_k_end_with_padding(self, model, user_items):
        ids, scores = model.recommend(14, k=12, **filters(model, allow=[2, 9, 30]))
        assert sorted(ids[:3].tolist()) == [2, 9, 30]
        assert (ids[3:] == -1).all() and (scores[3:] == -np.inf).all()
        ids, scores = model.recommend(14, k=3, **filters(model, deny=np.arange(N_ITEMS)))
        np.testing.assert_array_equal(ids, [-1, -1, -1])
        assert (scores == -np.inf).all()

    @settings(max_examples=12, suppress_health_check=[HealthCheck.differing_executors, HealthCheck.too_slow])
    @given(draw=st.data())
    def test_recommend_matches_the_numpy_reference(self, model, user_items, draw):
        single = draw.draw(st.booleans(), label="single")
        if single:
            users = np.array([draw.draw(st.integers(0, N_USERS - 1), label="user")])
        else:
            users = np.array(draw.draw(st.lists(st.integers(0, N_USERS - 1), min_size=1, max_size=8), label="users"))
        k = draw.draw(st.integers(1, N_ITEMS + 4), label="k")
        exclude_seen = draw.draw(st.booleans(), label="exclude_seen")
        item_lists = st.lists(st.integers(0, N_ITEMS - 1), max_size=N_ITEMS)
        deny = draw.draw(st.none() | item_lists, label="deny")
        allow = draw.draw(st.none() | st.lists(st.integers(0, N_ITEMS - 1), min_size=1), label="allow")
        precision = draw.draw(st.sampled_from(["float32", "bfloat16"]), label="precision")

        ids, scores = model.recommend(
            int(users[0]) if single else users, user_items, k=k, exclude_seen=exclude_seen,
            precision=precision, **filters(model, deny=deny, allow=allow),
        )  # fmt: skip
        assert ids.shape == ((k,) if single else (len(users), k))
        exclude = user_items[users] if exclude_seen else None
        queries = self.query_vectors(model, users)
        expected_ids, expected_scores = self.reference_topk(model, queries, k, exclude=exclude, deny=deny, allow=allow)
        candidates = candidate_mask(len(users), N_ITEMS, exclude=exclude, deny=deny, allow=allow)
        all_scores = queries @ self.item_vectors(model).T
        assert_sorted_rows(ids, scores)
        assert_matches_reference(ids, scores, expected_ids, expected_scores, all_scores, candidates)

    def test_one_and_two_threads_serve_the_same_results(self, model, user_items):
        one = model.recommend_all(user_items, k=9, num_threads=1)
        two = model.recommend_all(user_items, k=9, num_threads=2)
        np.testing.assert_array_equal(one[0], two[0])
        np.testing.assert_array_equal(one[1], two[1])
        for method in (model.similar_items, model.similar_users):
            one, two = method([0, 3, 7], k=6, num_threads=1), method([0, 3, 7], k=6, num_threads=2)
            np.testing.assert_array_equal(one[0], two[0])
            np.testing.assert_array_equal(one[1], two[1])
        one, two = (
            model.recommend(21, user_items, k=9, num_threads=1),
            model.recommend(21, user_items, k=9, num_threads=2),
        )
        np.testing.assert_array_equal(one[0], two[0])
        np.testing.assert_array_equal(one[1], two[1])

    def test_bfloat16_precision_gives_the_float32_results(self, model, user_items):
        for user in range(N_USERS):  # one user at a time: the bfloat16 search path
            exact = model.recommend(user, user_items, k=10)
            rounded = model.recommend(user, user_items, k=10, precision="bfloat16")
            np.testing.assert_array_equal(rounded[0], exact[0])
            np.testing.assert_array_equal(rounded[1], exact[1])
        exact = model.recommend_all(user_items, k=10, **filters(model, deny=[1, 2]))
        rounded = model.recommend_all(user_items, k=10, precision="bfloat16", **filters(model, deny=[1, 2]))
        np.testing.assert_array_equal(rounded[0], exact[0])
        np.testing.assert_array_equal(rounded[1], exact[1])

    # -- serving: similarity ----------------------------------------------------------------

    @pytest.mark.parametrize("side", ["items", "users"])
    def test_similar_items_and_users_are_the_cosine_of_the_factors(self, model, side):
        factors = model.item_factors_ if side == "items" else model.user_factors_
        similar = model.similar_items if side == "items" else model.similar_users
        n = factors.shape[0]
        queries = np.arange(n)
        ids, scores = similar(queries, k=8)
        assert ids.shape == scores.shape == (n, 8) and ids.dtype == np.int32 and scores.dtype == np.float32
        assert_sorted_rows(ids, scores)
        expected_ids, expected_scores = topk_reference.topk(factors, factors, 8, metric="cosine")
        unit = topk_reference.unit_rows(np.asarray(factors, dtype=np.float64))
        everything = np.ones((n, n), dtype=bool)
        assert_matches_reference(ids, scores, expected_ids, expected_scores, unit @ unit.T, everything)
        nonzero = np.linalg.norm(factors, axis=1) > 0
        np.testing.assert_array_equal(ids[nonzero, 0], queries[nonzero])  # cosine 1 with itself
        np.testing.assert_allclose(scores[nonzero, 0], 1.0, rtol=1e-5)

        single_ids, single_scores = similar(5, k=8)
        np.testing.assert_array_equal(single_ids, ids[5])
        np.testing.assert_array_equal(single_scores, scores[5])
        without, _ = similar(queries, k=8, exclude_self=True)
        assert all(query not in row for query, row in zip(queries, without))
        np.testing.assert_array_equal(without[nonzero, :7], ids[nonzero, 1:])

    def test_similar_items_tie_lower_id_first(self, model):
        twin = with_item_copied(model, source=22, target=6)
        ids, scores = twin.similar_items([6, 22], k=2)
        np.testing.assert_array_equal(ids, [[6, 22], [6, 22]])
        assert scores[0, 0] == scores[0, 1]

    # -- serving: new users ------------------------------------------------------------------

    def test_fold_in_matches_the_least_squares_reference(self, model, user_items):
        rows = user_items[[1, 2, 25, 30, 47]]  # user 25 has no interactions
        folded = model.fold_in(rows)
        assert folded.shape == (5, model.user_factors_.shape[1])
        assert folded.dtype == model.user_factors_.dtype and folded.flags.c_contiguous
        expected = self.fold_in_reference(model, rows)
        tolerance = 1e-9 if folded.dtype == np.float64 else 1e-4
        assert relative_error(folded, expected) < tolerance
        assert not folded[2].any()

    def test_fold_in_of_training_rows_serves_like_the_fitted_users(self, model, user_items):
        folded = model.fold_in(user_items)
        ids, scores = model.recommend_vectors(folded, user_items, k=10)
        fitted, _ = model.recommend_all(user_items, k=10)
        overlap = np.mean([len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(ids, fitted)])
        assert overlap >= 0.7, f"folded-in users share {overlap:.0%} of the fitted users' top 10"
        for user in range(N_USERS):
            assert not set(user_items[user].indices.tolist()) & set(ids[user].tolist())

    def test_recommend_vectors_matches_the_numpy_reference(self, model, user_items):
        rows = user_items[[4, 9, 33]]
        folded = model.fold_in(rows)
        ids, scores = model.recommend_vectors(folded, rows, k=12, **filters(model, deny=[0, 1]))
        assert ids.shape == (3, 12) and ids.dtype == np.int32 and scores.dtype == np.float32
        queries = self.folded_query_vectors(model, folded)
        expected = self.reference_topk(model, queries, 12, exclude=rows, deny=[0, 1])
        candidates = candidate_mask(3, N_ITEMS, exclude=rows, deny=[0, 1])
        assert_sorted_rows(ids, scores)
        assert_matches_reference(ids, scores, *expected, queries @ self.item_vectors(model).T, candidates)
        one_ids, one_scores = model.recommend_vectors(folded[1], rows[1], k=12, **filters(model, deny=[0, 1]))
        np.testing.assert_array_equal(one_ids, ids[1])
        np.testing.assert_array_equal(one_scores, scores[1])

    # -- persistence -------------------------------------------------------------------------

    def test_save_and_load_round_trip_is_exact(self, model, user_items, tmp_path):
        path = tmp_path / "model.npz"
        model.save(path)
        loaded = recore.load(path)
        assert type(loaded) is type(model)
        assert loaded.get_params() == model.get_params()
        for name in self.FITTED_ARRAYS:
            original, restored = getattr(model, name), getattr(loaded, name)
            if isinstance(original, np.ndarray):
                assert restored.dtype == original.dtype and restored.shape == original.shape
                assert restored.flags.c_contiguous
                np.testing.assert_array_equal(restored, original)
            else:
                assert type(restored) is type(original) and restored == original
        for call in (
            lambda m: m.recommend_all(user_items, k=6),
            lambda m: m.recommend(3, user_items, k=6, precision="bfloat16"),
            lambda m: m.similar_items(np.arange(N_ITEMS), k=4),
            lambda m: m.similar_users([0, 1, 2], k=4, exclude_self=True),
        ):
            for before, after in zip(call(model), call(loaded)):
                np.testing.assert_array_equal(after, before)
        users, items = np.arange(N_USERS)[:, None], np.arange(N_ITEMS)[None, :]
        np.testing.assert_array_equal(loaded.predict(users, items), model.predict(users, items))
        np.testing.assert_array_equal(loaded.fold_in(user_items[:5]), model.fold_in(user_items[:5]))

    def test_save_and_load_keep_the_training_record(self, model, tmp_path):
        path = tmp_path / "model.npz"
        model.save(path)
        loaded = recore.load(path)
        assert training_history(loaded) == training_history(model)
        assert iterations_completed(loaded) == iterations_completed(model)

    def test_a_truncated_file_is_refused(self, model, tmp_path):
        path = tmp_path / "model.npz"
        model.save(path)
        whole = path.read_bytes()
        for length in (0, 1, 22, len(whole) // 3, len(whole) // 2, len(whole) - 22, len(whole) - 1):
            cut = tmp_path / f"cut{length}.npz"
            cut.write_bytes(whole[:length])
            with pytest.raises(recore.ModelFileError):
                recore.load(cut)

    def test_a_flipped_byte_is_refused(self, model, tmp_path):
        path = tmp_path / "model.npz"
        model.save(path)
        whole = path.read_bytes()
        # One byte of every fitted array's stored bytes: the file must be refused.
        for name in self.FITTED_ARRAYS:
            payload = np.asarray(getattr(model, name)).tobytes()
            start, end = stored_bytes(path, whole, f"fitted__{name}.npy", len(payload))
            assert whole[start:end] == payload, f"{name} is not stored as its bytes"
            for position in (start, (start + end) // 2, end - 1):
                damaged = tmp_path / "damaged.npz"
                damaged.write_bytes(flipped(whole, position))
                with pytest.raises(recore.ModelFileError):
                    recore.load(damaged)
        # Anywhere else: refused, or (a byte the archive never reads) the very same model.
        for position in np.random.default_rng(SEED).choice(len(whole), size=24, replace=False):
            damaged = tmp_path / "damaged.npz"
            damaged.write_bytes(flipped(whole, int(position)))
            try:
                loaded = recore.load(damaged)
            except recore.ModelFileError:
                continue
            for name in self.FITTED_ARRAYS:
                np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
            assert loaded.get_params() == model.get_params()

    def test_a_file_is_never_unpickled(self, model, tmp_path):
        marker = tmp_path / "code-ran"

        class Payload:
            def __reduce__(self):
                return (open, (str(marker), "w"))

        path = tmp_path / "model.npz"
        model.save(path)
        with np.load(path, allow_pickle=False) as archive:
            members = {name: archive[name] for name in archive.files}
        members["fitted__user_factors_"] = np.array([Payload()], dtype=object)
        forged = tmp_path / "forged.npz"
        np.savez(forged, **members)
        with pytest.raises(recore.ModelFileError):
            recore.load(forged)
        assert not marker.exists()

    def test_saving_over_a_file_replaces_it_whole_or_not_at_all(self, model, tmp_path, monkeypatch):
        path = tmp_path / "model.npz"
        model.save(path)
        other = copy.deepcopy(model)
        other.user_factors_ = (model.user_factors_ * 2).astype(model.user_factors_.dtype)
        real_savez = np.savez

        def write_half_then_fail(file, **members):
            real_savez(file, **members)
            file.truncate(file.tell() // 2)
            raise OSError("disk full")

        monkeypatch.setattr(np, "savez", write_half_then_fail)
        with pytest.raises(OSError, match="disk full"):
            other.save(path)
        monkeypatch.undo()
        np.testing.assert_array_equal(recore.load(path).user_factors_, model.user_factors_)  # the old model
        assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]  # no temporary file left

        other.save(path)
        np.testing.assert_array_equal(recore.load(path).user_factors_, other.user_factors_)  # the new model
        assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]

    # -- bad input to a fitted model --------------------------------------------------------

    @pytest.mark.parametrize(
        "call, error, argument",
        [
            pytest.param(lambda m, d: m.recommend(N_USERS, d), IndexError, "users", id="user-too-large"),
            pytest.param(lambda m, d: m.recommend([0, -1], d), IndexError, "users", id="user-negative"),
            pytest.param(lambda m, d: m.recommend(1.0, d), TypeError, "users", id="user-float"),
            pytest.param(lambda m, d: m.recommend(np.array([0.0, 1.0]), d), TypeError, "users", id="users-float"),
            pytest.param(lambda m, d: m.recommend([True], d), TypeError, "users", id="users-bool"),
            pytest.param(lambda m, d: m.recommend("3", d), TypeError, "users", id="user-string"),
            pytest.param(lambda m, d: m.recommend([[0, 1]], d), ValueError, "users", id="users-2d"),
            pytest.param(lambda m, d: m.recommend(0, d, k=0), ValueError, "k", id="k-zero"),
            pytest.param(lambda m, d: m.recommend(0, d, k=-3), ValueError, "k", id="k-negative"),
            pytest.param(lambda m, d: m.recommend(0, d, k=2.0), TypeError, "k", id="k-float"),
            pytest.param(lambda m, d: m.recommend_all(d, k=0), ValueError, "k", id="recommend_all-k-zero"),
            pytest.param(lambda m, d: m.recommend([0, 1], d[:, :-1]), ValueError, "user_items", id="items-columns"),
            pytest.param(lambda m, d: m.recommend([0, 1], d[:5]), ValueError, "user_items", id="items-rows"),
            pytest.param(lambda m, d: m.recommend([0], d.toarray()), TypeError, "user_items", id="items-dense"),
            pytest.param(lambda m, d: m.recommend(0, d, num_threads=-1), ValueError, "num_threads", id="threads"),
            pytest.param(lambda m, d: m.recommend(0, d, precision="float16"), ValueError, "precision", id="precision"),
            pytest.param(lambda m, d: m.recommend(0, d, exclude_seen="yes"), TypeError, "exclude_seen", id="seen"),
            pytest.param(lambda m, d: m.similar_items(N_ITEMS), IndexError, "items", id="similar-item-too-large"),
            pytest.param(lambda m, d: m.similar_items([-1]), IndexError, "items", id="similar-item-negative"),
            pytest.param(lambda m, d: m.similar_items(0.0), TypeError, "items", id="similar-item-float"),
            pytest.param(lambda m, d: m.similar_items(0, k=0), ValueError, "k", id="similar-items-k"),
            pytest.param(lambda m, d: m.similar_users(N_USERS), IndexError, "users", id="similar-user-too-large"),
            pytest.param(lambda m, d: m.similar_users([0], k=-1), ValueError, "k", id="similar-users-k"),
            pytest.param(lambda m, d: m.similar_users(0, exclude_self=1), TypeError, "exclude_self", id="self"),
            pytest.param(lambda m, d: m.predict(N_USERS, 0), IndexError, "users", id="predict-user"),
            pytest.param(lambda m, d: m.predict(0, [N_ITEMS]), IndexError, "items", id="predict-item"),
            pytest.param(lambda m, d: m.predict(0.5, 0), TypeError, "users", id="predict-float-user"),
            pytest.param(lambda m, d: m.predict([0, 1], [0, 1, 2]), ValueError, "users", id="predict-shapes"),
            pytest.param(lambda m, d: m.fold_in(d[:, :-1]), ValueError, "user_items_rows", id="fold_in-columns"),
            pytest.param(
                lambda m, d: m.fold_in(np.full((1, N_ITEMS), np.nan)), ValueError, "user_items_rows", id="fold_in-nan"
            ),
            pytest.param(
                lambda m, d: m.recommend_vectors(np.ones((1, 3)), k=2), ValueError, "user_vectors", id="vectors-width"
            ),
            pytest.param(
                lambda m, d: m.recommend_vectors(np.full((1, m.user_factors_.shape[1]), np.inf), k=2),
                ValueError,
                "user_vectors",
                id="vectors-inf",
            ),
            pytest.param(
                lambda m, d: m.recommend_vectors(np.ones(m.user_factors_.shape[1]), k=0), ValueError, "k", id="vec-k"
            ),
        ],
    )
    def test_bad_serving_input_raises_naming_the_argument(self, model, user_items, call, error, argument):
        with pytest.raises(error, match=rf"\b{argument}\b"):
            call(model, user_items)

    @pytest.mark.parametrize("which", ["deny", "allow"])
    @pytest.mark.parametrize("ids, error", [([N_ITEMS], IndexError), ([-1], IndexError), ([0.5], TypeError)])
    def test_bad_deny_or_allow_ids_raise_naming_the_list(self, model, user_items, which, ids, error):
        name = dict(zip(("deny", "allow"), filter_names(model)))[which]
        with pytest.raises(error, match=rf"\b{name}\b"):
            model.recommend(0, user_items, **filters(model, **{which: ids}))
        with pytest.raises(error, match=rf"\b{name}\b"):
            model.recommend_vectors(model.user_factors_[:1], k=3, **filters(model, **{which: ids}))

    # -- bad input before fitting, and to fit -------------------------------------------------

    @pytest.mark.parametrize(
        "call",
        [
            pytest.param(lambda m: m.recommend(0), id="recommend"),
            pytest.param(lambda m: m.recommend_all(), id="recommend_all"),
            pytest.param(lambda m: m.similar_items(0), id="similar_items"),
            pytest.param(lambda m: m.similar_users(0), id="similar_users"),
            pytest.param(lambda m: m.predict(0, 0), id="predict"),
            pytest.param(lambda m: m.fold_in(sp.csr_matrix((1, N_ITEMS), dtype=np.float32)), id="fold_in"),
            pytest.param(lambda m: m.recommend_vectors(np.ones((1, 4)), k=2), id="recommend_vectors"),
        ],
    )
    def test_an_unfitted_model_refuses_to_serve(self, call):
        with pytest.raises(ValueError, match="not fitted"):
            call(self.make_model())

    def test_an_unfitted_model_cannot_be_saved(self, tmp_path):
        with pytest.raises(ValueError, match="not fitted"):
            self.make_model().save(tmp_path / "model.npz")
        assert not list(tmp_path.iterdir())

    @pytest.mark.parametrize(
        "bad_data",
        [
            pytest.param(
                lambda d: sp.csr_matrix((np.full(d.nnz, np.nan, np.float32), d.indices, d.indptr), d.shape), id="nan"
            ),
            pytest.param(lambda d: _with_value(d, 5, np.inf), id="inf"),
            pytest.param(lambda d: _with_value(d.toarray(), (3, 4), np.nan), id="dense-nan"),
            pytest.param(lambda d: _with_value(d.astype(np.float64), 0, 1e300), id="beyond-float32"),
        ],
    )
    def test_fit_refuses_non_finite_data_before_any_work(self, model, user_items, bad_data):
        fitted = copy.deepcopy(model)
        before = fitted.user_factors_.copy()
        with pytest.raises(ValueError, match=r"\buser_items\b"):
            fitted.fit(bad_data(user_items))
        np.testing.assert_array_equal(fitted.user_factors_, before)  # the fitted model is untouched
        fresh = self.make_model()
        with pytest.raises(ValueError, match=r"\buser_items\b"):
            fresh.fit(bad_data(user_items))
        assert not hasattr(fresh, "user_factors_")

    def test_fit_treats_negative_values_as_documented(self, user_items):
        negative = _with_value(user_items, 0, -1.0)
        if self.ACCEPTS_NEGATIVE_VALUES:
            self.make_model().fit(negative)
        else:
            with pytest.raises(ValueError, match=r"\buser_items\b.*negative"):
                self.make_model().fit(negative)

    @pytest.mark.parametrize(
        "bad_data, error",
        [
            pytest.param(lambda d: np.ones(5), ValueError, id="1d"),
            pytest.param(lambda d: d.toarray().astype(complex), TypeError, id="complex"),
            pytest.param(lambda d: np.array([["a", "b"]]), TypeError, id="strings"),
        ],
    )
    def test_fit_refuses_what_is_no_matrix(self, user_items, bad_data, error):
        with pytest.raises(error, match=r"\buser_items\b"):
            self.make_model().fit(bad_data(user_items))

    @pytest.mark.parametrize("name, value, error", _param_cases())
    def test_bad_hyperparameters_are_refused_on_construction(self, name, value, error):
        name = self.resolve_param(name)
        with pytest.raises(error, match=rf"\b{name}\b"):
            self.make_model(**{name: value})

    @pytest.mark.parametrize("name, value, error", _param_cases())
    def test_set_params_refuses_bad_values_and_keeps_the_old_ones(self, name, value, error):
        name = self.resolve_param(name)
        model = self.make_model()
        before = model.get_params()
        # A valid change alongside the bad value: neither may stick.
        change = next((key, good) for key, good in self.PARAM_CHANGES.items() if key != name)
        with pytest.raises(error, match=rf"\b{name}\b"):
            model.set_params(**dict([change, (name, value)]))
        assert model.get_params() == before

    def test_model_specific_bad_hyperparameters_are_refused(self):
        for name, value, error in self.BAD_PARAMS:
            assert_refused(functools.partial(self.make_model, **{name: value}), name, value, error)
            model = self.make_model()
            before = model.get_params()
            assert_refused(functools.partial(model.set_params, **{name: value}), name, value, error)
            assert model.get_params() == before

    def test_set_params_refuses_unknown_names(self):
        model = self.make_model()
        before = model.get_params()
        with pytest.raises(ValueError, match="no_such_parameter"):
            model.set_params(no_such_parameter=1)
        assert model.get_params() == before

    @pytest.mark.parametrize("name, value, error", [("num_threads", -1, ValueError), ("factors", "4", TypeError)])
    def test_fit_checks_hyperparameters_set_directly(self, model, user_items, name, value, error):
        fitted = copy.deepcopy(model)
        before = fitted.item_factors_.copy()
        setattr(fitted, name, value)  # bypassing set_params: fit checks again before any work
        with pytest.raises(error, match=rf"\b{name}\b"):
            fitted.fit(user_items)
        np.testing.assert_array_equal(fitted.item_factors_, before)

    # -- estimator conventions ---------------------------------------------------------------

    def test_get_params_names_every_constructor_argument(self, model):
        params = model.get_params()
        arguments = list(inspect.signature(type(model)).parameters)
        assert [name for name in arguments if name in params] == list(params)
        assert set(arguments) - set(params) <= RENAMED_PARAMS  # old names: not hyperparameters of their own
        assert model.get_params(deep=False) == params

    def test_a_clone_has_the_same_params_and_fits_the_same_model(self, model, user_items):
        clone = type(model)(**model.get_params())
        assert clone.get_params() == model.get_params()
        assert not hasattr(clone, "user_factors_")  # hyperparameters only, no fitted state
        assert clone.fit(user_items) is clone
        for name in self.FITTED_ARRAYS:
            np.testing.assert_array_equal(getattr(clone, name), getattr(model, name))

    def test_repr_rebuilds_the_model(self, model):
        text = repr(model)
        assert text.startswith(f"{type(model).__name__}(")
        rebuilt = eval(text, {"ALS": recore.ALS, "SGD": recore.SGD})  # noqa: S307 - our own repr
        assert type(rebuilt) is type(model) and rebuilt.get_params() == model.get_params()

    def test_set_params_returns_self_and_round_trips(self):
        model = self.make_model()
        original = model.get_params()
        assert model.set_params(**self.PARAM_CHANGES) is model
        assert model.get_params() == {**original, **self.PARAM_CHANGES}
        assert f"{next(iter(self.PARAM_CHANGES))}={next(iter(self.PARAM_CHANGES.values()))!r}" in repr(model)
        model.set_params(**original)
        assert model.get_params() == original

    def test_a_refit_serves_the_new_factors(self, model, user_items):
        refit = copy.deepcopy(model)
        refit.recommend_all(user_items, k=3)  # the serving caches are built for the old factors
        refit.set_params(random_state=SEED + 1, **{self.resolve_param("ITERATIONS"): 1}).fit(user_items)
        ids, scores = refit.recommend_all(user_items, k=3)
        queries = self.query_vectors(refit, np.arange(N_USERS))
        expected_ids, expected_scores = self.reference_topk(refit, queries, 3, exclude=user_items)
        candidates = candidate_mask(N_USERS, N_ITEMS, exclude=user_items)
        assert_matches_reference(
            ids, scores, expected_ids, expected_scores, queries @ self.item_vectors(refit).T, candidates
        )

    def resolve_param(self, name: str) -> str:
        return iterations_param(self.MODEL_CLASS) if name == "ITERATIONS" else name


def _with_value(matrix, position, value):
    """A copy of ``matrix`` with one stored value (sparse: the ``position``-th) or one entry
    (dense: at index ``position``) replaced."""
    changed = matrix.copy()
    if sp.issparse(changed):
        changed.data = changed.data.copy()
        changed.data[position] = value
    else:
        changed = changed.astype(np.float64)
        changed[position] = value
    return changed


# -- the models -------------------------------------------------------------------------------


def implicit_data() -> sp.csr_matrix:
    """60 users x 40 items, about 600 interactions; users 0 and 25 have none."""
    return recore.datasets.synthetic(N_USERS, N_ITEMS, NNZ, random_state=SEED)


def rating_data() -> sp.csr_matrix:
    """Ratings 1..5 on the same pattern as :func:`implicit_data`."""
    return recore.datasets.synthetic_ratings(N_USERS, N_ITEMS, NNZ, random_state=SEED)


class _ALSContract(ModelContract):
    MODEL_CLASS = recore.ALS
    PARAM_CHANGES = {"factors": 5, "regularization": 0.2}
    BAD_PARAMS = [
        ("solver", "lu", ValueError),
        ("cg_steps", 0, ValueError),
        ("alpha", -1.0, ValueError),
        ("feedback", "ratings", ValueError),
        ("confidence", None, TypeError),
        ("weighted_regularization", "no", TypeError),
        ("dtype", "int32", ValueError),
        ("dtype", "float16", ValueError),
        ("calculate_training_loss", 1, TypeError),
        ("unobserved_weight", -1.0, ValueError),
        ("unobserved_weight", "1", TypeError),
        ("regularization_exponent", -0.5, ValueError),
        ("block_size", 0, ValueError),
        ("subspace_sweeps", 0, ValueError),
    ]

    def fold_in_reference(self, model, rows):
        return reference.half_step(
            rows,
            model.item_factors_,
            regularization=model.regularization,
            alpha=model.alpha,
            feedback=model.feedback,
            confidence=model.confidence,
            weighted_regularization=model.weighted_regularization,
            unobserved_weight=model.unobserved_weight,
            regularization_exponent=model.regularization_exponent,
        )


class TestALSImplicitContract(_ALSContract):
    ACCEPTS_NEGATIVE_VALUES = False

    def make_model(self, **params):
        options = dict(factors=8, iterations=4, regularization=0.1, alpha=2.0, random_state=SEED)
        options["calculate_training_loss"] = True
        return recore.ALS(**{**options, **params})

    def make_data(self):
        return implicit_data()


class TestALSiALSContract(_ALSContract):
    """iALS as Rendle et al. tune it: a small unobserved weight, frequency-scaled
    regularization, and the subspace solver; fold_in solves with the same objective."""

    ACCEPTS_NEGATIVE_VALUES = False

    def make_model(self, **params):
        options = dict(
            factors=8, iterations=4, regularization=0.002, alpha=2.0, unobserved_weight=0.2,
            regularization_exponent=0.7, solver="subspace", block_size=3, random_state=SEED,
            calculate_training_loss=True,
        )  # fmt: skip
        return recore.ALS(**{**options, **params})

    def make_data(self):
        return implicit_data()


class TestALSExplicitContract(_ALSContract):
    """Ratings, weighted-lambda regularization, exact solves, in float64."""

    def make_model(self, **params):
        options = dict(
            factors=6, iterations=4, feedback="explicit", solver="cholesky", weighted_regularization=True,
            regularization=0.05, dtype="float64", random_state=SEED, calculate_training_loss=True,
        )  # fmt: skip
        return recore.ALS(**{**options, **params})

    def make_data(self):
        return rating_data()


class _SGDContract(ModelContract):
    MODEL_CLASS = recore.SGD
    FITTED_ARRAYS = ("user_factors_", "item_factors_", "user_biases_", "item_biases_", "global_bias_")
    PARAM_CHANGES = {"factors": 5, "learning_rate": 0.05}
    BAD_PARAMS = [
        ("loss", "hinge", ValueError),
        ("learning_rate", 0.0, ValueError),
        ("learning_rate", "fast", TypeError),
        ("bias_regularization", -1.0, ValueError),
        ("biases", 1, TypeError),
        ("schedule", "cosine", ValueError),
        ("negatives", "hard", ValueError),
        ("init_scale", -0.1, ValueError),
        ("blocks", -1, ValueError),
        ("early_stopping", 1.5, TypeError),
    ]

    # Scores are mu + b_u + b_i + p_u . q_i: [p_u, 1, mu + b_u] . [q_i, b_i, 1].
    def query_vectors(self, model, users):
        users = np.asarray(users)
        offsets = model.global_bias_ + np.asarray(model.user_biases_[users], dtype=np.float64)
        return np.hstack(
            [np.asarray(model.user_factors_[users], np.float64), np.ones((len(users), 1)), offsets[:, None]]
        )

    def folded_query_vectors(self, model, vectors):
        # A folded-in user has no bias of its own.
        n = len(vectors)
        return np.hstack([np.asarray(vectors, np.float64), np.ones((n, 1)), np.full((n, 1), model.global_bias_)])

    def item_vectors(self, model):
        n = model.item_factors_.shape[0]
        biases = np.asarray(model.item_biases_, np.float64)[:, None]
        return np.hstack([np.asarray(model.item_factors_, np.float64), biases, np.ones((n, 1))])


class TestSGDSquaredContract(_SGDContract):
    def make_model(self, **params):
        # One thread: SGD is bitwise reproducible only then (the clone check refits).
        options = dict(factors=8, loss="squared", num_threads=1, random_state=SEED, blocks=4)
        options[iterations_param(recore.SGD)] = 8
        return recore.SGD(**{**options, **params})

    def make_data(self):
        return rating_data()

    def fold_in_reference(self, model, rows):
        # Documented: the least-squares fit of the ratings minus mu and the item biases.
        residuals = sp.csr_matrix(rows, dtype=np.float64, copy=True)
        residuals.data -= model.global_bias_ + np.asarray(model.item_biases_, np.float64)[residuals.indices]
        return reference.half_step(
            residuals, model.item_factors_, regularization=model.regularization, feedback="explicit"
        )


class TestSGDBPRContract(_SGDContract):
    ACCEPTS_NEGATIVE_VALUES = False

    def make_model(self, **params):
        options = dict(factors=8, loss="bpr", num_threads=1, random_state=SEED)
        options[iterations_param(recore.SGD)] = 8
        return recore.SGD(**{**options, **params})

    def make_data(self):
        return implicit_data()

    def fold_in_reference(self, model, rows):
        # Documented: an implicit-feedback least-squares solve (linear confidence, alpha 1).
        return reference.half_step(
            rows, model.item_factors_, regularization=model.regularization, feedback="implicit", alpha=1.0
        )
