"""Updating a fitted model in place: ``partial_fit_users`` / ``partial_fit_items`` on ALS and
SGD, growth by new ids, the serving index kept up to date row by row (``ItemIndex.update``),
and serving from other threads while the model changes.

The promises come from the docstrings of ``recore.als``, ``recore.sgd``, ``recore._recommend``
and ``recore.topk``, and from README.md ("Streaming updates").
"""

from __future__ import annotations

import copy
import threading
import time

import numpy as np
import pytest
import recore
import reference
import scipy.sparse as sp
import sgd_reference
from recore import kernels

N_USERS, N_ITEMS = 240, 150


@pytest.fixture(scope="module")
def user_items():
    return recore.datasets.synthetic(N_USERS, N_ITEMS, 4000, random_state=5)


@pytest.fixture(scope="module")
def ratings():
    return recore.datasets.synthetic_ratings(N_USERS, N_ITEMS, 4000, random_state=6)


def fitted_als(user_items, **options):
    options = {"factors": 8, "iterations": 3, "random_state": 0, "regularization": 0.1, **options}
    return recore.ALS(**options).fit(user_items)


def rows_of(matrix, ids):
    return matrix[np.asarray(ids)]


def twin(model):
    """A model of the same class and hyperparameters holding copies of ``model``'s fitted
    arrays and none of its caches: what serving a freshly prepared index gives."""
    fresh = type(model)(**model.get_params())
    for name in model._fitted_attributes:
        value = getattr(model, name)
        setattr(fresh, name, value.copy() if isinstance(value, np.ndarray) else value)
    fresh.history_, fresh.iterations_completed_ = {}, 0
    return fresh


def assert_serves_like(model, expected, user_items, users, items):
    """Every serving path of ``model`` gives exactly what ``expected`` gives."""
    calls = [
        lambda m: m.recommend(users, user_items, k=7),
        lambda m: m.recommend_all(user_items, k=5),
        lambda m: m.similar_items(items, k=4),
        lambda m: m.similar_users(users, k=4, exclude_self=True),
    ]
    for user in users:  # one query at a time: the panel layouts, float32 and bfloat16
        for precision in ("float32", "bfloat16"):
            calls.append(lambda m, u=user, p=precision: m.recommend(u, user_items, k=6, precision=p))
            calls.append(lambda m, u=user, p=precision: m.recommend(u, k=6, precision=p))
    for call in calls:
        for got, want in zip(call(model), call(expected)):
            np.testing.assert_array_equal(got, want)


def warm_up(model, user_items):
    """Builds every serving cache of ``model``: the update must keep them right."""
    model.recommend(0, user_items, k=3)
    model.recommend(0, user_items, k=3, precision="bfloat16")
    model.recommend_all(user_items, k=3)
    model.similar_items([0], k=3)
    model.similar_users([0], k=3)


# -- ALS: an exact half-step restricted to the given rows -------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(feedback="explicit", dtype="float64", weighted_regularization=True),
        dict(confidence="scaled", alpha=2.0, solver="cholesky"),
    ],
    ids=["implicit", "explicit-float64", "scaled"],
)
def test_als_partial_fit_users_is_one_exact_half_step_on_those_rows(user_items, options):
    model = fitted_als(user_items, **options)
    users = np.array([7, 3, 200, 41])
    rows = rows_of(user_items, users) * 2.0  # new values: the rows really change
    before = model.user_factors_.copy()
    items = model.item_factors_.copy()
    model.partial_fit_users(users, rows)

    objective = model._objective()
    del objective["num_threads"]
    expected = reference.half_step(rows.astype(np.float64), items.astype(np.float64), **objective)
    np.testing.assert_allclose(model.user_factors_[users], expected, rtol=2e-4, atol=2e-5)
    # The engine's own half-step on those rows, Gram matrix and all: the same bits.
    engine = np.zeros((len(users), model.factors), model.user_factors_.dtype)
    gram = kernels.gram_matrix(items) if model.feedback == "implicit" else None
    kernels.als_half_step(rows.astype(items.dtype), items, gram, engine, solver="cholesky", **objective)
    np.testing.assert_array_equal(model.user_factors_[users], engine)
    others = np.setdiff1d(np.arange(N_USERS), users)
    np.testing.assert_array_equal(model.user_factors_[others], before[others])
    np.testing.assert_array_equal(model.item_factors_, items)


def test_als_partial_fit_items_is_one_exact_half_step_on_those_rows(user_items):
    model = fitted_als(user_items)
    item_users = user_items.T.tocsr()
    items = np.array([0, 149, 60])
    users = model.user_factors_.copy()
    before = model.item_factors_.copy()
    model.partial_fit_items(items, rows_of(item_users, items))
    engine = np.zeros((3, model.factors), np.float32)
    kernels.als_half_step(
        rows_of(item_users, items), users, kernels.gram_matrix(users), engine, solver="cholesky",
        regularization=model.regularization, alpha=model.alpha,
    )  # fmt: skip
    np.testing.assert_array_equal(model.item_factors_[items], engine)
    others = np.setdiff1d(np.arange(N_ITEMS), items)
    np.testing.assert_array_equal(model.item_factors_[others], before[others])
    np.testing.assert_array_equal(model.user_factors_, users)


def test_the_fixed_sides_gram_matrix_is_computed_again_after_it_changes(user_items):
    """The cached Gram matrix of the user factors must not outlive a user update."""
    model = fitted_als(user_items)
    item_users = user_items.T.tocsr()
    model.partial_fit_items([4], rows_of(item_users, [4]))  # caches the users' Gram matrix
    model.partial_fit_users([1, 2], rows_of(user_items, [5, 6]))  # changes the users
    model.partial_fit_items([4], rows_of(item_users, [4]))
    expected = np.zeros((1, model.factors), np.float32)
    users = model.user_factors_
    kernels.als_half_step(
        rows_of(item_users, [4]), users, kernels.gram_matrix(users), expected, solver="cholesky",
        regularization=model.regularization, alpha=model.alpha,
    )  # fmt: skip
    np.testing.assert_array_equal(model.item_factors_[4], expected[0])


# -- growth -------------------------------------------------------------------------------------


def test_new_user_ids_grow_the_model_and_keep_every_old_row(user_items):
    model = fitted_als(user_items)
    before = model.user_factors_.copy()
    rows = rows_of(user_items, [10, 11])
    model.partial_fit_users([N_USERS + 3, 5], rows)
    assert model.user_factors_.shape == (N_USERS + 4, model.factors)
    assert model.user_factors_.flags.c_contiguous
    unchanged = np.setdiff1d(np.arange(N_USERS), [5])
    np.testing.assert_array_equal(model.user_factors_[unchanged], before[unchanged])
    np.testing.assert_array_equal(model.user_factors_[N_USERS : N_USERS + 3], 0)  # no interactions yet
    np.testing.assert_array_equal(model.user_factors_[N_USERS + 3], model.fold_in(rows[:1])[0])
    # One at a time: each growth keeps every earlier row, and the spare rows are not copied
    # each time (the matrix stays a view of storage with room).
    grown = model.user_factors_.copy()
    for user in range(N_USERS + 4, N_USERS + 40):
        model.partial_fit_users(user, rows[1:])
    np.testing.assert_array_equal(model.user_factors_[: N_USERS + 4], grown)
    assert model.user_factors_.shape[0] == N_USERS + 40
    assert model.user_factors_.base is not None and model.user_factors_.base.shape[0] > N_USERS + 40


def test_new_item_ids_grow_the_catalog_and_its_serving_index(user_items):
    model = fitted_als(user_items)
    warm_up(model, user_items)
    before = model.item_factors_.copy()
    item_users = user_items.T.tocsr()
    model.partial_fit_items([N_ITEMS + 2], rows_of(item_users, [3]))
    assert model.item_factors_.shape == (N_ITEMS + 3, model.factors)
    np.testing.assert_array_equal(model.item_factors_[:N_ITEMS], before)
    np.testing.assert_array_equal(model.item_factors_[N_ITEMS : N_ITEMS + 2], 0)
    # The users' interactions, made before the catalog grew, are still accepted for
    # partial fits, and a full-width matrix serves the grown catalog.
    model.partial_fit_users([0], rows_of(user_items, [0]))
    wide = sp.hstack([user_items, sp.csr_matrix((N_USERS, 3), dtype=np.float32)]).tocsr()
    assert_serves_like(model, twin(model), wide, [0, 1, 2], [0, N_ITEMS + 2])
    ids, _ = model.recommend(1, wide, k=N_ITEMS + 3)
    assert set(ids.tolist()) >= {N_ITEMS, N_ITEMS + 1, N_ITEMS + 2}


def test_a_grown_model_saves_and_loads(user_items, tmp_path):
    model = fitted_als(user_items)
    model.partial_fit_users([N_USERS + 1], rows_of(user_items, [2]))
    model.partial_fit_items([N_ITEMS], user_items.T.tocsr()[[1]])
    model.save(tmp_path / "grown.npz")
    loaded = recore.load(tmp_path / "grown.npz")
    np.testing.assert_array_equal(loaded.user_factors_, model.user_factors_)
    np.testing.assert_array_equal(loaded.item_factors_, model.item_factors_)
    for grown in (loaded, model):  # the loaded model grows further as the original does
        grown.partial_fit_users([N_USERS + 5], rows_of(user_items, [2]))
    np.testing.assert_array_equal(loaded.user_factors_, model.user_factors_)


# -- serving after an update: the same as a freshly prepared index -----------------------------


@pytest.mark.parametrize("kind", ["als", "sgd-squared", "sgd-bpr"])
def test_after_partial_fits_every_serving_path_equals_a_fresh_index(user_items, ratings, kind):
    if kind == "als":
        data, model = user_items, fitted_als(user_items)
    else:
        loss = "squared" if kind == "sgd-squared" else "bpr"
        data = ratings if loss == "squared" else user_items
        model = recore.SGD(factors=8, loss=loss, iterations=3, random_state=0).fit(data)
    warm_up(model, data)
    item_users = data.T.tocsr()
    # ALS serves item_factors_ itself, which the index never writes: its first update copies.
    model.partial_fit_items([0], rows_of(item_users, [0]))
    warm_up(model, data)
    index = model._item_index()
    version = index._version
    words = version.bfloat16[0]  # the single-query layout the warm-up's searches built
    changed_items = [3, 97, 98, 149]  # three panels, one of them twice
    model.partial_fit_items(changed_items, rows_of(item_users, [10, 11, 12, 13]))
    # Updated in place: the same index, version and panel arrays (no search was under way).
    assert model._item_index() is index and index._version is version and version.bfloat16[0] is words
    model.partial_fit_users([0, 5, 17], rows_of(data, [30, 31, 32]))
    assert_serves_like(model, twin(model), data, [0, 5, 17, 100], changed_items)


# -- ItemIndex.update ---------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["dot", "cosine"])
@pytest.mark.parametrize("busy", [False, True], ids=["in-place", "copy"])
def test_item_index_update_equals_a_fresh_index(metric, busy):
    rng = np.random.default_rng(3)
    items = rng.standard_normal((500, 12), dtype=np.float32)
    original = items.copy()
    index = recore.ItemIndex(items, metric=metric)
    query = rng.standard_normal(12, dtype=np.float32)
    for precision in ("float32", "bfloat16"):
        index.search(query, 5, precision=precision)  # builds both layouts
    ids = np.array([0, 95, 96, 499, 503])  # panel edges, the last panel, and growth past the end
    rows = rng.standard_normal((5, 12), dtype=np.float32) * 3  # a larger norm: the bound must grow
    if busy:
        with index._reading():  # a search under way: the update must not write what it reads
            held = index._version
            held_items = held.items.copy()
            index.update(ids, rows)
        assert index._version is not held
        np.testing.assert_array_equal(held.items, held_items)
    else:
        index.update(ids, rows)
    np.testing.assert_array_equal(items, original)  # the caller's array is never written
    expected_items = np.concatenate([original, np.zeros((4, 12), np.float32)])
    expected_items[ids] = rows
    fresh = recore.ItemIndex(expected_items, metric=metric)
    assert index.n_items == 504
    np.testing.assert_array_equal(index.items, fresh.items)
    np.testing.assert_array_equal(index.panels(), fresh.panels())
    np.testing.assert_array_equal(index.bfloat16_panels()[0], fresh.bfloat16_panels()[0])
    assert index.bfloat16_panels()[1] == fresh.bfloat16_panels()[1]
    queries = rng.standard_normal((6, 12), dtype=np.float32)
    for batch in (queries[:1], queries[:2], queries):
        for precision in ("float32", "bfloat16"):
            got = index.search(batch, 9, precision=precision)
            want = fresh.search(batch, 9, precision=precision)
            for got_part, want_part in zip(got, want):
                np.testing.assert_array_equal(got_part, want_part)


def test_item_index_update_grows_within_spare_rows_in_place():
    rng = np.random.default_rng(4)
    index = recore.ItemIndex(rng.standard_normal((200, 8), dtype=np.float32))
    index.update([200], np.ones((1, 8), np.float32))  # the first update copies: the items were the caller's
    version = index._version
    assert version.capacity > 201
    index.search(np.ones(8, np.float32), 3)
    for item in range(201, version.capacity):
        index.update([item], np.full((1, 8), item, np.float32))
    assert index._version is version and index.n_items == version.capacity
    ids, _ = index.search(np.ones(8, np.float32), 3)
    np.testing.assert_array_equal(ids, [version.capacity - 1, version.capacity - 2, version.capacity - 3])


@pytest.mark.parametrize(
    "ids, vectors, error, match",
    [
        ([1, 1], np.ones((2, 4), np.float32), ValueError, "repeat"),
        ([-1], np.ones((1, 4), np.float32), IndexError, "negative"),
        ([0.5], np.ones((1, 4), np.float32), TypeError, "integer"),
        ([[1]], np.ones((1, 4), np.float32), ValueError, "1-dimensional"),
        ([1], np.ones((1, 3), np.float32), ValueError, "shape"),
        ([1, 2], np.ones((1, 4), np.float32), ValueError, "shape"),
        ([1], np.ones((1, 4)), TypeError, "float32"),
        ([1], np.full((1, 4), np.nan, np.float32), ValueError, "NaN"),
    ],
)
def test_item_index_update_refuses_bad_input_and_changes_nothing(ids, vectors, error, match):
    items = np.arange(40, dtype=np.float32).reshape(10, 4)
    index = recore.ItemIndex(items)
    with pytest.raises(error, match=match):
        index.update(ids, vectors)
    assert index.n_items == 10
    np.testing.assert_array_equal(index.items, np.arange(40, dtype=np.float32).reshape(10, 4))


# -- bad input to a partial fit -------------------------------------------------------------------


@pytest.mark.parametrize("model_class", ["als", "sgd"])
def test_partial_fit_refuses_bad_input_before_changing_anything(user_items, model_class):
    if model_class == "als":
        model = fitted_als(user_items)
    else:
        model = recore.SGD(factors=4, loss="bpr", iterations=1, random_state=0).fit(user_items)
    before = model.user_factors_.copy()
    row = rows_of(user_items, [0])
    cases = [
        (lambda: model.partial_fit_users([1, 1], rows_of(user_items, [0, 1])), ValueError, "user_ids must not repeat"),
        (lambda: model.partial_fit_users([-2], row), IndexError, "user_ids"),
        (lambda: model.partial_fit_users(["a"], row), TypeError, "user_ids"),
        (lambda: model.partial_fit_users([1, 2], row), ValueError, "one row per id"),
        (lambda: model.partial_fit_users([1], sp.csr_matrix((1, N_ITEMS + 1))), ValueError, "partial_fit_items"),
        (lambda: model.partial_fit_users([1], -row), ValueError, "negative"),
        (lambda: model.partial_fit_users([1], "rows"), TypeError, "user_items_rows"),
        (lambda: model.partial_fit_items([1], sp.csr_matrix((1, N_USERS + 1))), ValueError, "partial_fit_users"),
    ]
    if model_class == "sgd":
        cases.append((lambda: model.partial_fit_users([1], row, iterations=-1), ValueError, "iterations"))
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()
    np.testing.assert_array_equal(model.user_factors_, before)
    with pytest.raises(ValueError, match="not fitted"):
        recore.ALS().partial_fit_users([0], row)
    with pytest.raises(ValueError, match="not fitted"):
        recore.SGD().partial_fit_items([0], row)


# -- SGD: epochs over the given rows, the other side fixed -------------------------------------


@pytest.mark.parametrize("factors", [8, 24], ids=["one-speed", "two-speed"])
@pytest.mark.parametrize("side", ["user", "item"])
def test_sgd_partial_fit_runs_the_fits_updates_against_the_fixed_side(ratings, factors, side):
    """The trained rows equal a float64 reference of the same epochs (each rating against a
    fresh copy of its fixed row, in the order the model's seeded generator draws), and the
    fixed side does not move by one bit."""
    model = recore.SGD(factors=factors, iterations=4, random_state=2, num_threads=1).fit(ratings)
    data = ratings if side == "user" else ratings.T.tocsr()
    other = "item" if side == "user" else "user"
    ids = np.array([4, 9, 30])
    rows = rows_of(data, [50, 9, 12])  # ratings of other rows: the rows must move
    fixed = {name: getattr(model, f"{other}_{name}").copy() for name in ("factors_", "biases_")}
    start = {name: getattr(model, f"{side}_{name}")[ids].astype(np.float64) for name in ("factors_", "biases_")}
    sums = getattr(model, f"_{side}_rate_sums")[ids].astype(np.float64)
    slow = 8 if factors > 16 else 0  # the two-speed schedule: 8 slow dimensions
    if not slow:
        sums = sums[:, 0]

    rng = np.random.default_rng(2)  # what the model draws from its random_state for this call
    coo = rows.tocoo()
    order = np.lexsort((coo.col, coo.row))
    row_of, columns, values = coo.row[order], coo.col[order], coo.data[order].astype(np.float64)
    p, bu = start["factors_"].copy(), start["biases_"].copy()
    for _ in range(3):
        visit = rng.permutation(len(values))
        q = fixed["factors_"][columns].astype(np.float64)
        bi = fixed["biases_"][columns].astype(np.float64)
        gi = np.ones((len(values), 2)) if slow else np.ones(len(values))
        sgd_reference.squared_epoch(
            row_of[visit], visit, values[visit], p, q, bu, bi, model.global_bias_, sums, gi,
            eta=model.learning_rate, lam=model.regularization, lam_b=model.bias_regularization,
            biases=True, adaptive=True, slow=slow,
        )  # fmt: skip

    getattr(model, f"partial_fit_{side}s")(ids, rows, iterations=3)
    np.testing.assert_allclose(getattr(model, f"{side}_factors_")[ids], p, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(getattr(model, f"{side}_biases_")[ids], bu, rtol=1e-4, atol=1e-5)
    trained_sums = getattr(model, f"_{side}_rate_sums")[ids]
    np.testing.assert_allclose(trained_sums if slow else trained_sums[:, 0], sums, rtol=1e-4)
    for name, value in fixed.items():
        np.testing.assert_array_equal(getattr(model, f"{other}_{name}"), value)


def test_sgd_partial_fit_of_new_users_predicts_their_held_out_ratings():
    """Users left out of the fit (planted rank-16 ratings), added by partial_fit_users from
    three quarters of their ratings, predict the rest better than they do untrained (the
    item biases alone) and about as well as the fit predicts its own users'."""
    ratings = recore.datasets.synthetic_ratings(1000, 300, 40_000, random_state=6)
    coo = ratings.tocoo()
    held_out = np.random.default_rng(0).random(coo.nnz) < 0.25
    train = sp.csr_matrix((coo.data[~held_out], (coo.row[~held_out], coo.col[~held_out])), shape=ratings.shape)
    old, new = np.arange(900), np.arange(900, 1000)
    model = recore.SGD(factors=16, iterations=20, random_state=0, num_threads=1).fit(train[:900])
    untrained = copy.deepcopy(model).partial_fit_users(new, train[900:], iterations=0)  # zero factors and biases
    model.partial_fit_users(new, train[900:])
    assert model.user_factors_.shape[0] == 1000 and model._user_rate_sums.shape == (1000, 1)

    def rmse(fitted, users):
        pick = held_out & np.isin(coo.row, users)
        errors = fitted.predict(coo.row[pick], coo.col[pick]) - coo.data[pick]
        return float(np.sqrt(np.mean(errors**2)))

    assert rmse(model, new) < rmse(untrained, new) - 0.02
    assert rmse(model, new) < 1.02 * rmse(model, old)


def test_sgd_bpr_partial_fit_ranks_the_new_users_positives_higher():
    data = recore.datasets.synthetic_preferences(1000, 300, 20_000, rank=8, random_state=1)
    model = recore.SGD(factors=16, loss="bpr", iterations=30, random_state=0, num_threads=1).fit(data[:900])
    items_before, biases_before = model.item_factors_.copy(), model.item_biases_.copy()
    untrained = copy.deepcopy(model).partial_fit_users(np.arange(900, 1000), data[900:], iterations=0)
    model.partial_fit_users(np.arange(900, 1000), data[900:], iterations=30)
    np.testing.assert_array_equal(model.item_factors_, items_before)
    np.testing.assert_array_equal(model.item_biases_, biases_before)

    def auc(fitted, users):
        """The mean AUC of users' scores over their own positives."""
        scores = fitted.predict(np.repeat(users, 300), np.tile(np.arange(300), len(users))).reshape(len(users), -1)
        positives = data[users].toarray() > 0
        return np.mean([np.mean(row[mask][:, None] > row[~mask][None, :]) for row, mask in zip(scores, positives)])

    new, old = np.arange(900, 1000), np.arange(100)
    assert auc(model, new) > auc(untrained, new) + 0.01
    assert auc(model, new) > auc(model, old) - 0.02
    # Items too: an item's factors and bias move, the users' do not.
    users_before = model.user_factors_.copy()
    model.partial_fit_items([5, 300], data.T.tocsr()[[6, 7]])
    np.testing.assert_array_equal(model.user_factors_, users_before)
    assert model.item_factors_.shape[0] == 301 and model.item_biases_.shape[0] == 301
    assert not np.array_equal(model.item_factors_[5], items_before[5])
    assert model.item_biases_[5] != biases_before[5]


def test_sgd_rate_sums_are_saved_and_files_without_them_still_load(ratings, tmp_path):
    model = recore.SGD(factors=24, iterations=3, random_state=0).fit(ratings)
    model.partial_fit_users([N_USERS + 2], rows_of(ratings, [3]))
    model.save(tmp_path / "sgd.npz")
    loaded = recore.load(tmp_path / "sgd.npz")
    np.testing.assert_array_equal(loaded._user_rate_sums, model._user_rate_sums)
    np.testing.assert_array_equal(loaded._item_rate_sums, model._item_rate_sums)
    assert loaded._user_rate_sums.shape == (N_USERS + 3, 2)
    # A file of an earlier release has no sums: every row starts again from 1.
    with np.load(tmp_path / "sgd.npz", allow_pickle=False) as archive:
        fitted = {k[len("fitted__") :]: archive[k] for k in archive.files if k.startswith("fitted__")}
    for side in ("user", "item"):
        fitted.pop(f"training.{side}_rate_sums")
    old = recore.SGD(**model.get_params())
    old._restore_fitted_state(fitted)
    np.testing.assert_array_equal(old._user_rate_sums, 1)
    with pytest.raises(ValueError, match="rate sums"):
        bad = dict(fitted, **{"training.user_rate_sums": np.ones((2, 2), np.float32)})
        recore.SGD(**model.get_params())._restore_fitted_state(bad)


# -- serving from other threads while the model changes ---------------------------------------


def hammer(model, calls, update, rounds, *, results=100, seconds=20.0):
    """Runs ``calls`` in four threads over and over while ``update(round)`` runs in this one,
    ``rounds`` times and until the threads have ``results`` results (or ``seconds`` passed);
    returns every (call, result) seen."""
    seen, errors, done = [], [], threading.Event()

    def serve(offset):
        step = offset
        try:
            while not done.is_set():
                call = calls[step % len(calls)]
                seen.append((call, call(model)))
                step += 3
        except Exception as error:  # noqa: BLE001 - reported below, in the main thread
            errors.append(error)

    threads = [threading.Thread(target=serve, args=(offset,)) for offset in range(4)]
    for thread in threads:
        thread.start()
    deadline, round_ = time.monotonic() + seconds, 0
    try:
        while round_ < rounds or (len(seen) < results and time.monotonic() < deadline):
            update(round_)
            round_ += 1
    finally:
        done.set()
        for thread in threads:
            thread.join()
    assert not errors, errors
    assert len(seen) >= results, f"the serving threads got {len(seen)} results while the model changed"
    return seen


def assert_each_row_from_one_model(seen, expected_by_state):
    """Every row of every result equals that row of some state's result (old or new),
    never a mix of the two."""
    for call, (ids, scores) in seen:
        ids, scores = np.atleast_2d(ids), np.atleast_2d(scores)
        for row in range(ids.shape[0]):
            matches = [
                np.array_equal(ids[row], np.atleast_2d(want[0])[row])
                and np.array_equal(scores[row], np.atleast_2d(want[1])[row])
                for want in (expected[call] for expected in expected_by_state)
            ]
            assert any(matches), f"row {row} of a result matches no model state"


def serving_calls(user_items, users):
    calls = [lambda m, u=u: m.recommend(u, user_items, k=8) for u in users]
    calls += [lambda m, u=u: m.recommend(u, user_items, k=8, precision="bfloat16") for u in users]
    calls += [lambda m: m.recommend(users, user_items, k=8), lambda m: m.recommend_all(user_items, k=8)]
    return calls


def test_recommend_in_threads_sees_the_old_or_the_new_items_never_a_mix(user_items):
    model = fitted_als(user_items, factors=16)
    item_users = user_items.T.tocsr()
    everything = np.arange(N_ITEMS)
    shuffled = item_users[:, np.random.default_rng(1).permutation(N_USERS)]  # a very different catalog
    states = []
    for rows in (item_users, shuffled):
        model.partial_fit_items(everything, rows)
        states.append(twin(model))
    users = [0, 1, 2, 3, 50, 99]
    calls = serving_calls(user_items, users)
    expected = [{call: call(state) for call in calls} for state in states]
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(expected[0].values(), expected[1].values()))

    seen = hammer(model, calls, lambda i: model.partial_fit_items(everything, (item_users, shuffled)[i % 2]), 60)
    assert_each_row_from_one_model(seen, expected)


def test_recommend_in_threads_sees_the_old_or_the_new_user_rows_never_a_mix(user_items):
    model = fitted_als(user_items, factors=16)
    users = np.arange(0, N_USERS, 9)
    versions = (rows_of(user_items, users), rows_of(user_items, (users + 1) % N_USERS))
    states = []
    for rows in versions:
        model.partial_fit_users(users, rows)
        states.append(twin(model))
    calls = serving_calls(user_items, users[:6].tolist())
    calls += [lambda m: m.similar_users(users[:6], k=5)]
    expected = [{call: call(state) for call in calls} for state in states]
    seen = hammer(model, calls, lambda i: model.partial_fit_users(users, versions[i % 2]), 200)
    assert_each_row_from_one_model(seen, expected)


def test_item_index_searches_in_threads_read_one_version(user_items):
    rng = np.random.default_rng(8)
    catalogs = [rng.standard_normal((700, 16), dtype=np.float32) for _ in range(2)]
    index = recore.ItemIndex(catalogs[0].copy())
    queries = rng.standard_normal((5, 16), dtype=np.float32)
    calls = [lambda i, q=q, p=p: i.search(q, 6, precision=p) for q in queries for p in ("float32", "bfloat16")]
    calls.append(lambda i: i.search(queries, 6))
    expected = [{call: call(recore.ItemIndex(catalog)) for call in calls} for catalog in catalogs]
    everything = np.arange(700)
    seen = hammer(index, calls, lambda i: index.update(everything, catalogs[(i + 1) % 2]), 80)
    assert_each_row_from_one_model(seen, expected)
