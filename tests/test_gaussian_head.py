"""Tests of the Gaussian (mean and standard deviation) head: network, loss, training, scores and bundle."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import properscoring
import pytest
import torch
import xarray as xr

import condupdate
from condupdate import skill
from condupdate._errors import ConfigError
from condupdate.emulators import MLP, TrainConfig, train
from condupdate.emulators.mlp import MIN_STD, gaussian_parts
from condupdate.emulators.training import loss_function, masked_gaussian_nll, masked_mse
from condupdate.jobs.config import parse_config
from condupdate.jobs.run import run
from condupdate.update.batched import finetune_batched

# --------------------------------------------------------------------------- #
# Network and loss
# --------------------------------------------------------------------------- #


def test_mlp_gaussian_head_output_layout():
    net = MLP(3, 2, width=8, depth=1, head="gaussian", seed=0)
    out = net(torch.randn(5, 3))
    mean, std = gaussian_parts(out, 2)

    assert out.shape == (5, 4)
    assert mean.shape == (5, 2)
    assert bool((std >= MIN_STD).all())


def test_mlp_mean_head_is_default():
    default = MLP(3, 2, width=8, depth=2, seed=0)
    explicit = MLP(3, 2, width=8, depth=2, seed=0, head="mean")
    x = torch.randn(7, 3)

    assert default.head == "mean"
    assert torch.equal(default(x), explicit(x))
    assert all(torch.equal(a, b) for a, b in zip(default.state_dict().values(), explicit.state_dict().values()))
    assert loss_function(default) is masked_mse


def test_mlp_unknown_head_raises():
    with pytest.raises(ValueError, match="Unknown MLP head 'laplace'"):
        MLP(3, 1, head="laplace")


def test_gaussian_nll_matches_torch_on_finite_cells():
    generator = torch.Generator().manual_seed(0)
    mean = torch.randn(20, 2, generator=generator)
    std = torch.rand(20, 2, generator=generator) + 0.1
    target = torch.randn(20, 2, generator=generator)
    target[3, 0] = target[11, 1] = float("nan")
    finite = torch.isfinite(target)

    reference = torch.nn.functional.gaussian_nll_loss(
        mean[finite], target[finite], std[finite] ** 2, full=True, reduction="mean"
    )
    loss = masked_gaussian_nll(torch.cat([mean, std], dim=1), target)

    torch.testing.assert_close(loss, reference, rtol=1e-6, atol=0)


def test_gaussian_nll_nan_target_has_no_gradient():
    prediction = torch.tensor([[0.5, 1.0], [0.2, 2.0]], requires_grad=True)
    target = torch.tensor([[1.0], [float("nan")]])

    masked_gaussian_nll(prediction, target).backward()

    assert torch.equal(prediction.grad[1], torch.zeros(2))
    assert bool(torch.isfinite(prediction.grad).all())


def test_gaussian_nll_wrong_width_raises():
    with pytest.raises(ValueError, match="2 \\* 1 columns"):
        masked_gaussian_nll(torch.zeros(4, 1), torch.zeros(4, 1))


def test_gaussian_head_recovers_mean_and_spread():
    # y ~ N(a x, s(x)^2) with a = 1.5 and s(x) = softplus(0.8 x - 1) + MIN_STD, which a
    # linear Gaussian head (depth 0) represents exactly: mean a x + b, std softplus(c x + d) + MIN_STD.
    rng = np.random.default_rng(0)
    x = rng.uniform(-2.0, 2.0, size=(4000, 1))
    spread = np.log1p(np.exp(0.8 * x - 1.0)) + MIN_STD
    y = 1.5 * x + spread * rng.standard_normal(x.shape)
    net = MLP(1, 1, depth=0, head="gaussian", seed=0)

    train(net, x, y, TrainConfig(epochs=30, batch_size=200, learning_rate=0.05, validation_fraction=0, patience=0))

    grid = np.linspace(-1.9, 1.9, 20)[:, None]
    with torch.no_grad():
        mean, std = gaussian_parts(net(torch.as_tensor(grid, dtype=torch.float32)), 1)
    expected_std = np.log1p(np.exp(0.8 * grid - 1.0)) + MIN_STD
    # Tolerances: with 4000 samples the maximum-likelihood estimates of a, b, c
    # and d have standard errors of about 0.01 to 0.03 (an estimate). The fitted
    # mean then lies within about 0.01 of a x, and the std within about 3 % of s(x).
    np.testing.assert_allclose(mean.numpy(), 1.5 * grid, atol=0.03)
    np.testing.assert_allclose(std.numpy(), expected_std, rtol=0.06)


def test_batched_gaussian_finetuning_matches_sequential():
    rng = np.random.default_rng(1)
    parent = MLP(2, 1, width=8, depth=1, head="gaussian", seed=0)
    subsets = [(rng.standard_normal((n, 2)), rng.standard_normal((n, 1))) for n in (40, 64)]
    config = TrainConfig(epochs=3, batch_size=16, learning_rate=1e-2, patience=0)

    anomalies, _ = finetune_batched(parent, subsets, config, seeds=[0, 0])

    theta0 = torch.cat([p.detach().reshape(-1) for p in parent.parameters()])
    for k, (X, y) in enumerate(subsets):
        model = MLP(2, 1, width=8, depth=1, head="gaussian", seed=0)
        train(model, X, y, config)
        sequential = torch.cat([p.detach().reshape(-1) for p in model.parameters()]) - theta0
        np.testing.assert_allclose(anomalies[k], sequential.numpy(), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- #
# Scores
# --------------------------------------------------------------------------- #


def _field(values: np.ndarray) -> xr.DataArray:
    return xr.DataArray(
        values,
        dims=("time", "lat"),
        coords={"time": np.arange(values.shape[0]), "lat": [-60.0, 0.0, 30.0]},
        attrs={"units": "m s-1"},
    )


def test_crps_gaussian_matches_properscoring():
    rng = np.random.default_rng(2)
    truth, mean = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    std = rng.uniform(0.5, 2.0, (4, 3))
    weights = skill.latitude_weights(_field(truth))

    score = skill.crps_gaussian(_field(mean), _field(std), _field(truth), weights=weights)

    cells = properscoring.crps_gaussian(truth, mean, std)
    w = np.cos(np.deg2rad([-60.0, 0.0, 30.0]))
    expected = (cells * w).sum() / (w.sum() * truth.shape[0])
    assert float(score) == pytest.approx(expected, rel=1e-12)
    assert score.attrs["units"] == "m s-1"


def test_crps_gaussian_closed_form_at_mean():
    # For y = mu the CRPS of N(mu, s^2) is s (sqrt(2) - 1) / sqrt(pi).
    truth = _field(np.zeros((2, 3)))

    score = skill.crps_gaussian(truth, truth + 2.0, truth)

    assert float(score) == pytest.approx(2.0 * (math.sqrt(2.0) - 1.0) / math.sqrt(math.pi), rel=1e-12)


def test_crps_gaussian_skips_nan_cells():
    truth = np.zeros((2, 3))
    truth[0, 1] = np.nan

    score = skill.crps_gaussian(_field(np.ones((2, 3))), _field(np.ones((2, 3))), _field(truth))

    assert float(score) == pytest.approx(properscoring.crps_gaussian(0.0, 1.0, 1.0), rel=1e-12)


def test_crps_gaussian_negative_std_raises():
    truth = _field(np.zeros((2, 3)))
    with pytest.raises(condupdate.DataError, match="negative values"):
        skill.crps_gaussian(truth, truth - 1.0, truth)


def test_gaussian_spread_skill_ratio_closed_form():
    # Errors of +-1 everywhere (RMSE 1) and a predicted std of 2: ratio 2.
    truth = _field(np.zeros((4, 3)))
    mean = _field(np.where(np.arange(12).reshape(4, 3) % 2, 1.0, -1.0))

    ratio = skill.gaussian_spread_skill_ratio(mean, truth + 2.0, truth)

    assert float(ratio) == pytest.approx(2.0)
    assert ratio.attrs["units"] == "1"


def test_skill_table_with_std_adds_scores():
    truth = _field(np.zeros((2, 3)))

    table = skill.skill_table(truth, {"child": truth + 1.0, "baseline": truth}, std={"child": truth + 1.0})

    row = table.sel({"method": "child"})
    assert float(row.crps) == pytest.approx(properscoring.crps_gaussian(0.0, 1.0, 1.0))
    assert float(row.spread_skill_ratio) == pytest.approx(1.0)
    assert np.isnan(float(table.sel({"method": "baseline"}).crps))


def test_skill_table_std_of_unknown_method_raises():
    truth = _field(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="std names methods \\['other'\\]"):
        skill.skill_table(truth, {"child": truth}, std={"other": truth})


# --------------------------------------------------------------------------- #
# Configuration, run and bundle
# --------------------------------------------------------------------------- #


def test_config_bad_head_raises(run_config, tmp_path):
    raw = run_config([tmp_path / "field.nc"])
    raw["emulator"]["head"] = "laplace"

    with pytest.raises(ConfigError, match=r"emulator\.head: .*\(got 'laplace'\)"):
        parse_config(raw)


@pytest.fixture(scope="module")
def gaussian_run(run_config, temperature_dataset, write_netcdf, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gaussian")
    path = write_netcdf(temperature_dataset(), folder / "air_temperature.nc")
    raw = run_config([path])
    raw["emulator"]["head"] = "gaussian"
    return run(parse_config(raw), out_dir=folder / "out"), path


def test_gaussian_run_writes_std_and_scores(gaussian_run):
    result, _ = gaussian_run
    out = result.out_dir

    with xr.open_dataset(out / "predictions.nc") as predictions:
        names = set(predictions.data_vars)
        std = predictions["air_temperature_child_std"].load()
    table = pd.read_csv(out / "skill.csv", index_col="method")

    assert {"air_temperature_parent_std", "air_temperature_child_std"} <= names
    assert "air_temperature_pattern_scaling_std" not in names
    assert std.attrs["units"] == "K"
    assert float(std.min()) > 0
    assert list(table.columns) == ["rmse", "mae", "bias", "crps", "spread_skill_ratio"]
    assert table.loc["child", "crps"] > 0
    assert np.isnan(table.loc["pattern_scaling", "crps"])


def test_gaussian_bundle_round_trip_identical(gaussian_run):
    result, path = gaussian_run
    ds = xr.open_dataset(path, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)).load()

    loaded = condupdate.load(result.out_dir / "model")
    for method in ("child", "parent"):
        before = result.emulator.predict(ds, method=method)
        after = loaded.predict(ds, method=method)
        xr.testing.assert_identical(after, before)
    assert loaded.update.parent.head == "gaussian"
    assert "air_temperature_std" in after.data_vars
