"""The one iteration loop every estimator's fit runs, on any backend and on a cluster.

A fit hands :func:`run_iterations` a *run*, which owns the training state and knows how to
do one iteration. The loop times each iteration, collects its metrics into the history,
reports them to the progress bar and the callback, stops early when the run says so, and on
Ctrl-C puts the run back to its last completed iteration before the interrupt goes on.

A run has:

- ``metric_names``: the metrics it reports, besides ``"seconds"`` (the history's keys);
- ``begin_iteration()``: remembers what ``roll_back`` returns to;
- ``iteration() -> dict``: one iteration of training; returns metrics measured while
  training (timed with the iteration);
- ``evaluate() -> dict``: metrics computed after it (a training loss, a validation score;
  not timed);
- ``roll_back()``: back to the state of the last completed iteration;
- ``stop(metrics) -> bool``: whether to stop after this iteration (early stopping).
"""

from __future__ import annotations

import inspect
import time
import warnings
from typing import Callable

IterationCallback = Callable[[int, dict], object]


def run_iterations(run, iterations: int, history: dict, *, callback=None, progress: bool = False, label: str = ""):
    """Runs up to ``iterations`` iterations of ``run``, appending each one's metrics to the
    lists of ``history`` (filled in place, so that an interrupted fit keeps what it had)."""
    from tqdm.auto import tqdm

    for name in ("seconds", *run.metric_names):
        history.setdefault(name, [])
    in_iteration = False
    try:
        with tqdm(total=iterations, disable=not progress, unit="it", desc=label) as bar:
            for iteration in range(iterations):
                start = time.perf_counter()
                run.begin_iteration()
                in_iteration = True
                metrics = {"seconds": 0.0, **run.iteration()}
                in_iteration = False
                metrics["seconds"] = time.perf_counter() - start
                metrics.update(run.evaluate())
                for name, value in metrics.items():
                    history.setdefault(name, []).append(value)
                shown = {name: f"{value:.6g}" for name, value in metrics.items() if name != "seconds"}
                if shown:
                    bar.set_postfix(**shown)
                bar.update(1)
                if callback is not None:
                    callback(iteration, metrics)
                if run.stop(metrics):
                    break
    except KeyboardInterrupt:
        if in_iteration:
            run.roll_back()
        raise


def _binds(function, count: int) -> bool | None:
    """Whether ``function`` takes ``count`` positional arguments (None: no signature to read)."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(*range(count))
    except TypeError:
        return False
    return True


def iteration_callback(callback, legacy: Callable[[Callable, int, dict], object], legacy_arguments: int):
    """The fit's callback as ``callback(iteration, metrics)``.

    ``callback(iteration, metrics)`` is the signature of every estimator: ``metrics`` holds
    ``"seconds"`` and the metrics of that iteration (see each estimator's ``history_``). A
    callback that takes ``legacy_arguments`` positional arguments instead (the estimator's
    signature before 0.2) still works, through ``legacy(callback, iteration, metrics)``,
    with a FutureWarning.
    """
    if callback is None:
        return None
    if not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    takes_two = _binds(callback, 2)
    if takes_two is None or takes_two:
        return callback
    if _binds(callback, legacy_arguments):
        warnings.warn(
            f"a fit callback with {legacy_arguments} arguments is deprecated and will not be accepted in a future "
            "release: use callback(iteration, metrics), metrics a dict with 'seconds' and the iteration's metrics",
            FutureWarning,
            stacklevel=3,
        )
        return lambda iteration, metrics: legacy(callback, iteration, metrics)
    raise TypeError("callback must accept two arguments: callback(iteration, metrics)")


def renamed_parameter(new_value, old_value, new: str, old: str, default):
    """The value of a renamed hyperparameter given under either name (the old one with a
    FutureWarning); both given differently is an error."""
    if old_value is None:
        return new_value
    warnings.warn(f"{old} is deprecated and will be removed in a future release: use {new}", FutureWarning, stacklevel=3)
    if new_value is not None and new_value != default and new_value != old_value:
        raise TypeError(f"{new} and its deprecated alias {old} were both given, with different values")
    return old_value


__all__ = ["IterationCallback", "iteration_callback", "renamed_parameter", "run_iterations"]
