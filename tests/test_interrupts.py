"""Ctrl-C during long calls: control returns promptly and the model stays consistent."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
import recore


@pytest.fixture(autouse=True)
def ctrl_c_raises():
    """Python's own SIGINT handler for each test: a shell that starts the tests in the
    background hands them SIGINT ignored, and then Ctrl-C would never raise."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def interrupt_after(seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    return timer


@pytest.mark.parametrize("solver", ["cg", "cholesky"])
def test_interrupted_fit_keeps_the_last_completed_iteration(solver):
    data = recore.datasets.synthetic(20_000, 4_000, 600_000, random_state=0)
    completed = []
    model = recore.ALS(factors=24, iterations=500, solver=solver, random_state=1, num_threads=2)
    timer = interrupt_after(0.4)
    began = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            model.fit(data, callback=lambda iteration, metrics: completed.append(iteration))
    finally:
        timer.cancel()
    assert time.perf_counter() - began < 0.4 + 1.5  # control came back soon after the signal
    # The model holds exactly the factors of its completed iterations.
    again = recore.ALS(factors=24, iterations=len(completed), solver=solver, random_state=1).fit(data)
    np.testing.assert_array_equal(model.user_factors_, again.user_factors_)
    np.testing.assert_array_equal(model.item_factors_, again.item_factors_)


def test_interrupted_recommend_all_returns_promptly(monkeypatch):
    import importlib

    search_module = importlib.import_module("recore.topk")  # recore.topk is also the function
    rng = np.random.default_rng(0)
    model = recore.ALS(factors=32)
    model.user_factors_ = rng.standard_normal((300_000, 32), dtype=np.float32)
    model.item_factors_ = rng.standard_normal((10_000, 32), dtype=np.float32)
    model.history_ = {}
    monkeypatch.setattr(search_module, "SEARCH_CHUNK_MULTIPLY_ADDS", 1 << 30)  # ~30 chunks
    timer = interrupt_after(0.1)
    began = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            model.recommend_all(k=10, num_threads=2)
    finally:
        timer.cancel()
    assert time.perf_counter() - began < 0.1 + 1.0
    ids, _ = model.recommend([0, 1], k=3)  # and the model still serves
    assert ids.shape == (2, 3)


def test_interrupted_sgd_fit_keeps_the_last_completed_epoch():
    data = recore.datasets.synthetic_ratings(20_000, 4_000, 1_000_000, random_state=0)
    completed = []
    model = recore.SGD(factors=32, iterations=2000, num_threads=1, random_state=1)
    timers = []

    def after_epoch(epoch, *rest):
        completed.append(epoch)
        if not timers:  # armed once training runs, so a slow machine's grid building never races it
            timers.append((interrupt_after(0.3), time.perf_counter()))

    try:
        with pytest.raises(KeyboardInterrupt):
            model.fit(data, callback=after_epoch)
    finally:
        for timer, _ in timers:
            timer.cancel()
    assert time.perf_counter() - timers[0][1] < 0.3 + 1.5
    assert model.iterations_completed_ in (len(completed), len(completed) + 1)  # Ctrl-C may beat the callback
    again = recore.SGD(factors=32, iterations=model.iterations_completed_, num_threads=1, random_state=1).fit(data)
    np.testing.assert_array_equal(model.user_factors_, again.user_factors_)
    np.testing.assert_array_equal(model.item_biases_, again.item_biases_)
