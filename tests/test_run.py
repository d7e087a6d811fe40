"""Tests of condupdate.jobs: the run configuration and the whole pipeline on tiny files."""

from __future__ import annotations

import json

import re
from pathlib import Path

import cftime
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
import yaml

from condupdate._errors import ConfigError, ExtrapolationWarning
from condupdate.data import Normalizer, stack_samples
from condupdate.jobs.config import load_config, parse_config
from condupdate.jobs.prepare import prepare
from condupdate.jobs.run import run

SAMPLE_DIMS = ["time", "latitude", "longitude"]
TRAIN_STEPS = 30  # 1860-1889 of the 40 years in the test files


def _load_model(out_dir: Path) -> dict:
    # The bundle's metadata contains the normalisers; the weights load without code.
    torch.load(out_dir / "model" / "weights.pt", weights_only=True)
    return json.loads((out_dir / "model" / "metadata.json").read_text())


def _fit_input_normalizer(prep) -> Normalizer:
    # The pipeline's fit: features of the training samples whose inputs and
    # predictors are all finite and whose target is finite in at least one column.
    X = stack_samples(prep.train, prep.features, SAMPLE_DIMS)
    Y = stack_samples(prep.train, prep.targets, SAMPLE_DIMS).values
    P = stack_samples(prep.train, [f"predictor:{n}" for n in prep.predictors], SAMPLE_DIMS).values
    valid = np.isfinite(X.values).all(1) & np.isfinite(Y).any(1) & np.isfinite(P).all(1)
    return Normalizer().fit(X.isel(sample=np.flatnonzero(valid)))


# --------------------------------------------------------------------------- #
# Configuration
# --------------------------------------------------------------------------- #


def test_config_accepts_tiny_run(run_config, tmp_path):
    config = parse_config(run_config([tmp_path / "field.nc"]))

    assert config.subsets.size == 5
    assert [spec.name for spec in config.data.inputs if spec.feature] == [
        "training_climatology",
        "latitude",
        "longitude",
    ]


def test_config_unknown_key_raises(run_config, tmp_path):
    raw = run_config([tmp_path / "field.nc"])
    raw["emulator"]["widht"] = 16

    with pytest.raises(ConfigError, match=r"emulator\.widht: unknown key"):
        parse_config(raw)


@pytest.mark.parametrize(
    ("section", "key", "value", "pattern"),
    [
        ("subsets", "method", "decadal", r"subsets\.method: .*\(got 'decadal'\)"),
        ("regressor", "method", "lasso", r"regressor: .*Unknown weight regressor method 'lasso'"),
        ("emulator", "width", -4, r"emulator\.width: .*\(got -4\)"),
        ("subsets", "size", 0, r"subsets\.size: .*\(got 0\)"),
        ("training", "learning_rate", -0.01, r"training\.learning_rate: .*\(got -0\.01\)"),
    ],
)
def test_config_bad_value_raises(run_config, tmp_path, section, key, value, pattern):
    raw = run_config([tmp_path / "field.nc"])
    raw[section][key] = value

    with pytest.raises(ConfigError, match=pattern):
        parse_config(raw)


def test_config_bad_transform_raises(run_config, tmp_path):
    raw = run_config([tmp_path / "field.nc"])
    raw["data"]["inputs"][1]["transform"] = "zonal_mean"

    with pytest.raises(ConfigError, match=r"data\.inputs\.1\.transform: .*\(got 'zonal_mean'\)"):
        parse_config(raw)


def test_config_unknown_activation_raises(run_config, tmp_path):
    raw = run_config([tmp_path / "field.nc"])
    raw["emulator"]["activation"] = "swish"

    with pytest.raises(ConfigError, match=r"emulator: .*activation 'swish' is not one of"):
        parse_config(raw)


def test_config_predictor_unknown_input_raises(run_config, tmp_path):
    raw = run_config([tmp_path / "field.nc"])
    raw["predictors"] = [{"input": "sea_level_pressure"}]

    with pytest.raises(ConfigError, match="predictor input 'sea_level_pressure' is not among data.inputs"):
        parse_config(raw)


def test_config_bad_split_dim_raises(run_config, tmp_path):
    raw = run_config([tmp_path / "field.nc"])
    raw["split"]["dim"] = "depth"

    with pytest.raises(ConfigError, match="split.dim 'depth' must be one of data.sample_dims"):
        parse_config(raw)


def test_load_config_resolves_relative_paths(run_config, tmp_path):
    raw = run_config(["field.nc"])
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))

    config = load_config(path)

    assert config.data.paths == [str(tmp_path / "field.nc")]


def test_load_config_error_names_file(run_config, tmp_path):
    raw = run_config(["field.nc"])
    raw["training"]["epoch"] = 3
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))

    with pytest.raises(ConfigError, match=re.escape(str(path)) + r"(.|\n)*training\.epoch: unknown key"):
        load_config(path)


# --------------------------------------------------------------------------- #
# Normalisation statistics come from the training selection only
# --------------------------------------------------------------------------- #


@pytest.fixture
def twin_files(temperature_dataset, write_netcdf, tmp_path) -> tuple[Path, Path]:
    """Two files equal in 1860-1889 whose 1890-1899 values differ by hundreds of kelvin."""
    base = temperature_dataset()
    changed = base.copy(deep=True)
    rng = np.random.default_rng(42)
    values = changed.air_temperature.values
    apply = values[TRAIN_STEPS:]
    # Keep the mask, replace every valid application value.
    values[TRAIN_STEPS:] = np.where(np.isnan(apply), np.nan, 900.0 + 200.0 * rng.standard_normal(apply.shape))
    return (
        write_netcdf(base, tmp_path / "base.nc"),
        write_netcdf(changed, tmp_path / "changed.nc"),
    )


def test_prepare_training_selection_ignores_application_data(twin_files, run_config):
    base = prepare(parse_config(run_config([twin_files[0]])))
    changed = prepare(parse_config(run_config([twin_files[1]])))

    assert not base.apply.air_temperature.equals(changed.apply.air_temperature)
    xr.testing.assert_identical(base.train.compute(), changed.train.compute())
    base_norm, changed_norm = _fit_input_normalizer(base), _fit_input_normalizer(changed)
    np.testing.assert_array_equal(base_norm.mean_, changed_norm.mean_)
    np.testing.assert_array_equal(base_norm.scale_, changed_norm.scale_)


def test_run_normalizers_ignore_application_data(twin_files, run_config, tmp_path):
    base = run(parse_config(run_config([twin_files[0]])), out_dir=tmp_path / "base")
    # The changed application data lie far outside the training range on purpose.
    with pytest.warns(ExtrapolationWarning, match="'domain_mean_temperature'"):
        changed = run(parse_config(run_config([twin_files[1]])), out_dir=tmp_path / "changed")

    base_model, changed_model = _load_model(tmp_path / "base"), _load_model(tmp_path / "changed")
    assert base_model["input_normalizer"] == changed_model["input_normalizer"]
    assert base_model["target_normalizer"] == changed_model["target_normalizer"]
    # Same training data and seed, so the parent and its anomalies are the same too.
    assert torch.equal(base.update.theta0_, changed.update.theta0_)
    np.testing.assert_array_equal(base.update.anomalies_.values, changed.update.anomalies_.values)
    # The changed application values reach the run's truth.
    truth_base = base.predictions["air_temperature"].truth
    truth_changed = changed.predictions["air_temperature"].truth
    assert float(abs(truth_changed - truth_base).max()) > 100.0


# --------------------------------------------------------------------------- #
# Masked cells through training, prediction and de-normalisation
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def masked_run(tmp_path_factory, temperature_dataset, write_netcdf, run_config):
    """One tiny run on the masked 360_day field, with its input and output folder."""
    folder = tmp_path_factory.mktemp("masked_run")
    field = temperature_dataset()
    path = write_netcdf(field, folder / "air_temperature.nc")
    result = run(parse_config(run_config([path])), out_dir=folder / "out")
    return field, result, folder / "out"


@pytest.mark.parametrize("method", ["parent", "child", "pattern_scaling"])
def test_run_predictions_nan_at_land_cells(masked_run, land_mask, method):
    _, result, _ = masked_run
    predictions = result.predictions["air_temperature"]

    prediction = predictions[method].transpose(*SAMPLE_DIMS)

    land = np.broadcast_to(land_mask().values, prediction.shape)
    assert prediction.shape == (10, 6, 8)
    np.testing.assert_array_equal(np.isnan(prediction.values), land)


def test_run_truth_keeps_input_mask(masked_run):
    field, result, _ = masked_run

    truth = result.predictions["air_temperature"].truth

    expected = field.air_temperature.isel(time=slice(TRAIN_STEPS, None))
    np.testing.assert_array_equal(truth.transpose(*SAMPLE_DIMS).values, expected.values)


def test_run_written_predictions_keep_mask(masked_run, land_mask):
    _, _, out = masked_run

    with xr.open_dataset(out / "predictions.nc") as written:
        child = written["air_temperature_child"].transpose(*SAMPLE_DIMS).values

    np.testing.assert_array_equal(np.isnan(child), np.broadcast_to(land_mask().values, child.shape))


def test_run_skill_ignores_masked_cells(masked_run):
    _, result, _ = masked_run

    table = result.skill["air_temperature"]

    assert list(table.method.values) == ["parent", "child", "pattern_scaling"]
    for metric in ("rmse", "mae", "bias"):
        assert np.isfinite(table[metric].values).all(), metric
    assert (table.rmse.values > 0).all()


def test_run_target_normalizer_ignores_masked_cells(masked_run):
    field, _, out = masked_run

    state = _load_model(out)["target_normalizer"]

    train = field.air_temperature.values[:TRAIN_STEPS]
    assert state["names"] == ["air_temperature"]
    np.testing.assert_allclose(state["mean"], [np.nanmean(train)], rtol=1e-12)
    np.testing.assert_allclose(state["scale"], [np.nanstd(train)], rtol=1e-12)


def test_run_input_normalizer_ignores_masked_cells(masked_run):
    field, _, out = masked_run

    state = _load_model(out)["input_normalizer"]

    # The valid samples are the cells with a finite target. Every input is finite there.
    train = field.air_temperature.values[:TRAIN_STEPS]
    valid = np.isfinite(train)
    counts = valid.sum(axis=0)
    sums = np.where(valid, train, 0.0).sum(axis=0)
    climatology = np.divide(sums, counts, out=np.full(counts.shape, np.nan), where=counts > 0)
    climatology = np.broadcast_to(climatology, train.shape)
    latitude = np.broadcast_to(field.latitude.values[None, :, None], train.shape)
    assert state["names"] == ["training_climatology", "latitude", "longitude"]
    np.testing.assert_allclose(state["mean"][0], climatology[valid].mean(), rtol=1e-12)
    np.testing.assert_allclose(state["scale"][0], climatology[valid].std(), rtol=1e-12)
    np.testing.assert_allclose(state["mean"][1], latitude[valid].mean(), rtol=1e-12)
    np.testing.assert_allclose(state["scale"][1], latitude[valid].std(), rtol=1e-12)


def test_run_training_losses_finite(masked_run):
    _, result, out = masked_run

    history = json.loads((out / "training_history.json").read_text())["parent"]

    assert len(history["train_loss"]) >= 1
    assert np.isfinite(history["train_loss"]).all()
    assert np.isfinite(history["val_loss"]).all()
    assert np.isfinite(result.update.anomalies_.values).all()
    assert result.update.anomalies_.sizes["subset"] == 6


# --------------------------------------------------------------------------- #
# Calendars, end to end
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("calendar", "date_type"),
    [
        ("360_day", cftime.Datetime360Day),
        ("noleap", cftime.DatetimeNoLeap),
        ("standard", cftime.DatetimeGregorian),
    ],
)
def test_run_keeps_cftime_calendar(temperature_dataset, write_netcdf, run_config, tmp_path, calendar, date_type):
    path = write_netcdf(temperature_dataset(calendar=calendar), tmp_path / f"{calendar}.nc")
    out = tmp_path / "out"

    result = run(parse_config(run_config([path])), out_dir=out)

    predictions = result.predictions["air_temperature"]
    times = predictions.time.values
    assert predictions.time.dtype == object
    assert all(isinstance(t, date_type) for t in times)
    assert not any(isinstance(t, pd.Timestamp) for t in times)
    assert {t.calendar for t in times} == {calendar}
    assert [t.year for t in times] == list(range(1890, 1900))
    assert np.isfinite(result.skill["air_temperature"].rmse.values).all()
    assert result.distance.dims == ("time",)
    with xr.open_dataset(out / "predictions.nc", decode_times=False) as written:
        assert written.time.attrs["calendar"] == calendar


def test_run_without_out_dir_writes_nothing(temperature_file, run_config, tmp_path):
    before = sorted(tmp_path.rglob("*"))

    result = run(parse_config(run_config([temperature_file])))

    assert result.out_dir is None
    assert sorted(tmp_path.rglob("*")) == before
    assert set(result.predictions["air_temperature"].data_vars) == {"truth", "parent", "child", "pattern_scaling"}
