"""The use-case scorecard: baselines against closed forms, scores, case loading and ``condupdate bench``."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
import xarray as xr

from condupdate import ConditionalUpdate
from condupdate._errors import ConfigError
from condupdate.bench.baselines import (
    NearestSubsetRegressor,
    TaskVectorRegressor,
    least_squares_baseline,
    with_regressor,
)
from condupdate.bench.cases import CASES, Case
from condupdate.bench.scorecard import (
    HEADER,
    METHODS,
    bootstrap_interval,
    crps_gaussian,
    load_case_config,
    score_method,
)
from condupdate.cli import main
from condupdate.datasets import linear_weights_problem
from condupdate.datasets.scenarios import stack_scenarios
from condupdate.emulators import MLP, TrainConfig
from condupdate.update.anomalies import anomalies_to_dataarray

# --------------------------------------------------------------------------- #
# Baselines on a linear-weights problem, y = (a + b p) . x
# --------------------------------------------------------------------------- #


def _linear_update(problem, anomalies: np.ndarray) -> ConditionalUpdate:
    # A linear network (no hidden layer, zero bias) whose anomaly store is given exactly.
    parent = MLP(n_inputs=len(problem.intercept), n_outputs=1, depth=0, seed=0)
    update = ConditionalUpdate(parent)
    labels = [label for label, _, _ in problem.subsets]
    store = anomalies_to_dataarray(anomalies, labels, problem.predictors, ["p"], update.layout_)
    return update.set_anomalies(store).fit_regressor()


def _exact_anomalies(problem, update_or_parent) -> np.ndarray:
    # theta_k - theta0 for a linear net that fits subset k exactly: weights w(p_k), bias 0.
    theta0 = torch.cat([p.detach().reshape(-1) for p in update_or_parent.parameters()]).numpy().astype("float64")
    rows = [np.concatenate([problem.weights(p), [0.0]]) - theta0 for p in problem.predictors[:, 0]]
    return np.stack(rows)


def test_task_vector_exact_on_linear_weights():
    problem = linear_weights_problem(n_subsets=6, samples_per_subset=50)
    parent = MLP(n_inputs=3, n_outputs=1, depth=0, seed=0)
    update = with_regressor(_linear_update(problem, _exact_anomalies(problem, parent)), TaskVectorRegressor())

    for p in (-2.0, 0.5, 3.0):
        child = update.child(p)
        weight = child.layers[0].weight.detach().numpy()[0].astype("float64")
        np.testing.assert_allclose(weight, problem.weights(p), rtol=1e-5, atol=1e-5)
        assert abs(float(child.layers[0].bias.detach())) < 1e-6


def test_task_vector_uses_only_extreme_subsets():
    predictors = np.array([[0.0], [1.0], [3.0], [2.0]])
    anomalies = np.array([[0.0, 1.0], [50.0, -50.0], [6.0, 1.0], [-9.0, 9.0]])
    model = TaskVectorRegressor().fit(predictors, anomalies)

    assert (model.low_, model.high_) == (0, 2)
    # d_lo + (p - 0) / (3 - 0) * (d_hi - d_lo), with d_hi - d_lo = (6, 0)
    np.testing.assert_allclose(model.predict([[6.0], [1.5]]), [[12.0, 1.0], [3.0, 1.0]])


def test_task_vector_rejects_constant_predictor():
    with pytest.raises(ValueError, match="single value"):
        TaskVectorRegressor().fit([[1.0], [1.0]], [[0.0], [1.0]])


def test_task_vector_close_after_real_finetuning():
    problem = linear_weights_problem(n_subsets=4, samples_per_subset=200)
    parent = MLP(n_inputs=3, n_outputs=1, depth=0, seed=0)
    finetune = TrainConfig(epochs=300, batch_size=200, learning_rate=0.05, validation_fraction=0.0, patience=0)
    update = ConditionalUpdate(parent, TaskVectorRegressor(), finetune).fit(problem.subsets, problem.predictors, ["p"])

    X, y = problem.sample(p=3.0, n=500, seed=7)
    predicted = update.predict(X, np.full(len(X), 3.0))
    rmse = float(np.sqrt(np.mean((predicted - y) ** 2)))
    assert rmse < 0.05 * float(np.std(y))


def test_nearest_finetune_picks_nearest_subset():
    problem = linear_weights_problem(n_subsets=6, samples_per_subset=50)  # p = 0, 0.2, ..., 1
    parent = MLP(n_inputs=3, n_outputs=1, depth=0, seed=0)
    anomalies = _exact_anomalies(problem, parent)
    update = with_regressor(_linear_update(problem, anomalies), NearestSubsetRegressor())

    for p, nearest in ((-5.0, 0), (0.29, 1), (0.31, 2), (0.79, 4), (9.0, 5)):
        assert update.regressor_.nearest([[p]])[0] == nearest
        np.testing.assert_array_equal(update.predict_anomaly([p])[0], anomalies[nearest])


def test_nearest_subset_scales_each_predictor():
    # Column 2 spans 1000 times column 1, so unscaled distances would ignore column 1.
    predictors = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1000.0]])
    model = NearestSubsetRegressor().fit(predictors, np.eye(3))
    assert model.nearest([[0.9, 100.0]])[0] == 1


def test_least_squares_baseline_recovers_linear_target():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    coefficients = np.array([1.5, -2.0, 0.25])
    Y = np.column_stack([4.0 + X @ coefficients, -1.0 + X @ (2 * coefficients)])
    X_new = rng.normal(loc=10.0, size=(5, 3))  # far outside the training inputs

    predicted = least_squares_baseline(X, Y, X_new)

    np.testing.assert_allclose(predicted[:, 0], 4.0 + X_new @ coefficients, rtol=1e-10)
    np.testing.assert_allclose(predicted[:, 1], -1.0 + X_new @ (2 * coefficients), rtol=1e-10)


def test_least_squares_baseline_equals_normal_equations_with_gaps():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(100, 2))
    y = 1.0 + X @ np.array([0.5, -0.3]) + rng.normal(scale=0.5, size=100)
    y[[3, 40, 77]] = np.nan
    X_new = rng.normal(size=(4, 2))

    predicted = least_squares_baseline(X, y[:, None], X_new)[:, 0]

    rows = np.isfinite(y)
    design = np.column_stack([np.ones(rows.sum()), X[rows]])
    beta = np.linalg.solve(design.T @ design, design.T @ y[rows])
    np.testing.assert_allclose(predicted, np.column_stack([np.ones(4), X_new]) @ beta, rtol=1e-10)


# --------------------------------------------------------------------------- #
# Scores and intervals
# --------------------------------------------------------------------------- #


def test_crps_gaussian_matches_closed_form():
    truth = xr.DataArray([0.0, 1.0, -2.0, 0.5], dims="x")
    mean = xr.DataArray([0.3, 0.0, -2.0, 3.0], dims="x")
    std = xr.DataArray([1.0, 2.0, 0.5, 0.1], dims="x")

    z = ((truth - mean) / std).values
    closed = std.values * (z * (2 * scipy.stats.norm.cdf(z) - 1) + 2 * scipy.stats.norm.pdf(z) - 1 / np.sqrt(np.pi))
    assert crps_gaussian(mean, std, truth) == pytest.approx(closed.mean(), rel=1e-10)


def test_score_method_reads_std_and_members():
    truth = xr.DataArray(np.zeros(4), dims="x")
    members = xr.DataArray([[1.0, 1.0, 1.0, 1.0], [3.0, 3.0, 3.0, 3.0]], dims=("member", "x"))

    deterministic = score_method(truth, truth + 2.0)
    ensemble = score_method(truth, members)
    gaussian = score_method(truth, truth, std=truth + 1.0)

    assert math.isnan(deterministic["crps"])
    assert deterministic["rmse"] == pytest.approx(2.0)
    assert ensemble["rmse"] == pytest.approx(2.0)  # the member mean
    assert ensemble["crps"] == pytest.approx(2.0 - 0.5)  # E|X - y| - E|X - X'| / 2 for members {1, 3}
    assert gaussian["crps"] == pytest.approx(1.0 * (2 * scipy.stats.norm.pdf(0.0) - 1 / np.sqrt(np.pi)))


def test_bootstrap_interval_brackets_mean():
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    low, high = bootstrap_interval(values)
    assert 1.0 <= low < 3.0 < high <= 5.0


def test_bootstrap_interval_empty_for_one_seed():
    assert all(math.isnan(v) for v in bootstrap_interval([2.0]))


# --------------------------------------------------------------------------- #
# Cases and the scenario loader
# --------------------------------------------------------------------------- #


CASE_CONFIGS = Path(__file__).resolve().parents[1] / "data" / "configs"


def _write_config(folder: Path) -> None:
    (folder / "warm-future.yaml").write_text((CASE_CONFIGS / "warm-future.yaml").read_text())


def test_quick_overrides_merge_key_by_key(tmp_path):
    _write_config(tmp_path)
    case = Case("warm-future", "temporal", "warm-future.yaml", quick={"training": {"epochs": 3}, "data": {"thin": {"latitude": 2}}})

    config = load_case_config(case, quick=True, folder=tmp_path)

    assert config.training.epochs == 3
    assert config.training.learning_rate == 0.002  # kept from the file
    assert config.data.thin == {"latitude": 2}
    assert config.data.targets == ["air_temperature"]
    assert load_case_config(case, quick=False, folder=tmp_path).training.epochs == 40


def test_quick_override_with_bad_value_names_case(tmp_path):
    _write_config(tmp_path)
    case = Case("warm-future", "temporal", "warm-future.yaml", quick={"training": {"epochs": 0}})
    with pytest.raises(ConfigError, match="quick overrides of case 'warm-future'"):
        load_case_config(case, quick=True, folder=tmp_path)


def test_every_existing_case_config_is_valid():
    for case in CASES.values():
        if (CASE_CONFIGS / case.config).is_file():
            load_case_config(case, quick=True, folder=CASE_CONFIGS)


def _annual(values: np.ndarray, start: int) -> xr.DataArray:
    time = xr.date_range(f"{start}-06-01", periods=len(values), freq="YS-JUN", calendar="360_day", use_cftime=True)
    return xr.DataArray(values, dims=("time", "x"), coords={"time": time, "x": [0.0, 1.0]}, name="tas", attrs={"units": "K"})


def test_stack_scenarios_selects_years_by_label():
    e1 = _annual(np.arange(20.0).reshape(10, 2), 2000)
    a1b = _annual(100 + np.arange(20.0).reshape(10, 2), 2000)

    ds = stack_scenarios({"E1": e1, "A1B": a1b})
    index = ds.indexes["scenario_year"]
    applied = ds.sel(scenario_year=slice("A1B-2007", "A1B-2009"))

    assert index.is_monotonic_increasing
    assert list(index[:2]) == ["A1B-2000", "A1B-2001"]
    assert index[-1] == "E1-2009"
    assert ds.sel(scenario_year=slice("E1-2000", "E1-2009")).sizes["scenario_year"] == 10
    np.testing.assert_array_equal(applied.tas.values, a1b.values[7:])
    assert list(applied.year.values) == [2007, 2008, 2009]
    assert set(applied.scenario.values) == {"A1B"}
    assert ds.tas.attrs["units"] == "K"


def test_stack_scenarios_rejects_other_grid():
    e1 = _annual(np.zeros((3, 2)), 2000)
    other = e1.assign_coords(x=[0.0, 2.0])
    with pytest.raises(ValueError, match="different grids"):
        stack_scenarios({"E1": e1, "A1B": other})


def test_scenario_loader_keeps_runs_apart():
    pytest.importorskip("iris_sample_data")
    from condupdate.datasets import load_dataset

    ds = load_dataset("scenarios")
    e1 = ds.air_temperature.sel(scenario_year="E1-2099")
    a1b = ds.air_temperature.sel(scenario_year="A1B-2099")

    assert ds.sizes["scenario_year"] == 480
    assert float(abs(e1 - a1b).mean()) > 0.5  # the two scenarios differ by 2099


# --------------------------------------------------------------------------- #
# The command
# --------------------------------------------------------------------------- #


def _read_csv(path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


@pytest.fixture(scope="module")
def quick_bench(tmp_path_factory):
    pytest.importorskip("iris_sample_data")
    out = tmp_path_factory.mktemp("bench") / "out"
    status = main(["bench", "--quick", "--cases", "warm-future", "--out", str(out)])
    return status, out


@pytest.mark.slow
def test_bench_quick_writes_every_method(quick_bench):
    status, out = quick_bench
    rows = _read_csv(out / "bench.csv")

    assert status == 0
    assert rows[0] == list(HEADER)
    assert {(row[1], row[2]) for row in rows[1:]} == {(m, s) for m in METHODS for s in ("0", "1")}
    for row in rows[1:]:
        record = dict(zip(HEADER, row, strict=True))
        assert record["case"] == "warm-future"
        assert float(record["rmse"]) >= float(record["mae"]) > 0
        assert record["crps"] == ""  # no ensemble and no Gaussian head in this case
        assert float(record["extrapolation_distance"]) > 3


@pytest.mark.slow
def test_bench_linear_baseline_is_pattern_scaling(quick_bench):
    # Area-weighted pattern scaling on the domain-mean predictor has no area-mean bias.
    _, out = quick_bench
    for row in _read_csv(out / "bench.csv")[1:]:
        if row[1] == "linear_baseline":
            assert abs(float(row[5])) < 1e-3


@pytest.mark.slow
def test_bench_quick_writes_summary_and_figures(quick_bench):
    _, out = quick_bench
    summary = _read_csv(out / "summary.csv")
    gains = _read_csv(out / "gains.csv")

    assert [row[1] for row in summary[1:]] == list(METHODS)
    assert all(row[2] == "2" for row in summary[1:])
    assert [row[1] for row in gains[1:]] == ["parent", "best_baseline"]
    for name in ("rmse_by_method.png", "warm-future_error_vs_distance.png"):
        assert (out / name).stat().st_size > 0


@pytest.mark.slow
def test_bench_refuses_non_empty_output(quick_bench, capsys):
    _, out = quick_bench
    before = (out / "bench.csv").read_bytes()

    status = main(["bench", "--quick", "--cases", "warm-future", "--out", str(out)])

    assert status == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "bench.csv").read_bytes() == before


def test_bench_overwrite_refuses_foreign_folder(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep")
    status = main(["bench", "--quick", "--cases", "warm-future", "--out", str(tmp_path), "--overwrite"])
    assert status == 2
    assert "contains no bench results" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "keep"


def test_bench_skips_case_without_config(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CONDUPDATE_CONFIGS", str(tmp_path))
    status = main(["bench", "--quick", "--cases", "amoc-tipping,deep-density", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err

    assert status == 2
    assert "case amoc-tipping skipped" in err
    assert "case deep-density skipped" in err
    assert not (tmp_path / "out").exists()


def test_bench_skips_case_whose_data_package_is_missing(tmp_path, monkeypatch, capsys):
    import dataclasses

    import condupdate.bench.cases

    case = condupdate.bench.cases.CASES["cross-model"]
    absent = dataclasses.replace(case, requires=(("condupdate_absent_data_package", "pip install absent-data"),))
    monkeypatch.setitem(condupdate.bench.cases.CASES, "cross-model", absent)
    status = main(["bench", "--quick", "--cases", "cross-model", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err

    assert status == 2
    assert "case cross-model skipped: package condupdate_absent_data_package not installed" in err
    assert "pip install absent-data" in err
    assert not (tmp_path / "out").exists()


def test_bench_rejects_unknown_case(tmp_path, capsys):
    status = main(["bench", "--cases", "warm-futur", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2
    assert "'warm-futur'" in err
    assert "warm-future" in err


def test_bench_rejects_zero_seeds(tmp_path, capsys):
    status = main(["bench", "--seeds", "0", "--out", str(tmp_path / "out")])
    assert status == 2
    assert "seeds must be at least 1" in capsys.readouterr().err


def _tiny_case(tmp_path, run_config, write_netcdf, temperature_dataset, **changes) -> Path:
    # A tiny synthetic run saved as the configuration of case warm-future in its own folder.
    import yaml

    path = write_netcdf(temperature_dataset(), tmp_path / "field.nc")
    raw = run_config([path])
    raw.update(changes)
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "warm-future.yaml").write_text(yaml.safe_dump(raw))
    return folder


def test_bench_fills_crps_of_child_ensemble(tmp_path, monkeypatch, run_config, write_netcdf, temperature_dataset):
    update = {"members": 2, "ensemble": "members"}
    folder = _tiny_case(tmp_path, run_config, write_netcdf, temperature_dataset, update=update)
    monkeypatch.setenv("CONDUPDATE_CONFIGS", str(folder))

    status = main(["bench", "--cases", "warm-future", "--seeds", "2", "--out", str(tmp_path / "out")])
    rows = [dict(zip(HEADER, row, strict=True)) for row in _read_csv(tmp_path / "out" / "bench.csv")[1:]]

    assert status == 0
    assert len(rows) == 2 * len(METHODS)
    for row in rows:
        if row["method"] == "child":
            assert 0 < float(row["crps"]) <= float(row["mae"]) + 1e-9  # CRPS of an ensemble <= MAE of its mean
        else:
            assert row["crps"] == ""


def test_bench_least_squares_without_pattern_scaling(tmp_path, monkeypatch, run_config, write_netcdf, temperature_dataset, capsys):
    # Latitude as predictor has no value per time step, so the linear baseline is least squares.
    changes = {"predictors": [{"coordinate": "latitude"}], "subsets": {"method": "quantile", "bins": 3}}
    folder = _tiny_case(tmp_path, run_config, write_netcdf, temperature_dataset, **changes)
    monkeypatch.setenv("CONDUPDATE_CONFIGS", str(folder))

    status = main(["bench", "--cases", "warm-future", "--seeds", "1", "--out", str(tmp_path / "out")])
    rows = {row[1]: row for row in _read_csv(tmp_path / "out" / "bench.csv")[1:]}

    assert status == 0
    assert set(rows) == set(METHODS)
    # The field is close to linear in climatology, latitude and longitude, so least squares is within 1 K.
    assert float(rows["linear_baseline"][3]) < 1.0
    assert "[" not in capsys.readouterr().out.split("linear_baseline")[1].splitlines()[0]  # one seed: no interval
