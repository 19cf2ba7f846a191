"""One query at a time: the fast paths of single-query searches give what the general paths
give, check what the general paths check, and keep nothing that could go stale."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import recore
import scipy.sparse as sp
import topk_reference
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from recore import _filters
from recore.backends import cpu

# The module (recore.topk is also the function of that name).
topk_module = importlib.import_module("recore.topk")
seeds = st.integers(0, 2**32 - 1)

special_values = st.sampled_from([np.nan, np.inf, -np.inf, 3e38, -3e38, 1e-45, 0.0, -0.0, 1.0, -2.5])


@given(
    array=hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=40),
        elements=st.one_of(st.floats(width=32), special_values),
    )
)
def test_calling_thread_check_agrees_with_isfinite(array):
    """NaN, both infinities, and finite values whose float32 sum overflows (3e38 + 3e38),
    which must still count as finite."""
    assert _filters.finite_in_calling_thread(array) == bool(np.isfinite(array).all())


def test_calling_thread_check_of_finite_values_whose_sum_overflows():
    array = np.full((5000, 8), 3e38, np.float32)
    assert _filters.finite_in_calling_thread(array)
    array[4321, 7] = np.nan
    assert not _filters.finite_in_calling_thread(array)
    array[4321, 7] = -np.inf
    assert not _filters.finite_in_calling_thread(array)


@given(n_items=st.integers(1, 700), seed=seeds)
def test_denied_bits_layout(n_items, seed):
    """Bit i % 64 of word i // 64, words little-endian: the layout the engine reads."""
    rng = np.random.default_rng(seed)
    ids = np.unique(rng.integers(0, n_items, size=rng.integers(0, n_items + 1)))
    bits = _filters.denied_bits(ids, n_items)
    expected = np.zeros((n_items + 63) // 64, np.uint64)
    for i in ids:
        expected[i // 64] |= np.uint64(1) << np.uint64(i % 64)
    assert bits.dtype == np.dtype("<u8")
    np.testing.assert_array_equal(bits, expected)


@given(ids=st.lists(st.integers(0, 49), max_size=30))
def test_item_ids_are_sorted_and_unique_whatever_the_input(ids):
    np.testing.assert_array_equal(_filters.item_ids(ids, 50, "allow"), np.unique(np.asarray(ids, np.int64)))


def exclusion_row(rng, n_items, form):
    """One query's excluded items as a 1-row sparse matrix, canonical or not."""
    count = int(rng.integers(0, n_items + 1))
    columns = rng.integers(0, n_items, size=count)
    if form == "canonical":
        return sp.csr_matrix(
            (np.ones(len(np.unique(columns)), np.float32), np.unique(columns), [0, len(np.unique(columns))]),
            shape=(1, n_items),
        )
    if form == "duplicates":  # unsorted, repeated entries, stored zeros
        return sp.csr_matrix((np.zeros(count, np.float32), columns.astype(np.int32), [0, count]), shape=(1, n_items))
    if form == "int64":
        unique = np.unique(columns)
        row = sp.csr_matrix((np.ones(len(unique), np.float32), unique, [0, len(unique)]), shape=(1, n_items))
        row.indices, row.indptr = row.indices.astype(np.int64), row.indptr.astype(np.int64)
        return row
    return sp.coo_matrix((np.ones(count, np.float32), (np.zeros(count, np.int64), columns)), shape=(1, n_items))


@given(
    seed=seeds,
    n_items=st.integers(1, 400),
    factors=st.integers(1, 20),
    form=st.sampled_from(["canonical", "duplicates", "int64", "coo"]),
    deny=st.booleans(),
    allow=st.booleans(),
    precision=st.sampled_from(["float32", "bfloat16"]),
    threads=st.sampled_from([0, 1, 2]),
)
def test_one_query_with_exclusions_matches_the_batch_and_the_reference(
    seed, n_items, factors, form, deny, allow, precision, threads
):
    """One query's exclusions, in every form (a canonical row reaches the engine as it is,
    others canonicalized first): the same results as the same query in a batch, and as the
    reference."""
    rng = np.random.default_rng(seed)
    items = rng.integers(-3, 4, size=(n_items, factors)).astype(np.float32)
    query = rng.integers(-3, 4, size=factors).astype(np.float32)
    k = int(rng.integers(1, n_items + 4))
    row = exclusion_row(rng, n_items, form)
    options = {}
    if deny:
        options["deny"] = rng.choice(n_items, size=int(rng.integers(0, n_items + 1)), replace=False)
    if allow:
        options["allow"] = rng.choice(n_items, size=int(rng.integers(0, n_items + 1)), replace=False)
    ids, scores = recore.topk(query, items, k, exclude=row, num_threads=threads, precision=precision, **options)
    batch_ids, batch_scores = recore.topk(
        np.vstack([query] * 5), items, k, exclude=sp.vstack([row] * 5).tocsr(), num_threads=threads, **options
    )
    np.testing.assert_array_equal(ids, batch_ids[0])
    np.testing.assert_array_equal(scores, batch_scores[0])
    expected_ids, expected_scores = topk_reference.topk(query[None], items, k, exclude=row, **options)
    np.testing.assert_array_equal(ids, expected_ids[0])
    np.testing.assert_array_equal(scores, expected_scores[0].astype(np.float32))
    if not allow:
        index = recore.ItemIndex(items)
        found = index.search(query, k, exclude=row, num_threads=threads, precision=precision, **options)
        np.testing.assert_array_equal(found[0], ids)
        np.testing.assert_array_equal(found[1], scores)


def test_one_query_exclusions_are_checked_before_the_search():
    items = np.ones((10, 3), np.float32)
    query = np.ones(3, np.float32)
    out_of_range = sp.csr_matrix((np.ones(1, np.float32), np.array([10], np.int32), [0, 1]), shape=(1, 11))
    with pytest.raises(ValueError, match="exclude must have one row per query and one column per item"):
        recore.topk(query, items, 2, exclude=out_of_range)
    broken = sp.csr_matrix((1, 10), dtype=np.float32)
    broken.indices = np.array([12], np.int32)
    broken.data = np.ones(1, np.float32)
    broken.indptr = np.array([0, 1], np.int32)
    with pytest.raises(IndexError, match="exclude"):
        recore.topk(query, items, 2, exclude=broken, num_threads=1)
    with pytest.raises(IndexError, match="exclude"):
        recore.ItemIndex(items).search(query, 2, exclude=broken, num_threads=1)


def test_single_threaded_searches_check_in_the_calling_thread(monkeypatch):
    """num_threads=1 is honoured by the NaN / infinity checks too: the engine's parallel
    check is not called, and bad values are still refused before the search."""

    def parallel_check(array):
        raise AssertionError("the parallel check ran for a single-threaded search")

    rng = np.random.default_rng(3)
    items = rng.standard_normal((3000, 8), dtype=np.float32)
    query = rng.standard_normal(8, dtype=np.float32)
    expected = recore.topk(query, items, 5, num_threads=1)
    index = recore.ItemIndex(items)
    monkeypatch.setattr(cpu, "all_finite", parallel_check)
    for found in (recore.topk(query, items, 5, num_threads=1), index.search(query, 5, num_threads=1)):
        np.testing.assert_array_equal(found[0], expected[0])
    bad_items = items.copy()
    bad_items[2999, 7] = np.inf
    with pytest.raises(ValueError, match="items must not contain NaN or infinity"):
        recore.topk(query, bad_items, 5, num_threads=1)
    with pytest.raises(ValueError, match="queries must not contain NaN or infinity"):
        index.search(np.full(8, np.nan, np.float32), 5, num_threads=1)
    with pytest.raises(ValueError, match="queries must not contain NaN or infinity"):
        index.search(np.full((2, 8), -np.inf, np.float32), 5, num_threads=2)  # a small batch: calling thread


def test_large_multithreaded_checks_use_the_engine(monkeypatch):
    """A batch (beyond the single-query path) has its items checked before the search, by
    the engine's parallel check when it is large and may use several threads."""
    calls = []
    real = cpu.all_finite
    monkeypatch.setattr(cpu, "all_finite", lambda array: calls.append(array.shape) or real(array))
    items = np.ones((topk_module.CALLING_THREAD_CHECK_VALUES, 2), np.float32)
    queries = np.ones((cpu.SINGLE_QUERY_PATH_MAX + 1, 2), np.float32)
    recore.topk(queries, items, 3, num_threads=2)
    assert calls == [items.shape]


def refuse_separate_item_checks(monkeypatch):
    """Makes every check of the items outside the search fail the test."""

    def separate_check(array):
        if array.shape[0] > 2:  # a query's check (one or two rows) is allowed
            raise AssertionError("the items were read by a separate check")
        return bool(np.isfinite(array).all())

    monkeypatch.setattr(cpu, "all_finite", separate_check)
    monkeypatch.setattr(topk_module, "finite_in_calling_thread", separate_check)


@pytest.mark.parametrize("num_threads", [1, 2])
def test_one_query_search_checks_the_items_in_its_own_pass(monkeypatch, num_threads):
    """recore.topk of one or two queries reads the items once: the scoring pass finds a NaN
    or infinity (a non-finite value always gives a non-finite score) and the search raises
    the same ValueError as a separate check would, before any result."""
    refuse_separate_item_checks(monkeypatch)
    rng = np.random.default_rng(5)
    items = rng.standard_normal((1000, 24), dtype=np.float32)
    query = rng.standard_normal(24, dtype=np.float32)
    expected = topk_reference.topk(query[None], items, 7)
    ids, scores = recore.topk(query, items, 7, num_threads=num_threads)
    np.testing.assert_array_equal(ids, expected[0][0])
    for value, row, column in ((np.nan, 0, 0), (np.inf, 999, 23), (-np.inf, 517, 11), (np.nan, 998, 5)):
        bad = items.copy()
        bad[row, column] = value
        for queries in (query, np.vstack([query, -query])):
            with pytest.raises(ValueError, match="items must not contain NaN or infinity"):
                recore.topk(queries, bad, 7, num_threads=num_threads)
            # Excluded from every query, the row is scored all the same.
            n_queries = queries.reshape(-1, 24).shape[0]
            exclude = sp.csr_matrix((np.ones(n_queries), (np.arange(n_queries), [row] * n_queries)), (n_queries, 1000))
            with pytest.raises(ValueError, match="items must not contain NaN or infinity"):
                recore.topk(queries, bad, 7, exclude=exclude, num_threads=num_threads)
        # An item zeroed out by a zero factor of the query still makes the score NaN.
        zero_query = query.copy()
        zero_query[column] = 0.0
        with pytest.raises(ValueError, match="items must not contain NaN or infinity"):
            recore.topk(zero_query, bad, 7, num_threads=num_threads)
    # The check of a search that needs one is not skipped: no check of its own.
    unchecked = items.copy()
    unchecked[3, 3] = np.nan
    found, _ = recore.topk(query, unchecked, 7, num_threads=num_threads, check_finite=False)
    assert 3 not in found


def test_one_query_search_with_finite_scores_that_overflow_returns_results():
    """Finite items whose scores overflow to infinity are no error: the search cannot vouch
    for them, so they are read again, found finite, and the results stand."""
    items = np.ones((300, 4), np.float32)
    items[17] = 3e38
    query = np.full(4, 2.0, np.float32)
    ids, scores = recore.topk(query, items, 3, num_threads=1)
    assert ids[0] == 17 and scores[0] == np.inf
    expected = recore.topk(np.vstack([query] * 3), items, 3, num_threads=1)
    np.testing.assert_array_equal(ids, expected[0][0])
    np.testing.assert_array_equal(scores, expected[1][0])


def test_topk_keeps_nothing_between_calls():
    """recore.topk prepares nothing that outlives a call: the same array changed in place
    gives the new results, and a NaN written into it is refused."""
    rng = np.random.default_rng(11)
    items = rng.standard_normal((500, 16), dtype=np.float32)
    query = rng.standard_normal(16, dtype=np.float32)
    for _ in range(3):
        first, _ = recore.topk(query, items, 5, num_threads=1)
    items[first] *= -1  # the best five become poor
    ids, scores = recore.topk(query, items, 5, num_threads=1)
    expected_ids, expected_scores = topk_reference.topk(query[None], items, 5)
    np.testing.assert_array_equal(ids, expected_ids[0])
    np.testing.assert_allclose(scores, expected_scores[0], rtol=1e-5)
    assert not set(ids) & set(first)
    items[123, 4] = np.nan
    with pytest.raises(ValueError, match="items must not contain NaN"):
        recore.topk(query, items, 5, num_threads=1)
    with pytest.raises(ValueError, match="items must not contain NaN"):
        recore.topk(query, items, 5)


@given(
    seed=seeds,
    n_items=st.integers(1, 300),
    factors=st.integers(1, 70),
    spread=st.sampled_from([0.0, 1e-7, 1e-6, 1e-4, 1.0]),
    scale=st.sampled_from([1e-39, 1e-30, 1.0, 1e30]),
    k=st.integers(1, 20),
    threads=st.sampled_from([1, 2]),
    norms=st.sampled_from(["equal", "rising", "first rows small", "first rows large"]),
)
def test_one_query_over_rows_equals_the_batch_bit_for_bit(seed, n_items, factors, spread, scale, k, threads, norms):
    """One query over item rows rules rows out by an approximate score (summed in another
    order) and a bound on its error; it must keep every row whose exact score qualifies.
    Rows that differ from one another by a few units in the last place make the exact
    scores of many rows near-ties whose order rounding decides: the results must be those
    of the batch path, which scores every row exactly, ids and scores bit for bit."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(factors)
    items = scale * (common + spread * rng.standard_normal((n_items, factors)))
    # Rows of other lengths than the first ones' (the scan's cheap bound is scaled by those).
    lengths = {
        "equal": np.ones(n_items),
        "rising": np.geomspace(1e-3, 1e3, n_items),
        "first rows small": np.where(np.arange(n_items) < 8, 1e-6, 1.0),
        "first rows large": np.where(np.arange(n_items) < 8, 1e6, 1.0),
    }[norms]
    items = (items * lengths[:, None]).astype(np.float32)
    query = rng.standard_normal(factors).astype(np.float32)
    excluded = rng.choice(n_items, size=int(rng.integers(0, n_items // 4 + 1)), replace=False)
    exclude = sp.csr_matrix((np.ones(len(excluded)), (np.zeros(len(excluded), int), excluded)), (1, n_items))
    ids, scores = recore.topk(query, items, k, exclude=exclude, num_threads=threads)
    batch_ids, batch_scores = recore.topk(
        np.vstack([query] * 3), items, k, exclude=sp.vstack([exclude] * 3).tocsr(), num_threads=threads
    )
    np.testing.assert_array_equal(ids, batch_ids[0])
    np.testing.assert_array_equal(scores, batch_scores[0])
    expected_ids, expected_scores = topk_reference.topk(query[None], items, k, exclude=exclude)
    np.testing.assert_array_equal(ids == -1, expected_ids[0] == -1)
    finite = ids >= 0
    # Scores near float32's subnormals are off by multiples of their spacing, 2**-149.
    atol = 1e-6 * scale * lengths.max() + factors * 2.0**-149
    np.testing.assert_allclose(scores[finite], expected_scores[0][finite], rtol=1e-4, atol=atol)


def _outcome(search):
    """A search's results, or the type and message of what it raised."""
    try:
        return search()
    except Exception as error:  # every kind: the two paths must agree on it
        return type(error), str(error)


def _odd_one_query_arguments(case: str, rng):
    """(query, items, options) of one kind: arguments already in the engine's form (the fast
    path takes them) and arguments it leaves to the general path's checks or conversions."""
    items = rng.integers(-3, 4, size=(150, 6)).astype(np.float32)
    query = rng.integers(-3, 4, size=6).astype(np.float32)
    row = sp.csr_matrix((np.ones(3, np.float32), np.array([4, 9, 77], np.int32), [0, 3]), shape=(1, 150))
    options = {"k": 5, "exclude": row, "num_threads": 1}
    changes = {
        "plain": {},
        "no exclusion": {"exclude": None},
        "all threads": {"num_threads": 0},
        "numpy k": {"k": np.int64(3)},
        "bool k": {"k": True},
        "zero k": {"k": 0},
        "float k": {"k": 2.0},
        "k past the catalog": {"k": 400},
        "negative threads": {"num_threads": -1},
        "numpy threads": {"num_threads": np.int32(1)},
        "int check_finite": {"check_finite": 1},
        "numpy check_finite": {"check_finite": np.bool_(False)},
        "unchecked": {"check_finite": False},
        "bfloat16": {"precision": "bfloat16"},
        "unknown precision": {"precision": "half"},
        "precision not a string": {"precision": None},
        "unsorted exclusion": {"exclude": sp.csr_matrix((np.ones(2), np.array([9, 4]), [0, 2]), shape=(1, 150))},
        "int64 exclusion": {"exclude": sp.csr_matrix(row, dtype=np.float32)},
        "coo exclusion": {"exclude": row.tocoo()},
        "narrow exclusion": {"exclude": row[:, :100]},
        "exclusion out of range": {"exclude": sp.csr_matrix((1, 150), dtype=np.float32)},
        "two-row exclusion": {"exclude": sp.vstack([row, row]).tocsr()},
    }
    if case in changes:
        options.update(changes[case])
        if case == "int64 exclusion":
            options["exclude"].indices = options["exclude"].indices.astype(np.int64)
            options["exclude"].indptr = options["exclude"].indptr.astype(np.int64)
        if case == "exclusion out of range":
            options["exclude"].indices = np.array([150], np.int32)
            options["exclude"].data = np.ones(1, np.float32)
            options["exclude"].indptr = np.array([0, 1], np.int32)
        return query, items, options
    if case == "float64 query":
        query = query.astype(np.float64)
    elif case == "strided query":
        query = np.repeat(query, 2)[::2]
    elif case == "short query":
        query = query[:5]
    elif case == "NaN query":
        query[2] = np.nan
    elif case == "NaN item":
        items[40, 1] = np.inf
    elif case == "Fortran items":
        items = np.asfortranarray(items)
    elif case == "float64 items":
        items = items.astype(np.float64)
    elif case == "list items":
        items = items.tolist()
    return query, items, options


FAST_PATH_CASES = {"plain", "no exclusion", "all threads", "k past the catalog", "unchecked", "bfloat16",
                   "exclusion out of range", "NaN query", "NaN item"}  # fmt: skip


@pytest.mark.parametrize(
    "case",
    ["plain", "no exclusion", "all threads", "numpy k", "bool k", "zero k", "float k", "k past the catalog",
     "negative threads", "numpy threads", "int check_finite", "numpy check_finite", "unchecked", "bfloat16",
     "unknown precision", "precision not a string", "unsorted exclusion", "int64 exclusion", "coo exclusion",
     "narrow exclusion", "exclusion out of range", "two-row exclusion", "float64 query", "strided query",
     "short query", "NaN query", "NaN item", "Fortran items", "float64 items", "list items"],
)  # fmt: skip
def test_one_query_fast_path_answers_as_the_general_path(case):
    """One 1-D query takes a fast path when every argument is already in the engine's form;
    whatever the arguments, it gives what the same query as a one-row batch (the general
    path) gives: the same ids and scores, or the same exception and message."""
    rng = np.random.default_rng(sum(map(ord, case)))
    query, items, options = _odd_one_query_arguments(case, rng)
    taken = topk_module._one_query_arguments(
        query, items, options["k"], options["exclude"], options.get("precision", "float32"), options["num_threads"],
        options.get("check_finite", True),
    ) is not None  # fmt: skip
    assert taken == (case in FAST_PATH_CASES)
    as_batch = query[None] if isinstance(query, np.ndarray) else query

    _assert_same_outcome(lambda q: recore.topk(q, items, **options), query, as_batch)
    if isinstance(items, np.ndarray) and items.dtype == np.float32 and items.flags.c_contiguous and case != "NaN item":
        index = recore.ItemIndex(items)
        _assert_same_outcome(lambda q: index.search(q, **options), query, as_batch)


def _assert_same_outcome(search, query, as_batch) -> None:
    """``search(query)`` gives what ``search(as_batch)`` gives for its one row: the same ids and
    scores, or the same exception and message."""
    one = _outcome(lambda: search(query))
    batch = _outcome(lambda: search(as_batch))
    if not isinstance(batch[0], type):
        batch = (batch[0][0], batch[1][0])
    assert type(one[0]) is type(batch[0])
    if isinstance(one[0], type):
        assert one == batch
    else:
        np.testing.assert_array_equal(one[0], batch[0])
        np.testing.assert_array_equal(one[1], batch[1])


@given(seed=seeds, n_users=st.integers(1, 30), n_items=st.integers(1, 60), taken=st.integers(0, 2))
def test_few_taken_rows_are_the_rows_scipy_takes(seed, n_users, n_items, taken):
    """A few users' rows sliced for the CPU engine hold what scipy's row indexing gives, with
    the attributes the engine reads; on the way to another device they become that matrix."""
    rng = np.random.default_rng(seed)
    matrix = sp.random(n_users, n_items, density=0.3, format="csr", dtype=np.float32, random_state=rng)
    matrix.indices, matrix.indptr = matrix.indices.astype(np.int32), matrix.indptr.astype(np.int32)
    rows = rng.integers(0, n_users, size=taken)
    found = _filters.few_taken_rows(matrix, rows, "user_items")
    expected = matrix[rows]
    assert found.format == "csr" and found.has_canonical_format and found.shape == expected.shape
    assert found.nnz == expected.nnz and found.data.shape == found.indices.shape
    as_scipy = found.to_scipy()
    assert isinstance(as_scipy, sp.csr_matrix)
    np.testing.assert_array_equal(as_scipy.toarray() != 0, expected.toarray() != 0)
    np.testing.assert_array_equal(as_scipy.indptr, expected.indptr)
    np.testing.assert_array_equal(as_scipy.indices, expected.indices)
    # Searched on a catalog grown since they were taken (partial_fit_items meanwhile): widened.
    widened = topk_module._widened(found, n_items + 3)
    assert widened.shape == (taken, n_items + 3)
    np.testing.assert_array_equal(widened.toarray()[:, :n_items] != 0, expected.toarray() != 0)


def test_panels_start_on_a_cache_line_after_updates_and_pickling():
    """An index's single-query layouts start on a 64-byte boundary when built, after an
    update that grows the catalog (a copy), and after a pickle round trip."""
    import pickle

    rng = np.random.default_rng(2)
    index = recore.ItemIndex(rng.standard_normal((301, 24), dtype=np.float32))
    query = rng.standard_normal(24, dtype=np.float32)

    def aligned(found):
        return found.ctypes.data % topk_module.PANEL_ALIGNMENT == 0

    index.search(query, 3)
    assert aligned(index.panels()) and aligned(index.bfloat16_panels()[0])
    index.update(np.arange(301, 400), rng.standard_normal((99, 24), dtype=np.float32))
    assert aligned(index.panels()) and aligned(index.bfloat16_panels()[0])
    restored = pickle.loads(pickle.dumps(index))
    assert aligned(restored.panels()) and aligned(restored.bfloat16_panels()[0])
    np.testing.assert_array_equal(restored.search(query, 7)[0], index.search(query, 7)[0])


def test_repeated_single_queries_against_one_array_suggest_an_item_index(monkeypatch):
    """recore.topk keeps nothing, but counts single queries in a row against the same array
    (by identity) and, at the threshold, warns once that an ItemIndex serves them faster; the
    results are the same with or without the warning, and other arrays reset the count."""
    import warnings

    monkeypatch.setattr(topk_module, "REPEATED_SINGLE_QUERIES", 5)
    monkeypatch.setattr(topk_module, "_single_queries", [0, 0])
    rng = np.random.default_rng(4)
    items = rng.standard_normal((50, 6), dtype=np.float32)
    other = items.copy()
    query = rng.standard_normal(6, dtype=np.float32)
    expected = recore.topk(query[None], items, 3)[0][0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: four in a row, then the count restarts
        for array in (items, items, items, items, other, items, items, items, items):
            np.testing.assert_array_equal(recore.topk(query, array, 3)[0], expected)
    with pytest.warns(UserWarning, match="same items for 5 single queries in a row: an ItemIndex"):
        found = recore.topk(query, items, 3)
    np.testing.assert_array_equal(found[0], expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # past the threshold: said once
        recore.topk(query, items, 3)
