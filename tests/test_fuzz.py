"""Every public entry point, fed arguments that are each either valid or broken in one of many
ways (wrong types, dtypes, shapes, strides, empty, NaN/inf, negative and huge ids,
non-canonical sparse matrices, absurd hyperparameters): each call either works or raises
TypeError, ValueError or IndexError whose message names the argument. A crash would end the
test process.

``pytest -m fuzz`` runs only these; ``HYPOTHESIS_PROFILE=fuzz pytest -m fuzz`` runs 5,000
examples per entry point. A new public function joins by adding a test here.
"""

from __future__ import annotations

import numpy as np
import pytest
import recore
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from recore import kernels

pytestmark = pytest.mark.fuzz

ALLOWED = (TypeError, ValueError, IndexError)

N_USERS, N_ITEMS, FACTORS = 7, 5, 3


def assert_handled(call, names):
    """``call()`` works, or fails with an allowed error whose message names an argument."""
    try:
        return call()
    except ALLOWED as error:
        message = str(error)
        assert any(name in message for name in names), f"{type(error).__name__}: {message!r} names none of {names}"
        return None


# -- values that may be right or wrong -------------------------------------------------------

junk = st.sampled_from(
    [None, "", "text", b"bytes", [], [[1.0]], {}, object(), 1j, float("nan"), float("inf"), -1, 0, 2**63, True]
)
value_dtypes = st.sampled_from([np.float32, np.float64, np.int32, np.int64, np.bool_, np.complex64, np.uint8])


@st.composite
def arrays(draw, shape):
    """An array of ``shape`` (or a near miss) with any dtype, layout and special values."""
    if draw(st.integers(0, 4)) == 0:  # a wrong shape
        shape = draw(st.sampled_from([(), (0,), (shape[0],), (0, shape[-1]), (shape[0], shape[-1] + 1), (2, 2, 2)]))
    dtype = draw(st.sampled_from([np.float32] * 4 + [np.float64, np.int64, np.float16, np.complex64, np.bool_]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    values = rng.standard_normal(shape).astype(dtype) if len(shape) else np.array(1.0, dtype)
    special = draw(st.sampled_from([None, None, None, np.nan, np.inf, -np.inf, 1e38]))
    if special is not None and values.ndim and values.size and values.dtype.kind in "fc":
        with np.errstate(over="ignore"):
            values[np.unravel_index(draw(st.integers(0, values.size - 1)), values.shape)] = special
    layout = draw(st.sampled_from(["c", "c", "c", "fortran", "strided", "readonly"]))
    if layout == "fortran":
        values = np.asfortranarray(values)
    elif layout == "strided" and values.ndim == 2:
        values = np.repeat(values, 2, axis=1)[:, ::2]
    elif layout == "readonly":
        values.setflags(write=False)
    return values


@st.composite
def interaction_matrices(draw, shape=(N_USERS, N_ITEMS)):
    """Sparse interactions, canonical or not, in any format; or something else entirely."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(junk)
    if kind == 1:
        return draw(arrays(shape))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    rows, cols = shape if draw(st.integers(0, 5)) else draw(st.sampled_from([(0, 0), (1, 1), (shape[0], 0)]))
    nnz = draw(st.integers(0, 12))
    row = rng.integers(0, max(rows, 1), nnz)
    col = rng.integers(0, max(cols, 1), nnz)
    data = rng.uniform(-1 if draw(st.booleans()) else 0, 5, nnz).astype(draw(value_dtypes))
    if nnz and data.dtype.kind != "c" and draw(st.integers(0, 4)) == 0:
        data = data.astype(np.float64)
        data[0] = draw(st.sampled_from([np.nan, np.inf, 0.0, 1e300]))
    if rows == 0 or cols == 0:
        row = col = data = np.array([], dtype=np.int64)
    matrix = sp.coo_matrix((data, (row, col)), shape=(rows, cols))  # duplicates kept
    fmt = draw(st.sampled_from(["coo", "csr", "csc", "lil", "dok"]))
    matrix = matrix.asformat(fmt)
    if fmt == "csr" and draw(st.booleans()) and matrix.nnz > 1:
        # unsorted indices, duplicates, explicit zeros; sometimes an out-of-range index
        matrix = sp.csr_matrix((data, col.astype(np.int32), np.r_[0, np.cumsum(np.bincount(row, minlength=rows))]))
        if draw(st.integers(0, 3)) == 0:
            matrix.indices[0] = draw(st.sampled_from([-1, cols, 2**31 - 1]))
    if fmt == "csr" and draw(st.integers(0, 3)) == 0:
        matrix.indices, matrix.indptr = matrix.indices.astype(np.int64), matrix.indptr.astype(np.int64)
    return matrix


ids = st.one_of(
    st.integers(-3, 10),
    st.sampled_from([2**31, 2**63 - 1, -(2**40)]),
    st.lists(st.integers(-2, 9), max_size=6),
    st.just(np.array([0.5])),
    st.just(np.array([[0, 1]])),
    junk,
)
ks = st.one_of(st.integers(-2, 12), st.sampled_from([2**40, 2.5, "10", None, np.int64(3)]))
threads = st.one_of(st.integers(-1, 3), st.sampled_from([2.0, None, "2"]))
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**63), 2**63), junk, st.just(np.float32(0.1))
)


@pytest.fixture(scope="module")
def fitted():
    data = sp.random(N_USERS, N_ITEMS, density=0.5, format="csr", random_state=0, dtype=np.float32)
    return recore.ALS(factors=FACTORS, iterations=2, random_state=0).fit(data)


# -- estimators -------------------------------------------------------------------------------


@given(
    factors=st.one_of(st.integers(-2, 5), junk),
    regularization=numbers,
    alpha=numbers,
    iterations=st.one_of(st.integers(-2, 3), junk),
    solver=st.sampled_from(["cg", "cholesky", "lu", None, 3]),
    cg_steps=st.one_of(st.integers(-1, 4), junk),
    feedback=st.sampled_from(["implicit", "explicit", "other", None]),
    confidence=st.sampled_from(["linear", "scaled", "log", 1]),
    weighted=st.sampled_from([True, False, 1, None]),
    dtype=st.sampled_from(["float32", "float64", np.float32, "int8", "nonsense", None, float]),
    num_threads=threads,
    random_state=st.one_of(st.integers(-1, 5), junk),
)
def test_als_constructor(
    factors, regularization, alpha, iterations, solver, cg_steps, feedback, confidence, weighted, dtype, num_threads,
    random_state,
):  # fmt: skip
    names = [
        "factors", "regularization", "alpha", "iterations", "solver", "cg_steps", "feedback", "confidence",
        "weighted_regularization", "dtype", "num_threads", "random_state",
    ]  # fmt: skip
    assert_handled(
        lambda: recore.ALS(
            factors=factors, regularization=regularization, alpha=alpha, iterations=iterations, solver=solver,
            cg_steps=cg_steps, feedback=feedback, confidence=confidence, weighted_regularization=weighted,
            dtype=dtype, num_threads=num_threads, random_state=random_state,
        ),
        names,
    )  # fmt: skip


@given(
    matrix=interaction_matrices(),
    solver=st.sampled_from(["cg", "cholesky"]),
    feedback=st.sampled_from(["implicit", "explicit"]),
)
def test_als_fit(matrix, solver, feedback):
    model = recore.ALS(factors=2, iterations=1, solver=solver, feedback=feedback, random_state=0)
    result = assert_handled(lambda: model.fit(matrix), ["user_items"])
    if result is not None:
        assert np.isfinite(model.user_factors_).all() and np.isfinite(model.item_factors_).all()


@given(users=ids, items=ids)
def test_predict(fitted, users, items):
    assert_handled(lambda: fitted.predict(users, items), ["users", "items"])


@given(
    users=ids,
    user_items=st.one_of(st.none(), interaction_matrices(), interaction_matrices((2, N_ITEMS))),
    k=ks,
    exclude_seen=st.sampled_from([True, False, None, 1]),
    deny=st.one_of(st.none(), ids),
    allow=st.one_of(st.none(), ids),
    layout=st.sampled_from([None, "full", "per_query", "rows", 3]),
    num_threads=threads,
    precision=st.sampled_from(["float32", "bfloat16", "half", None]),
)
def test_recommend(fitted, users, user_items, k, exclude_seen, deny, allow, layout, num_threads, precision):
    assert_handled(
        lambda: fitted.recommend(
            users, user_items, k, exclude_seen=exclude_seen, deny=deny, allow=allow, user_items_layout=layout,
            num_threads=num_threads, precision=precision,
        ),
        ["users", "user_items", "k", "exclude_seen", "deny", "allow", "user_items_layout", "num_threads", "precision"],
    )  # fmt: skip


@given(ids=ids, k=ks, exclude_self=st.sampled_from([True, False, "yes"]), which=st.sampled_from(["items", "users"]))
def test_similar(fitted, ids, k, exclude_self, which):
    method = fitted.similar_items if which == "items" else fitted.similar_users
    assert_handled(lambda: method(ids, k, exclude_self=exclude_self), [which, "k", "exclude_self"])


@given(rows=interaction_matrices((2, N_ITEMS)))
def test_fold_in(fitted, rows):
    result = assert_handled(lambda: fitted.fold_in(rows), ["user_items_rows"])
    if result is not None:
        assert np.isfinite(result).all()


@given(vectors=arrays((2, FACTORS)), rows=st.one_of(st.none(), interaction_matrices((2, N_ITEMS))), k=ks)
def test_recommend_vectors(fitted, vectors, rows, k):
    assert_handled(lambda: fitted.recommend_vectors(vectors, rows, k), ["user_vectors", "exclude", "k"])


@given(matrix=interaction_matrices())
def test_loss(fitted, matrix):
    assert_handled(lambda: fitted.loss(matrix), ["user_items"])


# -- top-k ------------------------------------------------------------------------------------


@given(
    queries=arrays((4, FACTORS)),
    items=arrays((6, FACTORS)),
    k=ks,
    metric=st.sampled_from(["dot", "cosine", "l2", None]),
    exclude=st.one_of(st.none(), interaction_matrices((4, 6))),
    allow=st.one_of(st.none(), ids),
    deny=st.one_of(st.none(), ids),
    precision=st.sampled_from(["float32", "bfloat16", 16]),
    num_threads=threads,
    check_finite=st.sampled_from([True, False, "no"]),
)
def test_topk(queries, items, k, metric, exclude, allow, deny, precision, num_threads, check_finite):
    names = ["queries", "items", "k", "metric", "exclude", "allow", "deny", "precision", "num_threads", "check_finite"]
    result = assert_handled(
        lambda: recore.topk(
            queries, items, k, metric=metric, exclude=exclude, allow=allow, deny=deny, precision=precision,
            num_threads=num_threads, check_finite=check_finite,
        ),
        names,
    )  # fmt: skip
    if result is not None and check_finite is True:
        found, scores = result
        valid = found >= 0
        assert np.all(found[valid] < items.shape[0]) and not np.isnan(scores[valid]).any()


@given(items=arrays((6, FACTORS)), query=arrays((1, FACTORS)), k=ks, precision=st.sampled_from(["float32", "bfloat16"]))
def test_item_index(items, query, k, precision):
    index = assert_handled(lambda: recore.ItemIndex(items), ["items"])
    if index is not None:
        assert_handled(lambda: index.search(query, k, precision=precision), ["queries", "k", "precision"])


# -- kernels ----------------------------------------------------------------------------------


@given(
    matrix=interaction_matrices(),
    fixed=arrays((N_ITEMS, FACTORS)),
    target=arrays((N_USERS, FACTORS)),
    gram=st.one_of(st.none(), arrays((FACTORS, FACTORS))),
    solver=st.sampled_from(["cg", "cholesky", "qr"]),
    regularization=numbers,
)
def test_als_half_step(matrix, fixed, target, gram, solver, regularization):
    assert_handled(
        lambda: kernels.als_half_step(matrix, fixed, gram, target, regularization=regularization, solver=solver),
        ["user_items", "fixed_factors", "fixed_gram", "target_factors", "solver", "regularization"],
    )


@given(factors=arrays((5, FACTORS)), num_threads=threads)
def test_gram_matrix(factors, num_threads):
    assert_handled(lambda: kernels.gram_matrix(factors, num_threads=num_threads), ["factors", "num_threads"])


@given(n_rows=st.one_of(st.integers(-2, 2**63 - 1), junk), factors=st.one_of(st.integers(-2, 1000), junk))
def test_gram_chunk_bounds(n_rows, factors):
    assert_handled(lambda: kernels.gram_chunk_bounds(n_rows, factors), ["n_rows", "factors"])


@given(
    factors=arrays((5, FACTORS)),
    chunk_bounds=st.one_of(junk, st.lists(st.integers(-3, 8), max_size=4), arrays((3,))),
    num_threads=threads,
)
def test_gram_partials(factors, chunk_bounds, num_threads):
    assert_handled(
        lambda: kernels.gram_partials(factors, chunk_bounds, num_threads=num_threads),
        ["factors", "chunk_bounds", "num_threads"],
    )


@given(partials=st.one_of(junk, arrays((2, FACTORS, FACTORS)), arrays((FACTORS, FACTORS))))
def test_gram_fold(partials):
    assert_handled(lambda: kernels.gram_fold(partials), ["partials"])


@given(
    matrix=interaction_matrices(),
    users=arrays((N_USERS, FACTORS)),
    items=arrays((N_ITEMS, FACTORS)),
    regularization=numbers,
)
def test_als_loss(matrix, users, items, regularization):
    assert_handled(
        lambda: kernels.als_loss(matrix, users, items, regularization=regularization),
        ["user_items", "user_factors", "item_factors", "regularization", "item_gram"],
    )


@given(
    n_users=st.one_of(st.integers(-1, 30), junk),
    n_items=st.one_of(st.integers(-1, 30), junk),
    nnz=st.one_of(st.integers(-1, 200), st.just(2**62), junk),
    random_state=st.one_of(st.integers(-1, 3), junk),
)
def test_synthetic(n_users, n_items, nnz, random_state):
    assert_handled(
        lambda: recore.datasets.synthetic(n_users, n_items, nnz, random_state=random_state),
        ["n_users", "n_items", "nnz", "random_state"],
    )


# -- SGD --------------------------------------------------------------------------------------


@given(
    factors=st.one_of(st.integers(-2, 40), junk),
    loss=st.sampled_from(["squared", "bpr", "hinge", None]),
    epochs=st.one_of(st.integers(-2, 3), junk),
    learning_rate=numbers,
    regularization=numbers,
    schedule=st.sampled_from(["adaptive", "constant", "cosine", 1]),
    negatives=st.sampled_from(["uniform", "popularity", "hard"]),
    biases=st.sampled_from([True, False, None]),
    blocks=st.one_of(st.integers(-1, 4), junk),
)
def test_sgd_constructor(factors, loss, epochs, learning_rate, regularization, schedule, negatives, biases, blocks):
    names = [
        "factors",
        "loss",
        "iterations",
        "learning_rate",
        "regularization",
        "schedule",
        "negatives",
        "biases",
        "blocks",
    ]
    assert_handled(
        lambda: recore.SGD(
            factors=factors, loss=loss, iterations=epochs, learning_rate=learning_rate, regularization=regularization,
            schedule=schedule, negatives=negatives, biases=biases, blocks=blocks,
        ),
        names,
    )  # fmt: skip


@given(
    matrix=interaction_matrices(),
    validation=st.one_of(st.none(), interaction_matrices(), interaction_matrices((N_USERS + 2, N_ITEMS))),
    loss=st.sampled_from(["squared", "bpr"]),
    schedule=st.sampled_from(["adaptive", "constant"]),
    factors=st.sampled_from([1, 17]),
)
def test_sgd_fit(matrix, validation, loss, schedule, factors):
    model = recore.SGD(factors=factors, iterations=2, loss=loss, schedule=schedule, random_state=0)
    result = assert_handled(lambda: model.fit(matrix, validation=validation), ["user_items", "validation"])
    if result is not None:
        assert np.isfinite(model.user_factors_).all() and np.isfinite(model.item_factors_).all()


@pytest.fixture(scope="module")
def fitted_sgd():
    data = sp.random(N_USERS, N_ITEMS, density=0.5, format="csr", random_state=0, dtype=np.float32) * 5
    return recore.SGD(factors=FACTORS, iterations=2, random_state=0).fit(data)


@given(users=ids, items=ids, k=ks)
def test_sgd_predict_and_recommend(fitted_sgd, users, items, k):
    assert_handled(lambda: fitted_sgd.predict(users, items), ["users", "items"])
    assert_handled(lambda: fitted_sgd.recommend(users, k=k), ["users", "k"])


# -- evaluation -------------------------------------------------------------------------------


@given(
    ids=st.one_of(arrays((N_USERS, 4)), st.just(np.array([[0, 1, -1, 9]] * N_USERS)), junk),
    test=interaction_matrices(),
    train=st.one_of(st.none(), interaction_matrices()),
)
def test_ranking_metrics_at_k(ids, test, train):
    assert_handled(
        lambda: recore.evaluation.ranking_metrics_at_k(ids, test, train=train), ["ids", "test", "train", "k >= 1"]
    )


@given(
    matrix=interaction_matrices(),
    fraction=numbers,
    k=st.one_of(st.integers(-1, 3), junk),
    random_state=st.one_of(st.integers(-1, 3), junk),
)
def test_splits(matrix, fraction, k, random_state):
    assert_handled(
        lambda: recore.evaluation.random_split(matrix, fraction, random_state=random_state),
        ["matrix", "test_fraction", "random_state"],
    )
    assert_handled(
        lambda: recore.evaluation.leave_k_out(matrix, k, random_state=random_state), ["matrix", "k", "random_state"]
    )


@given(
    matrix=interaction_matrices(),
    held_out=st.one_of(st.integers(-1, 8), st.floats(-0.5, 1.5), st.just(float("nan")), junk),
    fold_in_fraction=numbers,
    random_state=st.one_of(st.integers(-1, 3), junk),
)
def test_held_out_users_split(matrix, held_out, fold_in_fraction, random_state):
    assert_handled(
        lambda: recore.evaluation.held_out_users_split(
            matrix, held_out, fold_in_fraction=fold_in_fraction, random_state=random_state
        ),
        ["user_items", "held_out_users", "fold_in_fraction", "random_state"],
    )


@given(
    fold_in=interaction_matrices(),
    test=interaction_matrices(),
    k=st.one_of(ks, st.lists(st.integers(-1, 12), max_size=3)),
    num_threads=st.one_of(st.none(), threads),
)
def test_fold_in_metrics(fitted, fold_in, test, k, num_threads):
    assert_handled(
        lambda: recore.evaluation.fold_in_metrics(fitted, fold_in, test, k, num_threads=num_threads),
        ["model", "fold_in", "test", "k", "num_threads", "user_items_rows", "user_vectors"],
    )


@given(
    space=st.one_of(
        junk,
        st.dictionaries(st.sampled_from(["factors", "regularization", "nonsense"]), st.one_of(junk, st.just([2, 3])),
                        max_size=2),
    ),
    n_trials=st.one_of(st.none(), st.integers(-1, 2), junk),
    budget_seconds=st.one_of(st.none(), numbers),
    metric=st.sampled_from(["ndcg", "precision", "rmse", 3]),
    k=st.one_of(ks, junk),
)
def test_tune(space, n_trials, budget_seconds, metric, k):
    train = recore.datasets.synthetic(N_USERS, N_ITEMS, 20, random_state=0)
    assert_handled(
        lambda: recore.evaluation.tune(
            lambda **params: recore.ALS(factors=2, iterations=1, random_state=0, **params), train, train, space,
            n_trials=n_trials if n_trials is not None or budget_seconds is not None else 1,
            budget_seconds=budget_seconds, random_state=0, metric=metric, k=k,
        ),
        ["make_model", "space", "n_trials", "budget_seconds", "metric", "k", "factors", "regularization", "nonsense"],
    )  # fmt: skip


@given(
    n_users=st.one_of(st.integers(-1, 30), junk),
    n_items=st.one_of(st.integers(-1, 30), junk),
    nnz=st.one_of(st.integers(-1, 200), junk),
    rank=st.one_of(st.integers(-1, 5), junk),
    random_state=st.one_of(st.integers(-1, 3), junk),
)
def test_synthetic_preferences(n_users, n_items, nnz, rank, random_state):
    assert_handled(
        lambda: recore.datasets.synthetic_preferences(n_users, n_items, nnz, rank=rank, random_state=random_state),
        ["n_users", "n_items", "nnz", "rank", "random_state"],
    )


# -- data ---------------------------------------------------------------------------------------


@given(
    users=st.one_of(st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=2)), max_size=8), arrays((6,)), junk),
    items=st.one_of(st.lists(st.integers(-(2**40), 2**40), max_size=8), arrays((6,)), junk),
    values=st.one_of(st.none(), arrays((6,)), junk),
    duplicates=st.sampled_from(["sum", "error", "max"]),
)
def test_interactions(users, items, values, duplicates):
    assert_handled(
        lambda: recore.Interactions(users, items, values, duplicates=duplicates),
        ["users", "items", "values", "duplicates", "same length"],
    )


@pytest.fixture(scope="module")
def empty_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("empty-cache"))


@given(variant=st.one_of(st.sampled_from(["100k", "10g", ""]), junk), download=st.sampled_from([False, "no", None]))
def test_movielens_arguments(variant, download, empty_cache):
    import os

    previous = os.environ.get("RECORE_DATA")
    os.environ["RECORE_DATA"] = empty_cache
    try:
        assert_handled(lambda: recore.datasets.movielens(variant, download=download), ["variant", "download"])
    except recore.datasets.DatasetError as error:  # a valid request for an absent archive, no download
        assert "download" in str(error)
    finally:
        if previous is None:
            del os.environ["RECORE_DATA"]
        else:
            os.environ["RECORE_DATA"] = previous
