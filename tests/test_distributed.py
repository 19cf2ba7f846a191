"""recore.distributed on a local Dask cluster of 2 worker processes, against single-machine
recore (itself tested against the numpy references): ALS factors, all-users top-k, inputs
from Dask collections and Parquet, argument checks, and workers killed mid-fit (between
iterations, and in the middle of a running task)."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
import recore
import scipy.sparse as sp

distributed = pytest.importorskip("dask.distributed")
from recore.distributed import ALS, WorkerLostError, merge_topk, recommend_all  # noqa: E402
from recore import kernels  # noqa: E402
from recore.distributed._cluster import gram_partials, solve_shard  # noqa: E402
from recore.distributed._inputs import shard_bounds  # noqa: E402


def local_cluster():
    # ":0": any free port, so that two clusters (or a developer's own) never collide.
    return distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=40
    )


@pytest.fixture(scope="module")
def client():
    # Not the default client, so that a fit without client= can be seen to fail; tests that
    # want the current-client path enter client.as_current().
    with local_cluster() as cluster, distributed.Client(cluster, set_as_default=False) as client:
        yield client


def interactions(seed: int, shape=(60, 40), density=0.15):
    rng = np.random.default_rng(seed)
    matrix = sp.random(*shape, density=density, format="csr", dtype=np.float32, random_state=rng)
    matrix.data = (matrix.data * 4 + 1).astype(np.float32)
    return matrix


def assert_same_factors(distributed_model, single_model):
    np.testing.assert_array_equal(np.asarray(distributed_model.user_factors_), single_model.user_factors_)
    np.testing.assert_array_equal(distributed_model.item_factors_, single_model.item_factors_)


# -- ALS equals single-machine ALS ----------------------------------------------------------------


# Random cases drawn from numpy seeds rather than hypothesis strategies: the client's event
# loop thread uses the random module, which hypothesis takes for a strategy doing so.
CASES = range(8)


@pytest.mark.parametrize("case", CASES)
def test_factors_bitwise_equal_to_single_machine(client, case):
    rng = np.random.default_rng(case)
    shape = (int(rng.integers(1, 41)), int(rng.integers(1, 31)))
    matrix = interactions(case, shape=shape, density=float(rng.choice([0.0, 0.1, 0.5, 1.0])))
    options = dict(
        factors=5, iterations=3, regularization=0.1, alpha=2.0, solver=str(rng.choice(["cg", "cholesky"])),
        feedback=str(rng.choice(["implicit", "explicit"])), weighted_regularization=bool(rng.integers(2)),
        dtype=str(rng.choice(["float32", "float64"])), random_state=int(rng.integers(2**31)),
    )  # fmt: skip
    # iALS in half the cases: the subspace solver, an unobserved weight, frequency-scaled
    # regularization (each row's lambda from the whole matrix, not its shard).
    if case % 2:
        options.update(solver="subspace", block_size=2)
        if options["feedback"] == "implicit":
            options["unobserved_weight"] = 0.3
        if not options["weighted_regularization"]:
            options["regularization_exponent"] = 0.8
    num_shards = [None, 1, 3, 5][case % 4]
    # "driver" cuts shards at any row; "workers" on Gram chunks (one below 512 rows).
    gram = ["workers", "driver"][case // 2 % 2]
    single = recore.ALS(**options).fit(matrix)
    spread = ALS(num_shards=num_shards, gram=gram, **options).fit(matrix, client=client)
    assert_same_factors(spread, single)
    assert spread.recoveries_ == 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("num_shards", [2, 3])
def test_gram_from_worker_pieces_is_bitwise(client, dtype, num_shards):
    # 1300 users and 1100 items: three Gram chunks a side, so that every shard sends the
    # partials of one or more chunks and the driver folds pieces from both workers.
    matrix = recore.datasets.synthetic(1300, 1100, 15000, random_state=1)
    options = dict(factors=8, iterations=3, regularization=0.05, random_state=4, dtype=dtype)
    single = recore.ALS(**options).fit(matrix)
    with distributed.get_task_stream(client=client) as tasks:
        spread = ALS(gram="workers", num_shards=num_shards, **options).fit(matrix, client=client)
    assert_same_factors(spread, single)
    assert any(str(task["key"]).startswith("gram_partials") for task in tasks.data)  # the pieces were used
    # Pieces summed at the shards' own bounds would not do: the chunk-aligned fold is needed.
    items = single.item_factors_
    bounds = shard_bounds(sp.csr_matrix(matrix.T).indptr, num_shards, None)
    per_shard = sum(kernels.gram_matrix(np.ascontiguousarray(items[a:b])).astype(np.float64)
                    for a, b in zip(bounds, bounds[1:]))  # fmt: skip
    assert per_shard.astype(items.dtype).tobytes() != kernels.gram_matrix(items).tobytes()


@pytest.mark.parametrize("seed", range(12))
def test_shards_lie_on_gram_chunks(seed):
    rng = np.random.default_rng(seed)
    n_rows = int(rng.choice([0, 1, 600, 1100, 5000, 40000]))
    factors, num_shards = int(rng.choice([4, 64, 300])), int(rng.integers(1, 20))
    counts = rng.poisson(float(rng.choice([0.0, 0.5, 20.0])), n_rows) * (rng.random(n_rows) < 0.7)
    indptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    chunk_bounds = kernels.gram_chunk_bounds(n_rows, factors)
    bounds = shard_bounds(indptr, num_shards, factors)
    # Fewer shards, never empty ones, when there are fewer chunks than asked for.
    assert len(bounds) - 1 == min(num_shards, len(chunk_bounds) - 1)
    assert bounds[0] == 0 and bounds[-1] == n_rows
    assert np.isin(bounds, chunk_bounds).all()
    if n_rows:
        assert (np.diff(bounds) > 0).all()
    # Each cut is one of the two chunk bounds around the entry-balanced cut, unless that would
    # leave this shard or one after it without a chunk.
    total = indptr[-1]
    weight = indptr[chunk_bounds] if total else chunk_bounds
    for shard in range(1, len(bounds) - 1):
        target = shard * weight[-1] / (len(bounds) - 1)
        at = int(np.searchsorted(chunk_bounds, bounds[shard]))
        lower = int(np.searchsorted(weight, target, side="left"))
        previous = int(np.searchsorted(chunk_bounds, bounds[shard - 1]))
        last_possible = len(chunk_bounds) - 1 - (len(bounds) - 1 - shard)
        assert at in (lower - 1, lower, previous + 1, last_possible)


def test_shards_on_gram_chunks_example():
    # 2000 rows, 4 chunks of 500; most entries in the first chunk.
    counts = np.ones(2000, np.int64)
    counts[:500] = 7
    indptr = np.concatenate(([0], np.cumsum(counts)))
    np.testing.assert_array_equal(shard_bounds(indptr, 2, 8), [0, 500, 2000])
    np.testing.assert_array_equal(shard_bounds(indptr, 3, 8), [0, 500, 1000, 2000])
    np.testing.assert_array_equal(shard_bounds(indptr, 9, 8), [0, 500, 1000, 1500, 2000])
    np.testing.assert_array_equal(shard_bounds(indptr, 3, None), [0, 239, 477, 2000])  # entry-balanced


def test_training_loss_matches_single_machine(client):
    # Every item's penalty counts its entries over all users, whichever shards hold them.
    matrix = interactions(3)
    variants = [
        dict(weighted_regularization=False),
        dict(weighted_regularization=True),
        dict(unobserved_weight=0.2, regularization_exponent=0.6),
        dict(feedback="explicit", regularization_exponent=1.0),
    ]
    for variant in variants:
        options = dict(factors=4, iterations=3, random_state=2, calculate_training_loss=True, regularization=0.3,
                       **variant)  # fmt: skip
        single = recore.ALS(**options).fit(matrix)
        spread = ALS(num_shards=3, **options).fit(matrix, client=client)
        np.testing.assert_allclose(spread.history_["loss"], single.history_["loss"], rtol=1e-9)


def test_current_client_and_callback(client):
    matrix = interactions(4)
    calls = []
    with client.as_current():
        model = ALS(factors=3, iterations=2, random_state=0).fit(matrix, callback=lambda *a: calls.append(a))
    assert [c[0] for c in calls] == [0, 1]
    assert_same_factors(model, recore.ALS(factors=3, iterations=2, random_state=0).fit(matrix))


def test_dask_output_keeps_user_factors_on_the_cluster(client):
    import dask.array as da

    matrix = interactions(5)
    model = ALS(factors=3, iterations=2, random_state=1).fit(matrix, client=client, output="dask")
    assert isinstance(model.user_factors_, da.Array)
    single = recore.ALS(factors=3, iterations=2, random_state=1).fit(matrix)
    np.testing.assert_array_equal(client.compute(model.user_factors_).result(), single.user_factors_)


# -- inputs on the cluster ------------------------------------------------------------------------


def triples_frame(matrix, duplicate=False):
    import pandas as pd

    coo = matrix.tocoo()
    frame = pd.DataFrame({"u": coo.row.astype(np.int64), "i": coo.col.astype(np.int64), "r": coo.data})
    if duplicate:  # every entry split in two halves, which the shards must sum
        half = frame.assign(r=frame["r"] / 2)
        frame = pd.concat([half, half]).sample(frac=1.0, random_state=0)
    return frame


def test_dask_dataframe_input(client):
    import dask.dataframe as dd

    matrix = interactions(6, shape=(50, 30))
    matrix.data = np.round(matrix.data).astype(np.float32)  # halves of whole numbers sum exactly
    frame = dd.from_pandas(triples_frame(matrix, duplicate=True), npartitions=3).persist()
    options = dict(factors=4, iterations=2, random_state=5)
    model = ALS(**options).fit(frame, client=client, user_column="u", item_column="i", value_column="r",
                               shape=matrix.shape)  # fmt: skip
    assert_same_factors(model, recore.ALS(**options).fit(matrix))


def test_dask_array_and_parquet_inputs(client, tmp_path):
    import dask.array as da

    matrix = interactions(7, shape=(45, 35))
    # Ids as large as the shape, so that the shape is found from the data alone.
    matrix = (matrix + sp.csr_matrix(([2.0], ([44], [34])), shape=matrix.shape, dtype=np.float32)).tocsr()
    coo = matrix.tocoo()
    triples = np.column_stack([coo.row, coo.col, coo.data]).astype(np.float64)
    options = dict(factors=4, iterations=2, random_state=6)
    single = recore.ALS(**options).fit(matrix)
    model = ALS(**options).fit(da.from_array(triples, chunks=(40, 3)), client=client)
    assert_same_factors(model, single)
    frame = triples_frame(matrix).rename(columns={"u": "user", "i": "item", "r": "value"})
    for part, rows in enumerate(np.array_split(np.arange(len(frame)), 3)):
        frame.iloc[rows].to_parquet(tmp_path / f"part-{part}.parquet")
    model = ALS(**options).fit(str(tmp_path), client=client)
    assert_same_factors(model, single)


def test_triples_sharded_on_gram_chunks(client):
    # The workers cut the shards of triples on the Gram chunks too (three chunks a side here).
    import dask.array as da

    matrix = recore.datasets.synthetic(1300, 1100, 12000, random_state=8)
    coo = matrix.tocoo()
    triples = np.column_stack([coo.row, coo.col, coo.data]).astype(np.float64)
    options = dict(factors=5, iterations=2, random_state=3)
    model = ALS(num_shards=3, **options).fit(da.from_array(triples, chunks=(5000, 3)), client=client,
                                             shape=matrix.shape)  # fmt: skip
    assert_same_factors(model, recore.ALS(**options).fit(matrix))


def test_triples_errors_name_the_argument(client):
    import dask.dataframe as dd
    import pandas as pd

    def frame(**columns):
        return dd.from_pandas(pd.DataFrame(columns), npartitions=1)

    model = ALS(factors=2, iterations=1)
    with pytest.raises(ValueError, match="no column 'value'"):
        model.fit(frame(user=[0], item=[0]), client=client)
    with pytest.raises(IndexError, match="negative user ids"):
        model.fit(frame(user=[-1], item=[0], value=[1.0]), client=client)
    with pytest.raises(IndexError, match=r"item ids >= 2 \(shape\[1\]\)"):
        model.fit(frame(user=[0], item=[5], value=[1.0]), client=client, shape=(1, 2))
    with pytest.raises(ValueError, match="negative values"):
        model.fit(frame(user=[0], item=[0], value=[-1.0]), client=client)
    with pytest.raises(TypeError, match="item ids must be integers"):
        model.fit(frame(user=[0], item=[0.5], value=[1.0]), client=client)


def test_argument_errors(client):
    matrix = interactions(8)
    with pytest.raises(ValueError, match="no Dask client: pass client= or create one"):
        ALS(iterations=1).fit(matrix)
    with pytest.raises(TypeError, match="client must be a dask.distributed.Client"):
        ALS(iterations=1).fit(matrix, client="tcp://nowhere")
    with pytest.raises(ValueError, match="gram must be one of"):
        ALS(gram="somewhere")
    with pytest.raises(ValueError, match="num_shards must be >= 1"):
        ALS(num_shards=0)
    with pytest.raises(ValueError, match="max_recoveries must be >= 0"):
        ALS(max_recoveries=-1)
    with pytest.raises(ValueError, match="factors must be >= 1"):  # recore.ALS's own checks
        ALS(factors=0)
    with pytest.raises(ValueError, match="output must be one of"):
        ALS(iterations=1).fit(matrix, client=client, output="cupy")
    with pytest.raises(TypeError, match="user_items must be"):
        ALS(iterations=1).fit({"not": "a matrix"}, client=client)
    with pytest.raises(ValueError, match="negative values"):
        ALS(iterations=1).fit(-matrix, client=client)


def test_gpu_arrays_are_refused_clearly():
    class OnGpu:
        __cuda_array_interface__ = {}

    with pytest.raises(RuntimeError, match="CUDA engine is not available"):
        solve_shard(sp.csr_matrix((1, 1), dtype=np.float32), OnGpu(), None, np.zeros((1, 1), np.float32), {})
    with pytest.raises(RuntimeError, match="CUDA engine is not available"):
        gram_partials(OnGpu(), [0, 1], 0)


# -- distributed top-k ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_topk_equals_single_machine(client, case):
    rng = np.random.default_rng(100 + case)
    n_users, n_items = int(rng.integers(1, 31)), int(rng.integers(1, 26))
    k = [1, 3, n_items, n_items + 5][case % 4]  # up to beyond the catalog
    num_shards, batch_size = int(rng.integers(1, 5)), int(rng.choice([1, 4, 4096]))
    density, ties, seed = float(rng.choice([0.0, 0.3, 0.9])), bool(case % 2), case
    rng = np.random.default_rng(seed)
    users = rng.standard_normal((n_users, 4)).astype(np.float32)
    items = rng.standard_normal((n_items, 4)).astype(np.float32)
    if ties:  # whole numbers give many equal scores, across shards too
        users, items = np.round(users), np.round(items)
    seen = sp.random(n_users, n_items, density=density, format="csr", dtype=np.float32, random_state=rng)
    ids, scores = recommend_all(users, items, k, user_items=seen, client=client, num_shards=num_shards,
                                batch_size=batch_size)  # fmt: skip
    expected_ids, expected_scores = recore.topk(users, items, k, exclude=seen)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(scores, expected_scores)
    assert ids.dtype == expected_ids.dtype
    for row in range(n_users):  # exclusion honoured across shards
        assert not set(ids[row][ids[row] >= 0]) & set(seen[row].indices)


def test_topk_of_a_fitted_model_and_of_dask_user_factors(client):
    matrix = recore.datasets.synthetic(300, 120, 4000, random_state=2)
    model = ALS(factors=6, iterations=2, random_state=3).fit(matrix, client=client, output="dask")
    single = recore.ALS(factors=6, iterations=2, random_state=3).fit(matrix)
    expected = single.recommend_all(matrix, k=10)
    found = model.recommend_all(matrix, k=10, client=client, num_shards=3)
    np.testing.assert_array_equal(found[0], expected[0])
    np.testing.assert_array_equal(found[1], expected[1])


def test_merge_keeps_recores_order():
    first = (np.array([[3, 1, -1]]), np.array([[2.0, 1.0, -np.inf]], np.float32))
    second = (np.array([[0, 7, -1]]), np.array([[2.0, 1.0, -np.inf]], np.float32))
    ids, scores = merge_topk([second, first], 5)
    np.testing.assert_array_equal(ids, [[0, 3, 1, 7, -1]])
    np.testing.assert_array_equal(scores, np.array([[2, 2, 1, 1, -np.inf]], np.float32))


def test_topk_argument_errors(client):
    users, items = np.ones((3, 2), np.float32), np.ones((4, 2), np.float32)
    with pytest.raises(ValueError, match="k must be >= 1"):
        recommend_all(users, items, 0, client=client)
    with pytest.raises(ValueError, match="user_factors has 3 columns"):
        recommend_all(np.ones((3, 3), np.float32), items, 1, client=client)
    with pytest.raises(ValueError, match="item_factors contains NaN"):
        recommend_all(users, np.full((4, 2), np.nan, np.float32), 1, client=client)
    with pytest.raises(ValueError, match=r"user_items must have shape \(3, 4\)"):
        recommend_all(users, items, 1, user_items=sp.csr_matrix((3, 5)), client=client)
    with pytest.raises(ValueError, match="no Dask client"):
        recommend_all(users, items, 1)


# -- a worker killed mid-fit --------------------------------------------------------------------------


def wait_until_removed(client, address) -> None:
    deadline = time.monotonic() + 30
    while address in client.nthreads():  # asked of the scheduler (see _cluster.live_workers)
        if time.monotonic() > deadline:
            raise AssertionError("the scheduler never noticed the killed worker")
        time.sleep(0.05)


def kill_one_worker(client) -> None:
    """SIGKILL one worker process, then wait until the scheduler has seen it go."""
    pids = client.run(os.getpid)
    address = sorted(pids)[0]
    os.kill(pids[address], signal.SIGKILL)
    wait_until_removed(client, address)


@pytest.fixture(scope="module")
def expendable_client():
    # Its own cluster: workers are killed here, and their nannies restart them.
    with local_cluster() as cluster, distributed.Client(cluster, set_as_default=False) as client:
        yield client


@pytest.mark.parametrize("gram", ["driver", "workers"])
def test_worker_killed_mid_fit_recovers_with_the_same_factors(expendable_client, gram):
    expendable_client.wait_for_workers(2, timeout=60)  # the nanny restarts a killed one
    # 1100 users: rebuilt user shards must keep their bounds on the Gram chunks.
    matrix = recore.datasets.synthetic(1100, 200, 8000, random_state=3)
    options = dict(factors=6, iterations=4, regularization=0.05, random_state=9)
    reference = recore.ALS(**options).fit(matrix)

    def kill_after_first(iteration, metrics):
        if iteration == 0:
            kill_one_worker(expendable_client)

    model = ALS(gram=gram, num_shards=2, **options).fit(matrix, client=expendable_client, callback=kill_after_first)
    assert model.recoveries_ >= 1
    assert_same_factors(model, reference)


def test_worker_killed_without_recoveries_fails_clearly(expendable_client):
    expendable_client.wait_for_workers(2, timeout=60)
    matrix = interactions(10)
    model = ALS(factors=3, iterations=3, random_state=0, max_recoveries=0)

    def kill_after_first(iteration, metrics):
        if iteration == 0:
            kill_one_worker(expendable_client)

    with pytest.raises(WorkerLostError, match="max_recoveries=0"):
        model.fit(matrix, client=expendable_client, callback=kill_after_first)
    assert not hasattr(model, "user_factors_")  # no half-fitted factors left behind


# Each shard's half-step takes about 0.3 s on one thread (and longer on a loaded machine):
# exact solves of 256 factors for 2,000 rows.
SLOW_MATRIX_SHAPE = (4000, 4000, 80000)
SLOW_OPTIONS = dict(factors=256, iterations=2, solver="cholesky", regularization=0.05, random_state=11)


def executing_solves(dask_worker) -> list:
    """The solve tasks this worker is running now (run on every worker by client.run)."""
    return [str(task.key) for task in dask_worker.state.executing if str(task.key).startswith("solve_shard")]


def fit_killing_a_worker_mid_task(client, model, matrix):
    """Fits ``model`` in a thread and SIGKILLs a worker while it is running a solve task.

    Returns the fit's exception (None when it finished) and whether the kill caught the task
    running: the scheduler's remove-worker event lists the tasks the worker was processing when
    it went, which a task that had just finished would not be among.
    """
    client.wait_for_workers(2, timeout=60)  # the nanny restarts a killed one
    pids = client.run(os.getpid)
    outcome = {}

    def fit():
        try:
            model.fit(matrix, client=client)
        except BaseException as error:  # handed to the test thread
            outcome["error"] = error

    thread = threading.Thread(target=fit, daemon=True)
    thread.start()
    victim, solving, killed_at = None, [], None
    deadline = time.monotonic() + 60
    while thread.is_alive() and time.monotonic() < deadline:
        running = client.run(executing_solves)
        victim = next((address for address, keys in sorted(running.items()) if keys), None)
        if victim is not None:
            killed_at = time.time()
            os.kill(pids[victim], signal.SIGKILL)
            solving = running[victim]
            break
        time.sleep(0.01)
    if victim is not None:
        wait_until_removed(client, victim)
    thread.join(timeout=120)
    assert not thread.is_alive(), "the fit did not finish after the worker was killed"
    caught = False
    if victim is not None:
        removed_while = client.run_on_scheduler(processing_when_removed, address=victim, since=killed_at - 1)
        caught = any(set(solving) & set(keys) for keys in removed_while)
    return outcome.get("error"), caught


def processing_when_removed(dask_scheduler, address, since) -> list:
    """For each removal of the worker at ``address`` since then, the tasks it was processing
    (run on the scheduler, whose own events hold them)."""
    return [
        [str(key) for key in event["processing-tasks"]]
        for timestamp, event in dask_scheduler.get_events(address)
        if timestamp >= since and event.get("action") == "remove-worker"
    ]


@pytest.fixture(scope="module")
def slow_fit_case():
    matrix = recore.datasets.synthetic(*SLOW_MATRIX_SHAPE, random_state=5)
    return matrix, recore.ALS(**SLOW_OPTIONS).fit(matrix)


def test_worker_killed_during_a_task_recovers_with_the_same_factors(expendable_client, slow_fit_case):
    matrix, reference = slow_fit_case
    for _attempt in range(3):  # a kill that missed the task (it had just finished) is tried again
        model = ALS(num_shards=2, **SLOW_OPTIONS)
        error, caught = fit_killing_a_worker_mid_task(expendable_client, model, matrix)
        if error is not None:
            raise error
        if caught:
            break
    assert caught, "no kill landed while a solve task ran"
    assert model.recoveries_ >= 1
    assert_same_factors(model, reference)


def test_worker_killed_during_a_task_without_recoveries_fails_clearly(expendable_client, slow_fit_case):
    matrix, _ = slow_fit_case
    for _attempt in range(3):
        model = ALS(num_shards=2, max_recoveries=0, **SLOW_OPTIONS)
        error, caught = fit_killing_a_worker_mid_task(expendable_client, model, matrix)
        if caught:
            break
    assert caught, "no kill landed while a solve task ran"
    assert isinstance(error, WorkerLostError), repr(error)
    assert "max_recoveries=0" in str(error) and "no factors were kept" in str(error)
    assert not hasattr(model, "user_factors_")  # no half-fitted factors left behind


def misaligned(array: np.ndarray) -> np.ndarray:
    """A copy of ``array`` one byte off its element alignment, as Dask's serialization can
    hand arrays to a worker."""
    raw = np.zeros(array.nbytes + 1, dtype=np.uint8)
    out = raw[1:].view(array.dtype).reshape(array.shape)
    out[...] = array
    assert not out.flags.aligned
    return out


def test_worker_tasks_take_misaligned_arrays():
    """Worker functions align what they receive before the engine reads it as typed memory."""
    from recore.distributed import _cluster

    rng = np.random.default_rng(0)
    rows = sp.random(40, 30, density=0.2, format="csr", random_state=1, dtype=np.float32)
    fixed = rng.standard_normal((30, 4)).astype(np.float32)
    target = rng.standard_normal((40, 4)).astype(np.float32)
    options = dict(regularization=0.1, alpha=1.0, feedback="implicit", num_threads=1)
    bounds = np.array([0, 20, 40], dtype=np.int64)
    odd_rows = sp.csr_matrix((misaligned(rows.data), misaligned(rows.indices), misaligned(rows.indptr)), shape=rows.shape)
    gram = recore.kernels.gram_matrix(fixed)
    expected = _cluster.solve_shard(rows, fixed, gram, target, options)
    got = _cluster.solve_shard(odd_rows, misaligned(fixed), misaligned(gram), misaligned(target), options)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(
        _cluster.gram_partials(misaligned(target), misaligned(bounds), 1), _cluster.gram_partials(target, bounds, 1)
    )
    assert _cluster._aligned(fixed) is fixed  # aligned input: used as it is
