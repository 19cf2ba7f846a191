"""``recore bench``: a cost-effectiveness study of recommenders on one data set.

Every model is fitted on the same training split and asked for the top-10 items of every
user, its training items excluded; one evaluator (:func:`recore.evaluation.ranking_metrics_at_k`)
scores every list against the same held-out interactions. Next to quality the study puts the
cost: fit time, time to list the top 10 for every user, and the memory each fit and each
search needed.

Each model runs in a process of its own (this module run as a program), which loads the
training data, then measures: wall-clock time, and the growth of the process's peak resident
memory over its resident memory at the start (on Linux the peak is reset first through
``/proc/self/clear_refs``; elsewhere the lifetime peak of the fresh process is used, which
includes loading the data). Nothing one model allocated or freed is counted for another.

The rows: the most popular items (by training interactions; the baseline every model has to
beat), recore's ALS (conjugate gradient and Cholesky), recore's BPR, recore's biased matrix
factorization when the data has ratings, and, when they are installed, the same models from
the ``implicit`` library and faiss's exact inner-product search over recore's ALS factors (the
peers). Two more rows are recore's ALS with hyperparameters searched by
:func:`recore.evaluation.tune` under a small budget (:func:`tune_models`): Hu et al.'s model
("ALS, tuned") and the iALS objective of Rendle et al. 2022 ("iALS, tuned": unobserved weight
and frequency-scaled regularization too). On the built-in data the generator's own
preferences are a last row: the best that a model can hope for.

Ranking models see which items each user interacted with (each pair counts 1); biased MF is
fitted to the ratings. The built-in data come from :func:`recore.datasets.synthetic_preferences`.
ALS's best regularization depends on the data, and its quality falls off steeply beyond it, so
it is chosen on a validation split of each run's training data (:func:`tune_regularization`);
the other defaults were chosen by a small grid search on the built-in data with another seed
(1) and split (see ``recore bench --help``).
"""

from __future__ import annotations

import html
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import scipy.sparse as sp

#: Models whose rows come from other libraries, and the module each needs.
PEER_MODULES = {"implicit-als": "implicit", "implicit-bpr": "implicit", "faiss-topk": "faiss"}


@dataclass
class Settings:
    """What the study runs with (the ``recore bench`` options)."""

    factors: int = 32
    iterations: int = 15
    regularization: float | None = None  # None: chosen on a validation split from the grid
    regularization_grid: tuple = (3.0, 10.0, 20.0, 50.0, 100.0)
    alpha: float = 1.0
    cg_steps: int = 3
    bpr_iterations: int = 20
    bpr_learning_rate: float = 0.05
    bpr_regularization: float = 0.0001
    mf_iterations: int = 40
    k: int = 10
    threads: int = 0
    seed: int = 0
    test_fraction: float = 0.2
    peers: bool = True
    tuned: bool = True  # the "ALS, tuned" and "iALS, tuned" rows
    tune_budget_seconds: float = 12.0  # of search per tuned row; a search also ends after tune_trials points
    tune_trials: int = 16


@dataclass
class Candidate:
    """One row of the study: a label, who made it, and what the worker builds."""

    label: str
    source: str  # "baseline", "recore", "peer" or "reference"
    model: str  # the worker's recipe
    params: dict = field(default_factory=dict)
    needs: str | None = None  # a label whose saved factors this row needs


def tune_regularization(train, settings: Settings, say=print) -> tuple[float, dict]:
    """ALS's regularization with the best NDCG@k on a validation split of the training
    interactions (a tenth of them; the test interactions are never looked at): implicit
    ALS's best value depends on the data's size and shape, and quality falls off steeply
    beyond it. Returns (the best value, NDCG@k by value); ties go to the smaller value."""
    import recore
    from recore import evaluation

    fit_part, validation = evaluation.random_split(_binary(train), 0.1, random_state=settings.seed + 1)
    scores = {}
    for value in settings.regularization_grid:
        model = recore.ALS(
            factors=settings.factors,
            iterations=settings.iterations,
            regularization=value,
            alpha=settings.alpha,
            cg_steps=settings.cg_steps,
            num_threads=settings.threads,
            random_state=settings.seed,
        )
        model.fit(fit_part)
        scores[value] = evaluation.ranking_metrics(
            model, fit_part, validation, k=settings.k, num_threads=settings.threads
        )["ndcg"]
    best = max(scores, key=lambda value: (scores[value], -value))
    return best, scores


@dataclass
class TunedSearch:
    """What :func:`tune_models` found for one tuned row."""

    label: str
    params: dict  # recore.ALS's hyperparameters, ready for the worker
    score: float  # validation NDCG@k
    fits: int
    points: int
    seconds: float
    space: str  # what was searched, for the report


#: The tuned rows' spaces. A search of a few seconds tries a handful of points, so both are
#: centred on the regularization r that the study validated: the plain model draws r times a
#: scale and alpha; iALS (observed entries weighing 1, unobserved ones alpha0) draws the same
#: models rescaled, alpha0 = 1 / (1 + alpha) and a typical user's penalty of r * alpha0 times
#: the scale (at nu = 0 the very models of the plain search: scaling every weight and the
#: penalty together changes nothing), each also with nu = 0.5 and 1.
TUNED_SCALES = (1 / 3, 1.0, 3.0)
TUNED_ALPHAS = (1.0, 2.0, 4.0, 8.0)
TUNED_UNOBSERVED_WEIGHTS = tuple(1 / (1 + alpha) for alpha in TUNED_ALPHAS)
TUNED_EXPONENTS = (0.0, 0.5, 1.0)


def ials_regularization(typical_penalty: float, unobserved_weight: float, exponent: float, train) -> float:
    """The ``regularization`` that gives a user with the mean number of training items the
    penalty ``typical_penalty`` (lambda_u = regularization * (n_u + alpha0 * n_items) ** nu):
    at nu = 1 the factor is in the hundreds, so iALS's search draws the penalty on the plain
    model's scale rather than the regularization itself."""
    mean_items = train.nnz / max(train.shape[0], 1)
    return typical_penalty / (mean_items + unobserved_weight * train.shape[1]) ** exponent


def _checkpoints(iterations: int) -> list[int]:
    """Iteration checkpoints up to the study's ALS iterations (a tuned row fits no longer):
    half of them, then all. Two, so that early stopping costs a point little more than one
    full fit and a small budget still tries several points."""
    return sorted({max(iterations // 2, 1), iterations})


def tune_models(train, settings: Settings, say=print) -> list[TunedSearch]:
    """ALS (Hu et al.'s model: regularization, alpha, iterations) and iALS (Rendle et al.
    2022: unobserved weight alpha0, regularization exponent nu, penalty, iterations; observed
    entries weigh 1) searched by :func:`recore.evaluation.tune` with the study's seed, each
    for ``tune_budget_seconds`` or ``tune_trials`` points, on the validation split that
    :func:`tune_regularization` uses (the test interactions are never looked at), around
    ``settings.regularization`` (see ``TUNED_SCALES``)."""
    import recore
    from recore import evaluation

    if settings.regularization is None:
        raise ValueError("tune_models centres its spaces on settings.regularization: choose it first")
    center = settings.regularization
    fit_part, validation = evaluation.random_split(_binary(train), 0.1, random_state=settings.seed + 1)

    def als(**params) -> recore.ALS:
        return recore.ALS(
            factors=settings.factors,
            cg_steps=settings.cg_steps,
            num_threads=settings.threads,
            random_state=settings.seed,
            **params,
        )

    def ials(penalty_scale, unobserved_weight, regularization_exponent, **params) -> recore.ALS:
        typical_penalty = penalty_scale * center * unobserved_weight
        regularization = ials_regularization(typical_penalty, unobserved_weight, regularization_exponent, fit_part)
        return als(regularization=regularization, unobserved_weight=unobserved_weight,
                   regularization_exponent=regularization_exponent, **params)  # fmt: skip

    checkpoints = _checkpoints(settings.iterations)
    searches = [
        (
            "ALS, tuned",
            als,
            {"regularization": [scale * center for scale in TUNED_SCALES], "alpha": list(TUNED_ALPHAS)},
        ),
        (
            "iALS, tuned",
            ials,
            {
                "penalty_scale": list(TUNED_SCALES),
                "unobserved_weight": list(TUNED_UNOBSERVED_WEIGHTS),
                "regularization_exponent": list(TUNED_EXPONENTS),
                "alpha": [0.0],
            },
        ),
    ]
    found = []
    for label, make_model, space in searches:
        start = time.perf_counter()
        result = evaluation.tune(
            make_model, fit_part, validation, {**space, "iterations": checkpoints},
            n_trials=settings.tune_trials, budget_seconds=settings.tune_budget_seconds,
            random_state=settings.seed, metric="ndcg", k=settings.k, num_threads=settings.threads,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        params = dict(result.best_params)
        if "penalty_scale" in params:  # the worker is given the model's own hyperparameters
            params.pop("penalty_scale")
            params = {"regularization": cast(recore.ALS, result.best_model).regularization, **params}
        searched = ", ".join(f"{name} {_values(values)}" for name, values in space.items())
        found.append(
            TunedSearch(
                label,
                {**params, "cg_steps": settings.cg_steps, "factors": settings.factors},
                result.best_score,
                len(result.table),
                len({row["trial"] for row in result.table}),
                seconds,
                f"{searched}, iterations {_values(checkpoints)} (early stopping)",
            )
        )
        say(
            f"{label}: {_shown(params)} by validation NDCG@{settings.k} {result.best_score:.4f} "
            f"({len(result.table)} fits, {seconds:.1f} s)"
        )
    return found


def _shown(params: dict) -> str:
    names = {"unobserved_weight": "alpha0", "regularization_exponent": "nu"}
    return ", ".join(f"{names.get(name, name)}={value:.3g}" for name, value in params.items())


def _values(values) -> str:
    return "{" + ", ".join(f"{value:.3g}" for value in values) + "}"


def candidates(
    settings: Settings, *, ratings: bool, planted: bool, tuned: list[TunedSearch] | None = None
) -> list[Candidate]:
    """The rows, in report order; peers only where their library imports; the tuned rows
    when ``tuned`` (from :func:`tune_models`) is given."""
    als = {
        "factors": settings.factors,
        "iterations": settings.iterations,
        "regularization": settings.regularization,
        "alpha": settings.alpha,
        "cg_steps": settings.cg_steps,
    }
    bpr = {
        "factors": settings.factors,
        "iterations": settings.bpr_iterations,
        "learning_rate": settings.bpr_learning_rate,
        "regularization": settings.bpr_regularization,
    }
    rows = [
        Candidate("most popular", "baseline", "popularity"),
        Candidate("ALS, CG", "recore", "als", {**als, "solver": "cg"}),
        Candidate("ALS, Cholesky", "recore", "als", {**als, "solver": "cholesky"}),
        Candidate("BPR (SGD)", "recore", "bpr", bpr),
    ]
    if ratings:
        rows.append(
            Candidate(
                "biased MF (SGD), fits ratings",
                "recore",
                "mf",
                {"factors": settings.factors, "iterations": settings.mf_iterations},
            )
        )
    for search in tuned or []:
        rows.append(Candidate(search.label, "recore", "als", {**search.params, "solver": "cg"}))
    if settings.peers:
        available = {name for name, module in PEER_MODULES.items() if _importable(module)}
        if "implicit-als" in available:
            rows.append(Candidate("implicit ALS, CG", "peer", "implicit-als", als))
        if "implicit-bpr" in available:
            rows.append(Candidate("implicit BPR, its defaults", "peer", "implicit-bpr", {"factors": settings.factors}))
        if "faiss-topk" in available:
            rows.append(Candidate("ALS, CG + faiss top-k", "peer", "faiss-topk", needs="ALS, CG"))
    if planted:
        rows.append(Candidate("planted preferences", "reference", "planted"))
    return rows


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# -- the parent: runs one worker per row, evaluates, reports ------------------------------------------


@dataclass
class Study:
    """What :func:`run_study` found: one dict per row, the settings used (with the chosen
    regularization) and the validation scores it was chosen by (None when it was given)."""

    results: list
    settings: Settings
    tuning: dict | None = None
    tuning_seconds: float = 0.0
    tuned: list = field(default_factory=list)  # TunedSearch per tuned row


def run_study(train, test, settings: Settings, *, ratings=None, planted=None, say=print, progress=False) -> Study:
    """Fits and times every row's model in its own process and scores them all alike.

    Parameters
    ----------
    train, test : scipy.sparse.csr_matrix (n_users, n_items)
        Interactions to fit on and held-out interactions (every stored entry relevant).
    settings : Settings
    ratings : tuple of two csr matrices, optional
        (training ratings, held-out ratings) for biased MF, on train's and test's entries.
    planted : tuple (tastes, topics), optional
        The generator's model, for the reference row.
    say : callable
        Prints a line of progress.
    progress : bool
        Show a progress bar (a terminal only).

    Returns
    -------
    Study
    """
    import dataclasses

    from tqdm.auto import tqdm

    from recore import evaluation

    binary = _binary(train)
    tuning, tuning_seconds = None, 0.0
    if settings.regularization is None:
        start = time.perf_counter()
        best, tuning = tune_regularization(binary, settings)
        tuning_seconds = time.perf_counter() - start
        scores = ", ".join(f"{value:g}: {score:.4f}" for value, score in tuning.items())
        say(f"ALS regularization by validation NDCG@{settings.k} ({scores}): {best:g} ({tuning_seconds:.1f} s)")
        settings = dataclasses.replace(settings, regularization=best)
    tuned = tune_models(binary, settings, say) if settings.tuned else []
    rows = candidates(settings, ratings=ratings is not None, planted=planted is not None, tuned=tuned)
    results = []
    with tempfile.TemporaryDirectory(prefix="recore-bench-") as directory:
        sp.save_npz(os.path.join(directory, "train.npz"), binary, compressed=False)
        if ratings is not None:
            sp.save_npz(os.path.join(directory, "ratings.npz"), ratings[0], compressed=False)
        if planted is not None:
            np.savez(os.path.join(directory, "planted.npz"), tastes=planted[0], topics=planted[1])
        with tqdm(total=len(rows), desc="models", unit="model", disable=not progress, leave=False) as bar:
            for index, row in enumerate(rows):
                bar.set_postfix_str(row.label)
                job = {
                    "model": row.model,
                    "params": row.params,
                    "k": settings.k,
                    "threads": settings.threads,
                    "seed": settings.seed,
                    "index": index,
                    "needs": rows.index(next(r for r in rows if r.label == row.needs)) if row.needs else None,
                }
                measured = _run_worker(directory, job, bar)
                ids = measured.pop("ids")
                metrics = evaluation.ranking_metrics_at_k(ids, test, train=binary, num_threads=settings.threads)
                result = {"label": row.label, "source": row.source, **measured, **metrics}
                if row.model == "mf":
                    result["rmse"] = _rmse(directory, index, ratings[1])
                results.append(result)
                bar.update(1)
                say(_progress_line(result, settings.k))
    return Study(results, settings, tuning, tuning_seconds, tuned)


def _binary(matrix) -> sp.csr_matrix:
    """Which items each user interacted with: every stored entry as 1."""
    binary = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    binary.sum_duplicates()
    binary.data[:] = 1.0
    return binary


def _run_worker(directory: str, job: dict, bar) -> dict:
    """Runs one row in a fresh Python process; returns its measurements and top-k ids."""
    path = os.path.join(directory, f"job{job['index']}.json")
    with open(path, "w") as file:
        json.dump(job, file)
    command = [sys.executable, "-m", "recore._bench", directory, str(job["index"])]
    # stderr to a file: a worker that writes much there never waits for the parent to read it.
    with open(os.path.join(directory, f"errors{job['index']}.txt"), "w+") as errors:
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True) as process:
            assert process.stdout is not None  # a pipe was asked for
            for line in process.stdout:  # one JSON object per iteration, for the bar
                try:
                    step = json.loads(line)
                except json.JSONDecodeError:
                    continue
                bar.set_postfix_str(f"{step.get('label', '')} {step.get('iteration', '')}/{step.get('of', '')}")
        if process.returncode != 0:
            errors.seek(0)
            raise RuntimeError(
                f"the {job['model']} run failed (exit status {process.returncode}):\n{errors.read().strip()}"
            )
    with open(os.path.join(directory, f"result{job['index']}.json")) as file:
        measured = json.load(file)
    measured["ids"] = np.load(os.path.join(directory, f"ids{job['index']}.npy"), allow_pickle=False)
    return measured


def _rmse(directory: str, index: int, test_ratings) -> float:
    with np.load(os.path.join(directory, f"model{index}.npz"), allow_pickle=False) as saved:
        coo = test_ratings.tocoo()
        predicted = (
            saved["global_bias"]
            + saved["user_biases"][coo.row]
            + saved["item_biases"][coo.col]
            + np.einsum("ij,ij->i", saved["user_factors"][coo.row], saved["item_factors"][coo.col])
        )
        return float(np.sqrt(np.mean((predicted.astype(np.float64) - coo.data) ** 2)))


def _progress_line(result: dict, k: int) -> str:
    fit = "—" if result["fit_seconds"] is None else f"{result['fit_seconds']:.2f} s"
    return (
        f"  {result['label']:<32} NDCG@{k} {result['ndcg']:.4f}  fit {fit:>8}  "
        f"top-{k} for all {result['topk_seconds']:.2f} s  fit memory {_mib(result['fit_peak_mib'])}"
    )


def _mib(value) -> str:
    return "—" if value is None else f"{value:,.0f} MiB" if value >= 10 else f"{value:.1f} MiB"


# -- the report ---------------------------------------------------------------------------------------


def markdown(study: Study, *, title: str, description: str, memory_method: str) -> str:
    """The study as a markdown document: what was run, the table, how to read it."""
    results, settings = study.results, study.settings
    k = settings.k
    has_rmse = any(r.get("rmse") is not None for r in results)
    header = [
        "model",
        "source",
        f"NDCG@{k}",
        f"precision@{k}",
        f"recall@{k}",
        f"coverage@{k}",
        "fit s",
        f"top-{k} for all s",
        "fit memory MiB",
        f"top-{k} memory MiB",
    ]
    if has_rmse:
        header.append("RMSE")
    lines = [
        f"# {title}",
        "",
        description,
        "",
        "| " + " | ".join(header) + " |",
        "|:---|:---|" + "---:|" * (len(header) - 2),
    ]
    for r in results:
        cells = [
            r["label"],
            r["source"],
            f"{r['ndcg']:.4f}",
            f"{r['precision']:.4f}",
            f"{r['recall']:.4f}",
            f"{r['coverage']:.3f}",
            _seconds(r["fit_seconds"]),
            _seconds(r["topk_seconds"]),
            _memory(r["fit_peak_mib"]),
            _memory(r["topk_peak_mib"]),
        ]
        if has_rmse:
            cells.append("—" if r.get("rmse") is None else f"{r['rmse']:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    baseline = next((r for r in results if r["source"] == "baseline"), None)
    lines += ["", _reading(study, baseline, memory_method)]
    return "\n".join(lines) + "\n"


def _tuned_note(study: Study) -> str:
    """How the tuned rows were searched and what each search found."""
    settings, k = study.settings, study.settings.k
    found = "; ".join(
        f"{search.label}: {_shown({n: v for n, v in search.params.items() if n not in ('factors', 'cg_steps')})} "
        f"(validation NDCG@{k} {search.score:.4f}; {search.points} points, {search.fits} fits, "
        f"{search.seconds:.1f} s; searched {search.space})"
        for search in study.tuned
    )
    return (
        f"Tuned rows: `recore.evaluation.tune` (seed {settings.seed}) on the same validation split, each search "
        f"ending after {settings.tune_budget_seconds:g} s or {settings.tune_trials} points, with early stopping "
        f"along the iterations; the best model is then fitted on all training interactions like every row (its "
        f"fit time is that fit; the search's is not counted in any). ALS, tuned is Hu et al.'s model; iALS, "
        f"tuned adds the unobserved weight alpha0 and the regularization exponent nu of Rendle et al. 2022, with "
        f"observed entries weighing 1 (alpha = 0). Both searches are centred on the validated regularization "
        f"r = {settings.regularization:g}: the plain one draws r times a scale and alpha; iALS draws the same "
        f"models rescaled (alpha0 = 1 / (1 + alpha), the penalty of a user with the mean number of items r * "
        f"alpha0 times the scale), each also with nu = 0.5 and 1. {found}."
    )


def _seconds(value) -> str:
    return "—" if value is None else f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def _memory(value) -> str:
    return "—" if value is None else f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def _reading(study: Study, baseline, memory_method: str) -> str:
    results, settings, k = study.results, study.settings, study.settings.k
    notes = [
        f"Every list holds {k} items and leaves out the user's training items; every row is scored by "
        f"`recore.evaluation.ranking_metrics_at_k` against the same held-out interactions "
        f"({settings.test_fraction:.0%} of them, split with seed {settings.seed}), averaged over the users "
        f"that have any. NDCG uses binary relevance; coverage is the share of the catalogue that appears "
        f"in some list.",
        f"Hyperparameters: factors={settings.factors}; ALS iterations={settings.iterations}, "
        f"regularization={settings.regularization:g}, alpha={settings.alpha:g} (confidence 1 + alpha), "
        f"cg_steps={settings.cg_steps}; BPR iterations={settings.bpr_iterations}, "
        f"learning_rate={settings.bpr_learning_rate:g}, regularization={settings.bpr_regularization:g}. "
        f"Ranking models see each (user, item) pair as one interaction. Threads: "
        f"{settings.threads or os.cpu_count()}.",
        f"Memory: {memory_method}",
    ]
    if study.tuning:
        scores = ", ".join(f"{value:g}: {score:.4f}" for value, score in study.tuning.items())
        notes.insert(
            2,
            f"ALS regularization: chosen by NDCG@{k} on a validation split of the training "
            f"interactions (a tenth of them; the held-out interactions are not looked at), "
            f"{scores}; {study.tuning_seconds:.1f} s, not counted in any fit time.",
        )
    if study.tuned:
        notes.insert(3 if study.tuning else 2, _tuned_note(study))
    if baseline is not None:
        better = [r for r in results if r["source"] in ("recore", "peer") and r["ndcg"] > baseline["ndcg"]]
        if better:
            best = max(better, key=lambda r: r["ndcg"])
            notes.append(
                f"Against the most popular items (NDCG@{k} {baseline['ndcg']:.4f}): {best['label']} reaches "
                f"{best['ndcg']:.4f}, {best['ndcg'] / max(baseline['ndcg'], 1e-12):.1f} times as much."
            )
        else:
            notes.append(
                f"No model beats the most popular items (NDCG@{k} {baseline['ndcg']:.4f}) on these data with "
                f"these hyperparameters: try others (see `recore bench --help`)."
            )
    if any(r.get("rmse") is not None for r in results):
        notes.append(
            "Biased MF is fitted to predict ratings, not to rank: its lists are the items of highest predicted "
            "rating, often items few users rated, so its ranking quality is low whatever its RMSE (its own "
            "measure, on the held-out ratings)."
        )
    peers = [r for r in results if r["source"] == "peer"]
    if not peers:
        notes.append("Peers: none installed (`pip install implicit faiss-cpu` adds their rows).")
    return "\n\n".join(notes)


# -- the chart: SVG written by hand, no plotting library --------------------------------------------------

_COLOURS = [
    "#4c4c4c",
    "#1f77b4",
    "#17becf",
    "#ff7f0e",
    "#9467bd",
    "#2ca02c",
    "#bcbd22",
    "#d62728",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#aec7e8",
]
_PANELS = (
    ("fit_seconds", "fit time, s"),
    ("topk_seconds", "top-{k} for every user, s"),
    ("fit_peak_mib", "fit memory, MiB"),
)


def svg_chart(results: list[dict], *, title: str, k: int) -> str:
    """Quality (NDCG@k) against fit time, top-k time and fit memory: three panels, one
    numbered marker per model, the most popular items as a dashed line."""
    columns = 3
    legend_rows = math.ceil(len(results) / columns) + 1
    width, top, left, panel_width, panel_height, gap = 1140, 64, 70, 300, 260, 70
    height = top + panel_height + 70 + legend_rows * 20 + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="24" text-anchor="middle" font-size="16">{html.escape(title)}</text>',
        f'<text x="{width / 2}" y="44" text-anchor="middle" fill="#555">higher: better top-{k} lists; '
        f"further left: cheaper</text>",
    ]
    quality = [r["ndcg"] for r in results]
    y_top = _nice_ceiling(max(quality) * 1.08 if quality else 1.0)
    baseline = next((r for r in results if r["source"] == "baseline"), None)
    for number, (key, label) in enumerate(_PANELS):
        x0 = left + number * (panel_width + gap)
        values = [r[key] for r in results if r[key] is not None]
        x_top = _nice_ceiling(max(values) * 1.08 if values and max(values) > 0 else 1.0)
        parts += _axes(x0, top, panel_width, panel_height, x_top, y_top, label.format(k=k), f"NDCG@{k}")
        if baseline is not None:
            y = top + panel_height * (1 - baseline["ndcg"] / y_top)
            parts.append(
                f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + panel_width}" y2="{y:.1f}" stroke="#888" '
                f'stroke-dasharray="5,4"/>'
            )
        placed: list[tuple[float, float]] = []
        markers, leaders = [], []
        for index, r in enumerate(results):
            if r[key] is None:
                continue
            x = x0 + panel_width * r[key] / x_top
            y = top + panel_height * (1 - r["ndcg"] / y_top)
            # A marker that would hide one already placed moves aside, tied to its point by a line.
            mx, my = _free_spot(x, y, placed)
            placed.append((mx, my))
            colour = _COLOURS[index % len(_COLOURS)]
            if (mx, my) != (x, y):
                leaders.append(f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{mx:.1f}" y2="{my:.1f}" stroke="{colour}"/>')
                leaders.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>')
            markers.append(f'<circle cx="{mx:.1f}" cy="{my:.1f}" r="9" fill="{colour}" stroke="white"/>')
            markers.append(
                f'<text x="{mx:.1f}" y="{my + 4:.1f}" text-anchor="middle" fill="white" font-size="11" '
                f'font-weight="bold">{index + 1}</text>'
            )
        parts += leaders + markers  # lines first, so that no line crosses a number
    legend_y = top + panel_height + 66
    per_column = math.ceil(len(results) / columns)
    for index, r in enumerate(results):
        x = left + (index // per_column) * (panel_width + gap)
        y = legend_y + (index % per_column) * 20
        colour = _COLOURS[index % len(_COLOURS)]
        parts.append(f'<circle cx="{x + 8}" cy="{y - 4}" r="8" fill="{colour}"/>')
        parts.append(
            f'<text x="{x + 8}" y="{y}" text-anchor="middle" fill="white" font-size="10" '
            f'font-weight="bold">{index + 1}</text>'
        )
        note = f" ({r['source']})" if r["source"] in ("peer", "reference", "baseline") else ""
        parts.append(f'<text x="{x + 22}" y="{y}">{html.escape(r["label"] + note)}</text>')
    if baseline is not None:
        y = legend_y + per_column * 20
        parts.append(
            f'<line x1="{left}" y1="{y - 4}" x2="{left + 16}" y2="{y - 4}" stroke="#888" stroke-dasharray="5,4"/>'
        )
        parts.append(f'<text x="{left + 22}" y="{y}">most popular items: the baseline to beat</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _free_spot(x: float, y: float, placed: list, radius: float = 9.0) -> tuple[float, float]:
    """Where a marker of the point (x, y) can be drawn without covering another: the point
    itself, or the nearest of a ring of spots around it."""
    spots = [(0.0, 0.0)] + [
        (distance * math.cos(angle), distance * math.sin(angle))
        for distance in (22.0, 40.0, 58.0)
        for angle in (-math.pi / 4, math.pi / 4, -3 * math.pi / 4, 3 * math.pi / 4, 0.0, math.pi, -math.pi / 2,
                      math.pi / 2)
    ]  # fmt: skip
    for dx, dy in spots:
        if all(math.hypot(x + dx - px, y + dy - py) >= 2 * radius for px, py in placed):
            return x + dx, y + dy
    return x, y


def _axes(x0, y0, w, h, x_top, y_top, x_label, y_label) -> list[str]:
    parts = [f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#333"/>']
    for value in _ticks(x_top):
        x = x0 + w * value / x_top
        parts.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + h}" stroke="#eee"/>')
        parts.append(f'<text x="{x:.1f}" y="{y0 + h + 16}" text-anchor="middle">{_tick(value)}</text>')
    for value in _ticks(y_top):
        y = y0 + h * (1 - value / y_top)
        parts.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + w}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{_tick(value)}</text>')
    parts.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 36}" text-anchor="middle">{html.escape(x_label)}</text>')
    parts.append(
        f'<text x="{x0 - 50}" y="{y0 + h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 {x0 - 50} {y0 + h / 2})">{html.escape(y_label)}</text>'
    )
    return parts


def _step(value: float) -> float:
    """A round step (1, 2 or 5 times a power of ten) that cuts 0..value into 3 to 6 ticks."""
    power = 10 ** math.floor(math.log10(value / 4))
    return next(m * power for m in (1, 2, 5, 10) if value / (m * power) <= 6)


def _nice_ceiling(value: float) -> float:
    """The axis end: ``value`` rounded up to a whole number of round steps."""
    if not value > 0:
        return 1.0
    step = _step(value)
    return step * math.ceil(value / step - 1e-9)


def _ticks(top: float) -> list[float]:
    step = _step(top)
    return [step * index for index in range(int(round(top / step)) + 1)]


def _tick(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


# -- the worker: one model, in a process of its own -----------------------------------------------------


class _Memory:
    """Growth of this process's peak resident memory over its resident memory at the start."""

    method = (
        "the growth of the peak resident memory of the process that ran the step (a fresh process per model, "
        "its data already loaded) over its resident memory when the step began; the peak is reset first "
        "through /proc/self/clear_refs"
    )

    def __enter__(self):
        self.reset = _reset_peak()
        self.start = _resident_bytes()
        return self

    def __exit__(self, *exc):
        self.mib = max(_peak_bytes() - self.start, 0) / 2**20


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
        return True
    except OSError:
        return False


def _status_bytes(field_name: str) -> float | None:
    try:
        with open("/proc/self/status") as file:
            for line in file:
                if line.startswith(field_name + ":"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _resident_bytes() -> float:
    resident = _status_bytes("VmRSS")
    return resident if resident is not None else _peak_bytes()


def _peak_bytes() -> float:
    peak = _status_bytes("VmHWM")
    if peak is not None:
        return peak
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


def memory_method() -> str:
    """How this machine measures the memory of a step, for the report."""
    if _reset_peak() and _status_bytes("VmHWM") is not None:
        return _Memory.method + "."
    return (
        "the growth of the lifetime peak resident memory of the process that ran the step (a fresh process per "
        "model, so the peak includes loading its data and may overstate the step) over its resident memory "
        "when the step began (this system cannot reset the peak)."
    )


def _tell(**step) -> None:
    print(json.dumps(step), flush=True)


def _fit(job: dict, train: sp.csr_matrix, directory: str):
    """Fits the job's model; returns a top-k function (None for rows without a model)."""
    import recore

    kind, params, threads, seed = job["model"], job["params"], job["threads"], job["seed"]

    def told(label, total):
        return lambda iteration, metrics: _tell(label=label, iteration=iteration + 1, of=total)

    if kind == "popularity":
        counts = np.bincount(train.indices, minlength=train.shape[1]).astype(np.float32)
        return lambda k: recore.topk(
            np.ones((train.shape[0], 1), np.float32), counts[:, None].copy(), k, exclude=train, num_threads=threads
        )
    if kind == "als":
        als = recore.ALS(num_threads=threads, random_state=seed, **params)
        als.fit(train, callback=told("ALS", params["iterations"]))
        np.savez(
            os.path.join(directory, f"model{job['index']}.npz"),
            user_factors=als.user_factors_,
            item_factors=als.item_factors_,
        )
        return lambda k: als.recommend_all(train, k=k)
    if kind == "bpr":
        bpr = recore.SGD(loss="bpr", num_threads=threads, random_state=seed, **params)
        bpr.fit(train, callback=told("BPR", params["iterations"]))
        return lambda k: bpr.recommend_all(train, k=k)
    if kind == "mf":
        ratings = sp.load_npz(os.path.join(directory, "ratings.npz")).tocsr()
        mf = recore.SGD(loss="squared", num_threads=threads, random_state=seed, **params)
        mf.fit(ratings, callback=told("biased MF", params["iterations"]))
        np.savez(
            os.path.join(directory, f"model{job['index']}.npz"),
            user_factors=mf.user_factors_,
            item_factors=mf.item_factors_,
            user_biases=mf.user_biases_,
            item_biases=mf.item_biases_,
            global_bias=np.float32(mf.global_bias_),
        )
        return lambda k: mf.recommend_all(train, k=k)
    if kind in ("implicit-als", "implicit-bpr"):
        return _fit_implicit(kind, params, train, threads, seed)
    if kind == "faiss-topk":
        return _faiss_topk(job, train, directory, threads)
    if kind == "planted":
        with np.load(os.path.join(directory, "planted.npz"), allow_pickle=False) as planted:
            tastes, topics = planted["tastes"], planted["topics"]
        return lambda k: recore.topk(tastes, topics, k, exclude=train, num_threads=threads)
    raise ValueError(f"unknown model {kind!r}")


def _fit_implicit(kind: str, params: dict, train: sp.csr_matrix, threads: int, seed: int):
    """The implicit library's model: ALS with the same hyperparameters and objective
    (implicit's confidence is alpha * value, so it is given 1 + alpha * value), BPR with
    recore's number of factors and implicit's defaults otherwise."""
    if kind == "implicit-als":
        from implicit.cpu.als import AlternatingLeastSquares

        model = AlternatingLeastSquares(
            factors=params["factors"],
            regularization=params["regularization"],
            alpha=1.0,
            iterations=params["iterations"],
            use_cg=True,
            num_threads=threads,
            random_state=seed,
            calculate_training_loss=False,
        )
        confidence = train.copy()
        confidence.data = 1.0 + params["alpha"] * confidence.data
        model.fit(confidence, show_progress=False)
    else:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        # Its own learning rate, regularization and iterations: recore's adaptive rates do not
        # carry over to its constant one.
        model = BayesianPersonalizedRanking(factors=params["factors"], num_threads=threads, random_state=seed)
        model.fit(train, show_progress=False)
    users = np.arange(train.shape[0])
    return lambda k: model.recommend(users, train, N=k, filter_already_liked_items=True)


def _faiss_topk(job: dict, train: sp.csr_matrix, directory: str, threads: int):
    """faiss's exact inner-product index over the ALS factors. It has no per-user exclusion,
    so each batch of users asks for k plus the most training items any of them has, and the
    training items are dropped afterwards, as faiss's users do."""
    import faiss

    if threads:
        faiss.omp_set_num_threads(threads)
    with np.load(os.path.join(directory, f"model{job['needs']}.npz"), allow_pickle=False) as saved:
        users, items = saved["user_factors"], saved["item_factors"]
    index = faiss.IndexFlatIP(items.shape[1])
    index.add(items)
    n_items = items.shape[0]
    # Each training pair as one sorted key, for membership tests by binary search.
    seen_keys = np.repeat(np.arange(train.shape[0], dtype=np.int64), np.diff(train.indptr)) * n_items + train.indices

    def search(k):
        out = np.full((users.shape[0], k), -1, dtype=np.int64)
        batch = 4096
        for first in range(0, users.shape[0], batch):
            rows = np.arange(first, min(first + batch, users.shape[0]))
            width = min(k + int(np.diff(train.indptr)[rows].max(initial=0)), n_items)
            _, ids = index.search(users[rows], width)
            keys = rows[:, None] * n_items + np.maximum(ids, 0)
            found = np.minimum(np.searchsorted(seen_keys, keys), max(len(seen_keys) - 1, 0))
            keep = (ids >= 0) & ~(seen_keys[found] == keys if len(seen_keys) else np.zeros(ids.shape, bool))
            rank = np.cumsum(keep, axis=1) - 1  # the first k kept ids of each row, in order
            chosen = keep & (rank < k)
            out[rows[np.nonzero(chosen)[0]], rank[chosen]] = ids[chosen]
        return out, None

    return search


def _worker(directory: str, index: int) -> None:
    with open(os.path.join(directory, f"job{index}.json")) as file:
        job = json.load(file)
    train = sp.load_npz(os.path.join(directory, "train.npz")).tocsr()
    with _Memory() as fit_memory:
        start = time.perf_counter()
        top_k = _fit(job, train, directory)
        fit_seconds = time.perf_counter() - start
    with _Memory() as topk_memory:
        start = time.perf_counter()
        ids, _ = top_k(job["k"])
        topk_seconds = time.perf_counter() - start
    no_fit = job["model"] in ("planted",)
    np.save(os.path.join(directory, f"ids{index}.npy"), np.ascontiguousarray(ids))
    with open(os.path.join(directory, f"result{index}.json"), "w") as file:
        json.dump(
            {
                "fit_seconds": None if no_fit else fit_seconds,
                "topk_seconds": topk_seconds,
                "fit_peak_mib": None if no_fit else fit_memory.mib,
                "topk_peak_mib": topk_memory.mib,
            },
            file,
        )


if __name__ == "__main__":
    _worker(sys.argv[1], int(sys.argv[2]))
