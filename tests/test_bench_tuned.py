"""The tuned rows of ``recore bench``: what the searches hand the workers, and how the penalty
that iALS's search draws becomes the model's regularization."""

from __future__ import annotations

import numpy as np
import pytest
import recore
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from recore import _bench, evaluation

SMALL = _bench.Settings(
    factors=4, iterations=4, regularization=20.0, threads=1, seed=3, tune_trials=4, tune_budget_seconds=60.0
)


@pytest.fixture(scope="module")
def interactions():
    return recore.datasets.synthetic_preferences(200, 50, 2_000, random_state=0)


@pytest.fixture(scope="module")
def searches(interactions):
    return _bench.tune_models(interactions, SMALL, say=lambda line: None)


@given(
    penalty=st.floats(1e-3, 1e3),
    unobserved_weight=st.floats(1e-3, 1.0),
    exponent=st.sampled_from([0.0, 0.5, 1.0, 0.25]),
    rows=st.lists(st.integers(0, 30), min_size=1, max_size=12),
    n_items=st.integers(30, 200),
)
def test_ials_regularization_gives_a_mean_user_the_drawn_penalty(penalty, unobserved_weight, exponent, rows, n_items):
    indptr = np.concatenate([[0], np.cumsum(rows)])
    matrix = sp.csr_matrix(
        (np.ones(indptr[-1], np.float32), np.zeros(indptr[-1], np.int32), indptr), shape=(len(rows), n_items)
    )
    regularization = _bench.ials_regularization(penalty, unobserved_weight, exponent, matrix)
    mean_items = np.mean(rows)  # the documented lambda_u of a user with the mean count
    assert regularization * (mean_items + unobserved_weight * n_items) ** exponent == pytest.approx(penalty, rel=1e-9)


def test_tuned_searches_hand_the_workers_the_winning_models(interactions, searches):
    """Each row's parameters, fitted as the worker fits them on the search's data, score what
    the search reported: the penalty was turned into the model's regularization, and nothing
    the winner depended on was left behind."""
    assert [search.label for search in searches] == ["ALS, tuned", "iALS, tuned"]
    fit_part, validation = evaluation.random_split(_bench._binary(interactions), 0.1, random_state=SMALL.seed + 1)
    for search in searches:
        assert search.points == SMALL.tune_trials and search.fits >= search.points
        assert search.params["iterations"] in (2, 4)  # checkpoints up to the study's iterations
        assert search.params["factors"] == SMALL.factors and "typical_penalty" not in search.params
        model = recore.ALS(num_threads=SMALL.threads, random_state=SMALL.seed, **search.params).fit(fit_part)
        score = evaluation.ranking_metrics(model, fit_part, validation, k=SMALL.k)["ndcg"]
        assert score == pytest.approx(search.score, abs=1e-6)
    plain, ials = (search.params for search in searches)
    assert "unobserved_weight" not in plain and "regularization_exponent" not in plain
    assert ials["alpha"] == 0.0 and ials["unobserved_weight"] in _bench.TUNED_UNOBSERVED_WEIGHTS
    assert ials["regularization_exponent"] in _bench.TUNED_EXPONENTS


def test_tuned_searches_are_seeded(interactions, searches):
    again = _bench.tune_models(interactions, SMALL, say=lambda line: None)
    assert [(search.params, search.score) for search in again] == [(search.params, search.score) for search in searches]


def test_tuned_rows_follow_the_recore_rows(monkeypatch, searches):
    monkeypatch.setattr(_bench, "_importable", lambda module: module == "faiss")
    rows = _bench.candidates(SMALL, ratings=True, planted=True, tuned=searches)
    labels = [row.label for row in rows]
    assert labels == [
        "most popular",
        "ALS, CG",
        "ALS, Cholesky",
        "BPR (SGD)",
        "biased MF (SGD), fits ratings",
        "ALS, tuned",
        "iALS, tuned",
        "ALS, CG + faiss top-k",
        "planted preferences",
    ]
    tuned = rows[5:7]
    assert all(row.source == "recore" and row.model == "als" and row.params["solver"] == "cg" for row in tuned)
    assert tuned[1].params["unobserved_weight"] == searches[1].params["unobserved_weight"]


def test_report_describes_the_searches(searches):
    results = [
        {"label": label, "source": "recore", "ndcg": 0.2, "precision": 0.1, "recall": 0.3, "coverage": 0.5,
         "fit_seconds": 0.5, "topk_seconds": 0.1, "fit_peak_mib": 3.0, "topk_peak_mib": 1.0}
        for label in ("ALS, tuned", "iALS, tuned")
    ]  # fmt: skip
    study = _bench.Study(results, _bench.Settings(regularization=10.0), tuned=searches)
    report = _bench.markdown(study, title="t", description="d", memory_method="m")
    assert "| ALS, tuned | recore |" in report and "| iALS, tuned | recore |" in report
    assert "Tuned rows: `recore.evaluation.tune`" in report
    assert f"iALS, tuned: regularization={searches[1].params['regularization']:.3g}" in report
    assert "alpha0=" in report and "nu=" in report


def test_ials_at_nu_zero_is_the_plain_model_rescaled():
    """What centring iALS's space on the plain one rests on: observed weight 1 + alpha,
    unobserved 1 and regularization r give the same factors as 1, 1 / (1 + alpha) and
    r / (1 + alpha)."""
    interactions = recore.datasets.synthetic_preferences(120, 40, 1_500, random_state=1)
    for alpha, regularization in ((1.0, 20.0), (4.0, 3.0)):
        plain = recore.ALS(factors=6, alpha=alpha, regularization=regularization, iterations=5, random_state=0)
        rescaled = recore.ALS(
            factors=6,
            alpha=0.0,
            unobserved_weight=1 / (1 + alpha),
            regularization=regularization / (1 + alpha),
            iterations=5,
            random_state=0,
        )
        plain.fit(_bench._binary(interactions))
        rescaled.fit(_bench._binary(interactions))
        np.testing.assert_allclose(rescaled.user_factors_, plain.user_factors_, rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(rescaled.item_factors_, plain.item_factors_, rtol=1e-3, atol=1e-5)


def test_tune_models_needs_the_validated_regularization(interactions):
    with pytest.raises(ValueError, match="settings.regularization"):
        _bench.tune_models(interactions, _bench.Settings(factors=4, iterations=2), say=lambda line: None)
