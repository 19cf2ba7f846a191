"""``peers.py als``: fit recore's ALS and other libraries' ALS side by side: same data, same start, same
objective.

    python benchmarks/peers.py als                               # MovieLens-20M-sized, CG
    python benchmarks/peers.py als --factors 64 --solver cg cholesky \
        --users 20000 --items 5000 --nnz 1000000

The data is a synthetic power-law matrix of interaction counts from
``recore.datasets.synthetic``, shaped like MovieLens-20M by default (138,000 users x 27,000
items x 17,000,000 entries), always from the same seed. Every library gets the same
hyperparameters, the same number of threads and the same initial factors, and every
library's final factors are scored by the same function, ``recore.kernels.als_loss``, so the
table compares the time to reach an objective value and not only the time.

The objective is implicit-feedback ALS (Hu, Koren & Volinsky 2008): on a stored entry,
preference 1 with confidence ``alpha * value`` (implicit's convention, recore's
``confidence="scaled"``); elsewhere preference 0 with confidence 1; plus ``regularization``
times the squared norms of both factor matrices.

Adding a peer: write ``fit_<name>(user_items, start, config) -> PeerResult`` that starts from
``start``, times every iteration, and raises ``PeerUnavailable`` when its library is not
installed; then add it to ``PEERS``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from typing import Callable

import numpy as np
import recore
from machine import context_line
from recore import kernels

MOVIELENS_20M_LIKE = (138_000, 27_000, 17_000_000)  # users, items, stored entries
DEFAULT_SEED = 20240501


@dataclasses.dataclass(frozen=True)
class Config:
    """One comparison: every peer fits with exactly these settings."""

    factors: int
    solver: str  # "cg" or "cholesky"
    iterations: int
    threads: int
    regularization: float
    alpha: float
    cg_steps: int
    seed: int


@dataclasses.dataclass
class PeerResult:
    """What one peer's fit produced."""

    library: str
    version: str
    iteration_seconds: list[float]  # wall time of each iteration, as the peer reports it
    fit_seconds: float  # the whole fit call, setup included
    user_factors: np.ndarray
    item_factors: np.ndarray
    loss: float | None = None  # filled in by training_loss(), the same for every peer

    @property
    def seconds_per_iteration(self) -> float:
        return statistics.median(self.iteration_seconds)


class PeerUnavailable(Exception):
    """The peer's library is not installed (or cannot run this configuration)."""


# -- the start every peer shares --------------------------------------------------------------


def initial_factors(user_items, config: Config) -> tuple[np.ndarray, np.ndarray]:
    """recore's own starting point for ``config.seed``: a fit with zero iterations returns
    exactly the factors that ``fit`` with the same ``random_state`` starts from."""
    model = recore.ALS(factors=config.factors, iterations=0, random_state=config.seed)
    model.fit(user_items)
    return model.user_factors_, model.item_factors_


# -- peers ------------------------------------------------------------------------------------


def fit_recore(user_items, start, config: Config) -> PeerResult:
    # recore takes no initial factors: it draws them from random_state, and with
    # random_state=config.seed it draws exactly `start` (see initial_factors).
    model = recore.ALS(
        factors=config.factors,
        regularization=config.regularization,
        alpha=config.alpha,
        iterations=config.iterations,
        solver=config.solver,
        cg_steps=config.cg_steps,
        confidence="scaled",
        num_threads=config.threads,
        random_state=config.seed,
    )
    iteration_seconds = []
    began = time.perf_counter()
    model.fit(
        user_items,
        callback=lambda _iteration, metrics: iteration_seconds.append(metrics["seconds"]),
    )
    fit_seconds = time.perf_counter() - began
    return PeerResult(
        "recore",
        recore.__version__,
        iteration_seconds,
        fit_seconds,
        model.user_factors_,
        model.item_factors_,
    )


def fit_implicit(user_items, start, config: Config) -> PeerResult:
    try:
        import implicit
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits
    except ImportError as error:
        raise PeerUnavailable(f"implicit is not installed ({error}); `pip install implicit` to compare") from None

    # implicit's README: a multithreaded BLAS inside its OpenMP loops is much slower. The
    # model is built inside the limit too, so its BLAS check does not warn.
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=config.factors,
            regularization=config.regularization,
            alpha=config.alpha,  # implicit scales the matrix by alpha: c = alpha * value
            dtype=np.float32,
            use_cg=config.solver == "cg",
            iterations=config.iterations,
            num_threads=config.threads,
            random_state=config.seed,
        )
        model.cg_steps = config.cg_steps  # an attribute, not a constructor argument
        # implicit draws random factors only where these are None; it then updates these
        # arrays in place.
        user_factors, item_factors = start[0].copy(), start[1].copy()
        model.user_factors, model.item_factors = user_factors, item_factors
        iteration_seconds = []
        began = time.perf_counter()
        model.fit(
            user_items,
            show_progress=False,
            # implicit's callback signature (iteration, seconds of that iteration, loss), not recore's.
            callback=lambda _iteration, seconds, _loss: iteration_seconds.append(seconds),
        )
        fit_seconds = time.perf_counter() - began
    if model.user_factors is not user_factors or model.item_factors is not item_factors:
        raise RuntimeError("implicit replaced the initial factors it was given; the comparison is void")
    return PeerResult(
        "implicit",
        implicit.__version__,
        iteration_seconds,
        fit_seconds,
        model.user_factors,
        model.item_factors,
    )


BASELINE = "recore"
PEERS: dict[str, Callable[..., PeerResult]] = {
    "recore": fit_recore,
    "implicit": fit_implicit,
}


# -- scoring and reporting ----------------------------------------------------------------------


def training_loss(user_items, result: PeerResult, config: Config) -> float:
    """The full objective of a peer's factors, computed the same way for every peer."""
    return kernels.als_loss(
        user_items,
        np.ascontiguousarray(result.user_factors, dtype=np.float32),
        np.ascontiguousarray(result.item_factors, dtype=np.float32),
        regularization=config.regularization,
        alpha=config.alpha,
        confidence="scaled",
        num_threads=config.threads,
    )


def markdown_table(rows: list[tuple[Config, PeerResult]]) -> str:
    header = (
        "| factors | solver | library | s / iteration (median) | fit s | final loss "
        "| time recore / peer | loss recore vs peer |"
    )
    lines = [header, "|---:|:---|:---|---:|---:|---:|---:|---:|"]
    baselines = {config: result for config, result in rows if result.library == BASELINE}
    for config, result in rows:
        baseline = baselines.get(config)
        if baseline is None or result is baseline:
            ratio = difference = "—"
        else:
            ratio = f"{baseline.seconds_per_iteration / result.seconds_per_iteration:.2f}"
            difference = f"{(baseline.loss - result.loss) / result.loss * 100:+.4f} %"
        lines.append(
            f"| {config.factors} | {config.solver} | {result.library} {result.version} "
            f"| {result.seconds_per_iteration:.3f} | {result.fit_seconds:.2f} | {result.loss:.9g} "
            f"| {ratio} | {difference} |"
        )
    return "\n".join(lines)


DESCRIPTION = "Compare recore's ALS with other libraries on the same synthetic data."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--factors", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--solver", nargs="+", choices=["cg", "cholesky"], default=["cg"])
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="threads for every library (0: all cores)")
    parser.add_argument("--regularization", type=float, default=0.01)
    parser.add_argument("--alpha", type=float, default=1.0, help="confidence = alpha * count")
    parser.add_argument("--cg-steps", type=int, default=3)
    parser.add_argument("--users", type=int, default=MOVIELENS_20M_LIKE[0])
    parser.add_argument("--items", type=int, default=MOVIELENS_20M_LIKE[1])
    parser.add_argument("--nnz", type=int, default=MOVIELENS_20M_LIKE[2], help="stored entries")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seeds the data and the initial factors")
    parser.add_argument(
        "--peers",
        nargs="*",
        choices=[name for name in PEERS if name != BASELINE],
        default=[name for name in PEERS if name != BASELINE],
        help=f"libraries to compare with {BASELINE}, which always runs",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results (without factors) here")


def run(arguments: argparse.Namespace) -> int:

    began = time.perf_counter()
    user_items = recore.datasets.synthetic(arguments.users, arguments.items, arguments.nnz, random_state=arguments.seed)
    print(
        f"data: synthetic power-law counts, {user_items.shape[0]:,} users x "
        f"{user_items.shape[1]:,} items, "
        f"{user_items.nnz:,} stored entries, seed {arguments.seed} "
        f"(generated in {time.perf_counter() - began:.1f} s)"
    )
    print(
        f"fit: {arguments.iterations} iterations, {arguments.threads} threads, "
        f"regularization {arguments.regularization}, "
        f"alpha {arguments.alpha} (confidence = alpha * count), "
        f"cg_steps {arguments.cg_steps}, float32"
    )
    print(f"machine: {context_line()}")

    peer_names = [BASELINE, *arguments.peers]
    rows: list[tuple[Config, PeerResult]] = []
    notes: list[str] = []
    for factors in arguments.factors:
        for solver in arguments.solver:
            config = Config(
                factors=factors,
                solver=solver,
                iterations=arguments.iterations,
                threads=arguments.threads,
                regularization=arguments.regularization,
                alpha=arguments.alpha,
                cg_steps=arguments.cg_steps,
                seed=arguments.seed,
            )
            start = initial_factors(user_items, config)
            for name in peer_names:
                try:
                    result = PEERS[name](user_items, start, config)
                except PeerUnavailable as reason:
                    note = f"note: skipping {name}: {reason}"
                    if note not in notes:
                        notes.append(note)
                        print(note, file=sys.stderr)
                    continue
                result.loss = training_loss(user_items, result, config)
                rows.append((config, result))
                print(
                    f"  factors {factors:>4} {solver:<8} {name:<10} "
                    f"{result.seconds_per_iteration:8.3f} s/iteration  loss {result.loss:.7g}",
                    file=sys.stderr,
                )

    print()
    print(markdown_table(rows))
    print()
    print(
        "s / iteration: median over the iterations of the wall time of both half-steps, as each "
        "library reports it to its callback. fit s: the whole fit call (input conversion, "
        "transpose, initialization included). final loss: recore.kernels.als_loss of each "
        "library's factors. time recore / peer < 1: recore is faster; "
        "loss recore vs peer < 0: recore reached a lower objective."
    )
    for note in notes:
        print(note)

    if arguments.json:
        records = [
            {
                **dataclasses.asdict(config),
                "library": result.library,
                "version": result.version,
                "iteration_seconds": result.iteration_seconds,
                "seconds_per_iteration": result.seconds_per_iteration,
                "fit_seconds": result.fit_seconds,
                "loss": result.loss,
                "n_users": user_items.shape[0],
                "n_items": user_items.shape[1],
                "nnz": user_items.nnz,
            }
            for config, result in rows
        ]
        with open(arguments.json, "w") as file:
            json.dump(records, file, indent=2)
    return 0
