"""Tests of condupdate.data.stream: chunked sampling, dask statistics and streamed training."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from condupdate._errors import ConfigError, DataError
from condupdate.data import Normalizer, stack_samples
from condupdate.data.stream import ChunkedSampler, check_memory_budget, fit_normalizers, open_chunked, train_stream
from condupdate.emulators import MLP, TrainConfig, train
from condupdate.jobs.config import parse_config

SAMPLE_DIMS = ["time", "lat", "lon"]
FEATURES = ["row", "field", "clim", "lat"]
TARGETS = ["target"]


def _dataset(n_time: int = 30, chunk: int = 7, seed: int = 0) -> xr.Dataset:
    """A (time, lat, lon) field with NaN cells, a climatology, and a row id per cell."""
    rng = np.random.default_rng(seed)
    shape = (n_time, 12, 10)
    field = rng.standard_normal(shape)
    field[rng.random(shape) < 0.05] = np.nan
    target = 2.0 * np.nan_to_num(field) + rng.standard_normal(shape)
    target[rng.random(shape) < 0.05] = np.nan
    ds = xr.Dataset(
        {
            # The row id of each cell in stacking order, exact in float32.
            "row": (SAMPLE_DIMS, np.arange(np.prod(shape), dtype=np.float64).reshape(shape)),
            "field": (SAMPLE_DIMS, field),
            "clim": (("lat", "lon"), rng.standard_normal(shape[1:])),
            "target": (SAMPLE_DIMS, target),
            "predictor": ("time", np.where(np.arange(n_time) == 3, np.nan, np.arange(n_time, dtype=float))),
        },
        coords={"time": np.arange(n_time), "lat": np.linspace(-55.0, 55.0, 12), "lon": np.arange(0.0, 360.0, 36.0)},
    )
    return ds.chunk(time=chunk)


def _complete_rows(ds: xr.Dataset, required=("predictor",)) -> tuple[np.ndarray, np.ndarray]:
    # The in-memory rule of condupdate.jobs.run.
    X = stack_samples(ds, FEATURES, SAMPLE_DIMS).values
    Y = stack_samples(ds, TARGETS, SAMPLE_DIMS).values
    P = stack_samples(ds, list(required), SAMPLE_DIMS).values
    valid = np.isfinite(X).all(1) & np.isfinite(Y).any(1) & np.isfinite(P).all(1)
    return X[valid], Y[valid]


def _collect(batches) -> tuple[np.ndarray, np.ndarray, list[int]]:
    Xs, ys, sizes = [], [], []
    for X, y in batches:
        Xs.append(X)
        ys.append(y)
        sizes.append(len(X))
    return np.concatenate(Xs), np.concatenate(ys), sizes


def test_sampler_visits_each_sample_once():
    ds = _dataset()
    X_ref, y_ref = _complete_rows(ds)
    # 0.08 MB: one time step per block and about six per buffer, so several buffers per epoch.
    sampler = ChunkedSampler(ds, FEATURES, TARGETS, SAMPLE_DIMS, 0.08, required=["predictor"])
    X, y, sizes = _collect(sampler.batches(epoch=0, batch_size=64))

    rows = X[:, 0].astype(np.int64)
    assert len(sampler.blocks) == 30
    assert len(np.unique(rows)) == len(rows)
    np.testing.assert_array_equal(np.sort(rows), X_ref[:, 0].astype(np.int64))
    order = np.argsort(rows)
    np.testing.assert_array_equal(X[order], X_ref.astype(np.float32))
    np.testing.assert_array_equal(y[order], y_ref.astype(np.float32))
    assert all(size == 64 for size in sizes[:-1])


def test_sampler_shuffles_across_chunks():
    ds = _dataset()
    sampler = ChunkedSampler(ds, FEATURES, TARGETS, SAMPLE_DIMS, 0.08, required=["predictor"])
    X, _, _ = _collect(sampler.batches(epoch=0, batch_size=64))
    steps = X[:, 0].astype(np.int64) // sampler.row_stride  # time step of each row
    chunks = steps // 7  # dask chunk of each row

    first_batch_chunks = np.unique(chunks[:64])
    assert len(first_batch_chunks) >= 2
    # Blocks are not visited in storage order: the time step of the rows does not grow.
    assert np.any(np.diff(steps) < 0)
    assert abs(np.corrcoef(np.arange(len(steps)), steps)[0, 1]) < 0.9


def test_sampler_same_seed_same_batches():
    ds = _dataset()
    sampler = ChunkedSampler(ds, FEATURES, TARGETS, SAMPLE_DIMS, 0.08)
    first, _, _ = _collect(sampler.batches(epoch=2, batch_size=50, seed=5))
    again, _, _ = _collect(sampler.batches(epoch=2, batch_size=50, seed=5))
    other, _, _ = _collect(sampler.batches(epoch=3, batch_size=50, seed=5))

    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first[:, 0], other[:, 0])


def test_sampler_validation_part_is_disjoint():
    ds = _dataset()
    X_ref, _ = _complete_rows(ds)
    sampler = ChunkedSampler(ds, FEATURES, TARGETS, SAMPLE_DIMS, 0.08, required=["predictor"])
    X_train, _, _ = _collect(sampler.batches(epoch=0, batch_size=64, seed=1, validation_fraction=0.2))
    X_val, _, _ = _collect(sampler.validation_batches(batch_size=100, seed=1, validation_fraction=0.2))
    # The same part in another epoch and with other blocks.
    coarse = ChunkedSampler(ds, FEATURES, TARGETS, SAMPLE_DIMS, 1.0, required=["predictor"])
    X_train_coarse, _, _ = _collect(coarse.batches(epoch=4, batch_size=64, seed=1, validation_fraction=0.2))

    train_rows, val_rows = set(X_train[:, 0].tolist()), set(X_val[:, 0].tolist())
    assert not train_rows & val_rows
    assert train_rows | val_rows == set(X_ref[:, 0].tolist())
    assert set(X_train_coarse[:, 0].tolist()) == train_rows
    # A binomial share: 0.2 of about 3000 rows has a standard deviation of 0.007.
    assert abs(len(val_rows) / len(X_ref) - 0.2) < 0.03


def test_sampler_applies_normalizers():
    ds = _dataset()
    X_ref, y_ref = _complete_rows(ds)
    x_norm, y_norm, _ = fit_normalizers(ds, FEATURES, TARGETS, SAMPLE_DIMS, required=["predictor"])
    sampler = ChunkedSampler(ds, FEATURES, TARGETS, SAMPLE_DIMS, 0.08, ["predictor"], x_norm, y_norm)
    X, y, _ = _collect(sampler.batches(epoch=0, batch_size=64))

    # Standardised row ids keep their order, so they sort the rows.
    order = np.argsort(X[:, 0])
    expected_X = x_norm.transform(X_ref).astype(np.float32)
    np.testing.assert_array_equal(X[order], expected_X[np.argsort(expected_X[:, 0])])
    np.testing.assert_allclose(y[order].mean(), y_norm.transform(y_ref).mean(), atol=1e-6)


def test_fit_normalizers_match_numpy():
    ds = _dataset().assign(const=("lat", np.full(12, 273.15)))
    features = FEATURES + ["const"]
    x_norm, y_norm, n_samples = fit_normalizers(ds, features, TARGETS, SAMPLE_DIMS, required=["predictor"])

    X = stack_samples(ds, features, SAMPLE_DIMS).values
    Y = stack_samples(ds, TARGETS, SAMPLE_DIMS).values
    P = stack_samples(ds, ["predictor"], SAMPLE_DIMS).values
    valid = np.isfinite(X).all(1) & np.isfinite(Y).any(1) & np.isfinite(P).all(1)
    reference = Normalizer().fit(stack_samples(ds, features, SAMPLE_DIMS).isel(sample=np.flatnonzero(valid)))

    assert n_samples == valid.sum()
    np.testing.assert_allclose(x_norm.mean_, X[valid].mean(0), rtol=1e-12)
    np.testing.assert_allclose(x_norm.scale_[:-1], X[valid].std(0)[:-1], rtol=1e-12)
    np.testing.assert_allclose(x_norm.mean_, reference.mean_, rtol=1e-12)
    np.testing.assert_allclose(x_norm.scale_, reference.scale_, rtol=1e-12)
    np.testing.assert_allclose(y_norm.mean_, np.nanmean(Y[valid], 0), rtol=1e-12)
    np.testing.assert_allclose(y_norm.scale_, np.nanstd(Y[valid], 0), rtol=1e-12)
    # A constant column keeps its exact value and unit scale, as Normalizer.fit does.
    assert x_norm.mean_[-1] == 273.15
    assert x_norm.scale_[-1] == 1.0


def test_fit_normalizers_no_complete_sample_raises():
    ds = _dataset()
    ds["target"] = ds.target.where(ds.time < 0)

    with pytest.raises(DataError, match="No complete training sample"):
        fit_normalizers(ds, FEATURES, TARGETS, SAMPLE_DIMS)


def test_fit_normalizers_empty_target_column_raises():
    # A sample counts when any target is finite, so an all-NaN second target
    # leaves complete samples but no value to standardise it with.
    ds = _dataset().assign(empty=(SAMPLE_DIMS, np.full((30, 12, 10), np.nan)))

    with pytest.raises(DataError, match="Column 'empty' has no finite value among the"):
        fit_normalizers(ds, FEATURES, ["target", "empty"], SAMPLE_DIMS)


def _linear_dataset(seed: int = 0) -> tuple[xr.Dataset, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (40, 10, 10)
    a, b = rng.standard_normal(shape), rng.standard_normal(shape)
    target = 1.5 * a - 0.5 * b + 0.3 * rng.standard_normal(shape)
    ds = xr.Dataset({"a": (SAMPLE_DIMS, a), "b": (SAMPLE_DIMS, b), "target": (SAMPLE_DIMS, target)}).chunk(time=10)
    X = np.stack([a.reshape(-1), b.reshape(-1)], 1)
    return ds, X, target.reshape(-1, 1)


def test_train_stream_reaches_in_memory_loss():
    ds, X, y = _linear_dataset()
    x_norm, y_norm, _ = fit_normalizers(ds, ["a", "b"], TARGETS, SAMPLE_DIMS)
    Xn, yn = x_norm.transform(X), y_norm.transform(y)
    config = TrainConfig(epochs=25, batch_size=64, learning_rate=0.01, validation_fraction=0.1, patience=0, seed=0)

    torch.manual_seed(0)
    in_memory = MLP(2, 1, width=4, depth=0, seed=0)
    train(in_memory, Xn, yn, config)
    streamed = MLP(2, 1, width=4, depth=0, seed=0)
    sampler = ChunkedSampler(ds, ["a", "b"], TARGETS, SAMPLE_DIMS, 0.2, x_normalizer=x_norm, y_normalizer=y_norm)
    history = train_stream(streamed, sampler, config)

    # A linear network on standardised data has a convex loss whose minimum is
    # the least-squares fit, so both loops must end near that floor (about 0.02
    # here). Adam at step 0.01 leaves a weight jitter of order 0.01, which adds
    # under 1 % of the floor, and 3 % leaves room for either loop's batches.
    coef, *_ = np.linalg.lstsq(np.c_[Xn, np.ones(len(Xn))], yn, rcond=None)
    floor = np.mean((np.c_[Xn, np.ones(len(Xn))] @ coef - yn) ** 2)
    losses = {}
    for name, model in {"memory": in_memory, "stream": streamed}.items():
        with torch.no_grad():
            prediction = model(torch.as_tensor(Xn, dtype=torch.float32)).numpy()
        losses[name] = np.mean((prediction - yn) ** 2)
    assert losses["memory"] == pytest.approx(floor, rel=0.03)
    assert losses["stream"] == pytest.approx(floor, rel=0.03)
    assert len(history.train_loss) == 25
    assert history.val_loss[history.best_epoch] == min(history.val_loss)


def test_train_stream_stops_early():
    ds, _, _ = _linear_dataset()
    x_norm, y_norm, _ = fit_normalizers(ds, ["a", "b"], TARGETS, SAMPLE_DIMS)
    sampler = ChunkedSampler(ds, ["a", "b"], TARGETS, SAMPLE_DIMS, 0.2, x_normalizer=x_norm, y_normalizer=y_norm)
    # Step size so large that the validation loss stops improving at once.
    config = TrainConfig(epochs=50, batch_size=64, learning_rate=5.0, validation_fraction=0.2, patience=2, seed=0)
    history = train_stream(MLP(2, 1, width=4, depth=1, seed=0), sampler, config)

    assert len(history.train_loss) < 50
    assert len(history.val_loss) == history.best_epoch + 3


@pytest.mark.parametrize("budget", [0, -1, float("nan"), float("inf")])
def test_memory_budget_out_of_range_raises(budget):
    with pytest.raises(ValueError, match="memory_budget_mb must be a finite number of megabytes above 0"):
        check_memory_budget(budget)


@pytest.mark.parametrize("budget", ["256", True, None])
def test_memory_budget_not_a_number_raises(budget):
    with pytest.raises(TypeError, match="memory_budget_mb must be a number of megabytes"):
        check_memory_budget(budget)


def test_sampler_budget_below_one_step_raises():
    with pytest.raises(ValueError, match=r"memory_budget_mb=0\.001 is too small: one step of 'time' contains 120 samples"):
        ChunkedSampler(_dataset(), FEATURES, TARGETS, SAMPLE_DIMS, 0.001)


def test_sampler_batch_larger_than_buffer_raises():
    sampler = ChunkedSampler(_dataset(), FEATURES, TARGETS, SAMPLE_DIMS, 0.08)
    with pytest.raises(ValueError, match="batch_size=100000 does not fit"):
        next(sampler.batches(epoch=0, batch_size=100_000))


def test_sampler_missing_variable_raises():
    with pytest.raises(DataError, match="Target variable 'salinity' not found"):
        ChunkedSampler(_dataset(), FEATURES, ["salinity"], SAMPLE_DIMS, 1.0)


def test_config_rejects_bad_memory_budget(run_config, tmp_path):
    raw = run_config([tmp_path / "field.nc"])
    raw["data"]["memory_budget_mb"] = -5

    with pytest.raises(ConfigError, match=r"memory_budget_mb must be a finite number of megabytes above 0, got -5"):
        parse_config(raw)


def test_run_with_budget_streams_parent(run_config, temperature_file, tmp_path):
    from condupdate.jobs.prepare import prepare
    from condupdate.jobs.run import run

    raw = run_config([temperature_file])
    raw["data"]["memory_budget_mb"] = 0.2
    config = parse_config(raw)
    result = run(config, tmp_path / "out")

    # Input statistics of the in-memory path, from the complete training samples.
    prep = prepare(config)
    X = stack_samples(prep.train, prep.features, config.data.sample_dims)
    Y = stack_samples(prep.train, prep.targets, config.data.sample_dims).values
    P = stack_samples(prep.train, [f"predictor:{n}" for n in prep.predictors], config.data.sample_dims).values
    valid = np.isfinite(X.values).all(1) & np.isfinite(Y).any(1) & np.isfinite(P).all(1)
    reference = Normalizer().fit(X.isel(sample=np.flatnonzero(valid)))
    metadata = json.loads((tmp_path / "out" / "model" / "metadata.json").read_text())

    assert metadata["config"]["data"]["memory_budget_mb"] == 0.2
    np.testing.assert_allclose(result.emulator.input_normalizer.mean_, reference.mean_, rtol=1e-12)
    np.testing.assert_allclose(result.emulator.input_normalizer.scale_, reference.scale_, rtol=1e-12)
    assert np.isfinite(result.skill["air_temperature"].rmse.values).all()
    history = json.loads((tmp_path / "out" / "training_history.json").read_text())["parent"]
    assert 1 <= len(history["train_loss"]) <= 4


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, re, sys
    import dask.distributed, torch, xarray
    from condupdate.data.stream import ChunkedSampler, fit_normalizers, open_chunked, train_stream
    from condupdate.emulators import MLP, TrainConfig

    # One optimiser step on a dummy batch first: torch's one-time allocations
    # (about 50 MB with torch 2.13 on the CPU) do not depend on the data.
    torch.set_num_threads(1)
    model = MLP(2, 1, width=8, depth=1, seed=0)
    model(torch.zeros(8192, 2)).sum().backward()
    torch.optim.Adam(model.parameters()).step()
    model = MLP(2, 1, width=8, depth=1, seed=0)
    # Peak memory is VmHWM, not ru_maxrss: on Linux, ru_maxrss keeps the parent's
    # peak across fork and exec, and pytest's process is larger than this one.
    def memory_kib(field):
        return int(re.search(field + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1))

    baseline = memory_kib("VmRSS")  # resident memory after the imports and torch's first step
    path, budget = sys.argv[1], float(sys.argv[2])
    dims = ["time", "lat", "lon"]
    ds = open_chunked(path, dims, budget)
    x_norm, y_norm, n = fit_normalizers(ds, ["a", "b"], ["target"], dims)
    after_statistics = memory_kib("VmHWM")
    sampler = ChunkedSampler(ds, ["a", "b"], ["target"], dims, budget, x_normalizer=x_norm, y_normalizer=y_norm)
    config = TrainConfig(epochs=1, batch_size=8192, learning_rate=1e-3, validation_fraction=0.05, seed=0)
    history = train_stream(model, sampler, config)
    peak = memory_kib("VmHWM")
    print(json.dumps({
        "increase_mb": (peak - baseline) / 1024,
        "statistics_increase_mb": (after_statistics - baseline) / 1024,
        "n": n,
        "loss": history.train_loss[0],
    }))
    """
)


@pytest.mark.slow
def test_stream_training_stays_within_budget(tmp_path):
    # 150 MB on disk: three float32 fields of 250 x 250 x 200.
    shape = (250, 250, 200)
    path = tmp_path / "large.nc"
    rng = np.random.default_rng(0)
    a = rng.standard_normal(shape, dtype=np.float32)
    b = rng.standard_normal(shape, dtype=np.float32)
    ds = xr.Dataset({"a": (SAMPLE_DIMS, a), "b": (SAMPLE_DIMS, b), "target": (SAMPLE_DIMS, a - b)})
    ds.to_netcdf(path)
    del a, b, ds
    budget = 40.0
    script = tmp_path / "measure.py"
    script.write_text(_MEMORY_SCRIPT)

    output = subprocess.run(
        [sys.executable, str(script), str(path), str(budget)], capture_output=True, text=True, check=True
    ).stdout
    measured = json.loads(output.strip().splitlines()[-1])

    assert path.stat().st_size > 3 * budget * 2**20
    assert measured["n"] == np.prod(shape)
    # Margin: opening the file with netCDF4 and HDF5 costs about 20 MB that no
    # budget share covers.
    assert measured["increase_mb"] < budget + 25, measured
