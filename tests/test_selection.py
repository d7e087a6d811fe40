"""Choice of the update by pseudo-extrapolation on the training subsets."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import condupdate
from condupdate._errors import ConfigError, ExtrapolationWarning
from condupdate.datasets import linear_weights_problem
from condupdate.emulators import MLP, TrainConfig, train
from condupdate.jobs.config import parse_config
from condupdate.update import ConditionalUpdate, make_space
from condupdate.update.selection import (
    NONE,
    Candidate,
    ZeroAnomalyRegressor,
    holdout_subsets,
    score_candidates,
    write_selection_csv,
)

FINETUNE = TrainConfig(epochs=20, learning_rate=1e-2, batch_size=50, patience=20, validation_fraction=0.0)
PARENT = TrainConfig(epochs=40, learning_rate=1e-2, batch_size=50, patience=40, validation_fraction=0.0)


# --------------------------------------------------------------------------- #
# Held-out subsets
# --------------------------------------------------------------------------- #


def test_holdout_high_end_when_application_above():
    predictors = np.array([[0.4], [0.0], [1.0], [0.2], [0.8], [0.6]])  # not sorted on purpose

    held_out = holdout_subsets(predictors, np.array([[3.0], [3.5]]), 2)

    assert sorted(held_out.tolist()) == [2, 4]  # predictors 1.0 and 0.8


def test_holdout_low_end_when_application_below():
    predictors = np.array([[0.4], [0.0], [1.0], [0.2], [0.8], [0.6]])

    held_out = holdout_subsets(predictors, np.array([[-2.0]]), 3)

    assert sorted(held_out.tolist()) == [0, 1, 3]  # predictors 0.0, 0.2 and 0.4


def test_holdout_follows_application_direction_with_two_predictors():
    # The application lies beyond the range of the second predictor only.
    predictors = np.array([[0.0, 5.0], [1.0, 0.0], [2.0, 4.0], [3.0, 1.0], [4.0, 3.0]])

    held_out = holdout_subsets(predictors, np.array([[2.0, 9.0]]), 2)

    assert sorted(held_out.tolist()) == [0, 2]  # second predictor 5.0 and 4.0


def test_holdout_ignores_nan_application_rows():
    predictors = np.arange(5.0)[:, None]

    held_out = holdout_subsets(predictors, np.array([[np.nan], [-4.0]]), 1)

    assert held_out.tolist() == [0]


def test_holdout_leaving_one_subset_raises():
    with pytest.raises(ValueError, match="update.select.holdout to at most 2"):
        holdout_subsets(np.arange(4.0)[:, None], np.array([[9.0]]), 3)


def test_holdout_all_nan_application_raises():
    with pytest.raises(ValueError, match="Every application predictor is NaN"):
        holdout_subsets(np.arange(4.0)[:, None], np.array([[np.nan]]), 1)


# --------------------------------------------------------------------------- #
# Scores on problems with a known truth
# --------------------------------------------------------------------------- #


def _problem(bias_slope: float, noise: float = 0.0, n_subsets: int = 6, n: int = 100, seed: int = 0):
    # y = w . x + bias_slope * p (+ noise): the predictor p, which the network does
    # not see, shifts only the output bias.
    rng = np.random.default_rng(seed)
    weights = np.array([1.0, -0.5, 0.8])
    subsets = []
    for k, p in enumerate(np.linspace(0.0, 1.0, n_subsets)):
        X = rng.standard_normal((n, 3)).astype(np.float32)
        y = (X @ weights + bias_slope * p + noise * rng.standard_normal(n))[:, None].astype(np.float32)
        subsets.append((f"p={p:.1f}", X, y, np.full((n, 1), p)))
    return subsets, np.linspace(0.0, 1.0, n_subsets)[:, None]


def _train_parent(X: np.ndarray, y: np.ndarray) -> MLP:
    parent = MLP(n_inputs=X.shape[1], n_outputs=y.shape[1], width=8, depth=1, seed=0)
    train(parent, X, y, PARENT)
    return parent


def _parent(subsets) -> MLP:
    return _train_parent(np.concatenate([s[1] for s in subsets]), np.concatenate([s[2] for s in subsets]))


def test_biases_beat_parent_when_bias_depends_on_predictor():
    subsets, predictors = _problem(bias_slope=2.0)
    candidates = [Candidate("biases", "linear")]

    selection = score_candidates(
        _parent(subsets), subsets, predictors, np.array([[3.0]]), candidates, holdout=2, finetune=FINETUNE
    )
    scores = selection.table.set_index("candidate").rmse

    assert selection.chosen == Candidate("biases", "linear")
    assert selection.holdout == ["p=1.0", "p=0.8"]
    # The parent cannot see p, so it misses the held-out bias shifts 2 * (0.8, 1.0) - its mean bias.
    assert scores[NONE] > 0.3
    assert scores["biases/linear"] < 0.5 * scores[NONE]


def test_retrained_parent_never_sees_holdout():
    subsets, predictors = _problem(bias_slope=2.0)
    seen = []

    def train_parent(X, y):
        seen.append(len(X))
        return _train_parent(X, y)

    selection = score_candidates(
        _parent(subsets), subsets, predictors, np.array([[-3.0]]), [Candidate("biases", "linear")],
        holdout=2, finetune=FINETUNE, train_parent=train_parent,
    )

    assert seen == [4 * 100]
    assert selection.parent == "retrain"
    assert selection.holdout == ["p=0.0", "p=0.2"]
    assert selection.chosen.parameters == "biases"


def test_parent_ties_without_predictor_dependence():
    subsets, predictors = _problem(bias_slope=0.0, noise=0.3)
    candidates = [Candidate("all", "linear"), Candidate("biases", "linear")]

    selection = score_candidates(
        _parent(subsets), subsets, predictors, np.array([[3.0]]), candidates, holdout=2, finetune=FINETUNE
    )
    scores = selection.table.set_index("candidate").rmse

    # Noise alone: an update can only fit noise, so it scores no better than the
    # parent beyond a small tolerance, and a tie goes to the parent.
    assert scores.min() > 0.98 * scores[NONE]
    assert scores[NONE] == pytest.approx(0.3, rel=0.15)


def test_failed_candidate_is_recorded_not_chosen():
    subsets, predictors = _problem(bias_slope=2.0, n_subsets=4)
    candidates = [Candidate("biases", "spline", {"n_knots": 1})]  # a spline needs at least 2 knots

    selection = score_candidates(
        _parent(subsets), subsets, predictors, np.array([[3.0]]), candidates, holdout=2, finetune=FINETUNE
    )
    row = selection.table.set_index("candidate").loc["biases/spline,n_knots=1"]

    assert np.isnan(row.rmse)
    assert row.error.startswith("ValueError")
    assert selection.chosen.parameters == NONE


def test_score_is_deterministic():
    subsets, predictors = _problem(bias_slope=1.0)
    parent = _parent(subsets)
    args = (parent, subsets, predictors, np.array([[3.0]]), [Candidate("all", "ridge")])

    first = score_candidates(*args, holdout=2, finetune=FINETUNE).table
    second = score_candidates(*args, holdout=2, finetune=FINETUNE).table

    pd.testing.assert_frame_equal(first, second)


def test_zero_regressor_child_is_parent_bit_for_bit():
    problem = linear_weights_problem(n_subsets=3, samples_per_subset=50)
    parent = MLP(n_inputs=3, n_outputs=1, width=8, depth=1, seed=0)
    update = ConditionalUpdate(parent, ZeroAnomalyRegressor(), TrainConfig(epochs=1), space=make_space("biases"))
    update.fit(problem.subsets, problem.predictors)
    X = np.random.default_rng(1).standard_normal((64, 3)).astype(np.float32)

    child = update.predict(X, np.full(len(X), 5.0))
    with torch.no_grad():
        expected = parent(torch.as_tensor(X)).numpy()

    np.testing.assert_array_equal(child, expected)


# --------------------------------------------------------------------------- #
# Configuration
# --------------------------------------------------------------------------- #


def _with_select(run_config, select, **update) -> dict:
    raw = run_config(["unused.nc"])
    raw["update"] = {"select": select, **update}
    return raw


def test_config_accepts_select(run_config):
    select = {"candidates": [{"parameters": "biases"}, {"parameters": "last_layers", "n_layers": 2, "regressor": "linear"}]}

    config = parse_config(_with_select(run_config, select))

    assert config.update.select.holdout == 2
    assert config.update.select.parent == "retrain"
    assert config.update.select.candidates[1].n_layers == 2


@pytest.mark.parametrize(
    ("select", "message"),
    [
        ({"candidates": []}, r"update\.select\.candidates: List should have at least 1 item"),
        ({"candidates": [{"parameters": "weights"}]}, r"update\.select\.candidates\.0\.parameters"),
        ({"candidates": [{"parameters": "all", "rank": 4}]}, "rank applies to parameters 'lora' only"),
        ({"candidates": [{"parameters": "lora", "n_layers": 2}]}, "n_layers applies to parameters 'last_layers' only"),
        ({"candidates": [{"parameters": "all", "regressor": "cubic"}]}, "Unknown weight regressor method 'cubic'"),
        ({"candidates": [{"parameters": "none", "regressor": "linear"}]}, "candidate 'none' is the parent"),
        ({"candidates": [{"parameters": "all", "regressor_params": {"degree": 2}}]}, "regressor_params needs regressor"),
        ({"candidates": [{"parameters": "all"}, {"parameters": "all"}]}, "repeats"),
        ({"candidates": [{"parameters": "all"}], "holdout": 0}, r"update\.select\.holdout: Input should be greater"),
        ({"candidates": [{"parameters": "all"}], "parent": "keep"}, r"update\.select\.parent"),
        ({"candidates": [{"parameters": "all"}], "subsets": 2}, r"update\.select\.subsets: unknown key"),
    ],
)
def test_config_rejects_bad_select(run_config, select, message):
    raw = _with_select(run_config, select)
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_config_rejects_select_with_posterior_ensemble(run_config):
    raw = _with_select(run_config, {"candidates": [{"parameters": "all"}]}, ensemble="posterior")
    raw["regressor"] = {"method": "bayesian_ridge"}
    with pytest.raises(ConfigError, match="ensemble 'posterior' cannot be combined with update.select"):
        parse_config(raw)


# --------------------------------------------------------------------------- #
# In a run
# --------------------------------------------------------------------------- #


def _select_config(run_config, holdout: int = 2) -> condupdate.RunConfig:
    raw = run_config([])
    raw["update"] = {
        "select": {"candidates": [{"parameters": "biases"}, {"parameters": "all", "regressor": "linear"}], "holdout": holdout}
    }
    return parse_config(raw)


def _run(config, dataset, out=None):
    with warnings.catch_warnings():
        # Whether the tiny field's application lies beyond 3 training standard deviations is beside the point here.
        warnings.simplefilter("ignore", ExtrapolationWarning)
        return condupdate.run(config, out, dataset=dataset)


def _blind_config(config) -> condupdate.RunConfig:
    # Inputs and predictor read a copy of the field, so the target can be blanked alone.
    raw = config.model_dump(mode="json")
    raw["data"]["inputs"] = [
        {**spec, "variable": "air_temperature_input"} if spec.get("variable") else spec for spec in raw["data"]["inputs"]
    ]
    return parse_config(raw)


def test_run_selection_ignores_application_targets(run_config, temperature_dataset, tmp_path):
    config = _blind_config(_select_config(run_config))
    dataset = temperature_dataset()
    dataset["air_temperature_input"] = dataset.air_temperature.copy()
    blanked = dataset.copy(deep=True)
    blanked["air_temperature"] = blanked.air_temperature.where(blanked.time.dt.year < 1890)

    result = _run(config, dataset)
    blind = _run(config, blanked)

    pd.testing.assert_frame_equal(result.selection.table, blind.selection.table)
    assert result.selection.chosen == blind.selection.chosen
    assert np.isfinite(result.selection.table.rmse).all()


def test_selection_csv_round_trip(run_config, temperature_dataset, tmp_path):
    result = _run(_select_config(run_config), temperature_dataset())

    write_selection_csv(result.selection, tmp_path / "selection.csv")
    written = pd.read_csv(tmp_path / "selection.csv", keep_default_na=False)

    assert written.candidate.tolist() == result.selection.table.candidate.tolist()
    assert written.chosen.tolist() == result.selection.table.chosen.tolist()
    np.testing.assert_allclose(written.rmse, result.selection.table.rmse, rtol=1e-5)
    assert set(written.holdout) == {" ".join(result.selection.holdout)}


def test_run_holds_out_warmest_subsets(run_config, temperature_dataset):
    # The field warms through 1860-1899, so the application (1890-1899) lies above
    # the training range of the domain-mean predictor.
    result = _run(_select_config(run_config), temperature_dataset())

    predictor = result.update.anomalies_["domain_mean_temperature"].to_series()
    warmest = predictor.sort_values().index[-2:]

    assert sorted(result.selection.holdout) == sorted(warmest)
    assert sorted(result.selection.inner) == sorted(predictor.index[~predictor.index.isin(warmest)])


def test_run_uses_chosen_update(run_config, temperature_dataset):
    result = _run(_select_config(run_config), temperature_dataset())

    chosen = result.selection.chosen
    if chosen.parameters == NONE:
        assert isinstance(result.update.regressor_, ZeroAnomalyRegressor)
    else:
        assert result.config.update.parameters == chosen.parameters
        assert result.config.regressor.method == chosen.regressor
    assert result.selection.table.chosen.sum() == 1


def test_run_holdout_too_large_raises(run_config, temperature_dataset):
    config = _select_config(run_config, holdout=5)
    with pytest.raises(ValueError, match="Holding out 5 of 6 training subsets"):
        condupdate.run(config, dataset=temperature_dataset())
