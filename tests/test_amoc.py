"""The two-box overturning model against its closed-form equilibria, and the amoc-tipping case end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from matplotlib.figure import Figure

from condupdate._errors import ExtrapolationWarning
from condupdate.bench.cases import CASES
from condupdate.datasets import load_dataset
from condupdate.datasets.amoc import (
    StommelParameters,
    critical_forcing,
    equilibrium_overturning,
    integrate_box_model,
    load_amoc,
    plot_amoc,
)
from condupdate.jobs.config import load_config, parse_config
from condupdate.jobs.run import run

CONFIG = Path(__file__).resolve().parents[1] / "data" / "configs" / "amoc-tipping.yaml"
FIXED = StommelParameters(temperature_relaxation_time=0.0)  # Stommel's limit of fixed temperatures


def _closed_form(mu: float) -> np.ndarray:
    # q / A of the non-dimensional model dx/dt = mu - x |1 - x|, with q / A = 1 - x:
    # stable and unstable thermally driven states, then the reversed state.
    on = np.sqrt(1 - 4 * mu)
    return np.array([(1 + on) / 2, (1 - on) / 2, (1 - np.sqrt(1 + 4 * mu)) / 2])


def _forcing_of(mu: float, params: StommelParameters) -> float:
    # mu = B F / A**2
    return mu * params.thermal_scale**2 / params.haline_scale


def _state(q_over_a: float, params: StommelParameters) -> list[float]:
    # T1, T2, S1, S2 of the fixed-temperature model with overturning q = A q_over_a,
    # that is beta (S1 - S2) = alpha (T1* - T2*) (1 - q_over_a).
    delta_t = params.restoring_temperature_low - params.restoring_temperature_high
    delta_s = params.thermal_expansion * delta_t * (1 - q_over_a) / params.haline_contraction
    s0 = params.reference_salinity
    return [params.restoring_temperature_low, params.restoring_temperature_high, s0 + delta_s / 2, s0 - delta_s / 2]


@pytest.mark.parametrize("mu", [0.05, 0.15, 0.24])
def test_equilibria_match_nondimensional_closed_form(mu):
    forcing = _forcing_of(mu, FIXED)

    q = equilibrium_overturning(forcing, FIXED) / FIXED.thermal_scale

    np.testing.assert_allclose(q, _closed_form(mu), rtol=1e-9)


@pytest.mark.parametrize("mu", [0.05, 0.2])
def test_integration_reaches_both_stable_branches(mu):
    forcing = _forcing_of(mu, FIXED)
    stable_on, _, reversed_ = _closed_form(mu)
    time = np.linspace(0.0, 3000.0, 301)
    flux = np.full(time.shape, forcing)

    # Start 20 % away from each stable state, on its side of the unstable one.
    from_on = integrate_box_model(time, flux, FIXED, initial_state=_state(0.8 * stable_on + 0.2, FIXED))
    from_off = integrate_box_model(time, flux, FIXED, initial_state=_state(1.2 * reversed_, FIXED))

    assert float(from_on.q[-1]) / FIXED.thermal_scale == pytest.approx(stable_on, rel=1e-5)
    assert float(from_off.q[-1]) / FIXED.thermal_scale == pytest.approx(reversed_, rel=1e-5)


def test_saddle_node_at_quarter():
    a, b = FIXED.thermal_scale, FIXED.haline_scale

    assert critical_forcing(FIXED) == pytest.approx(a**2 / (4 * b), rel=1e-12)
    assert equilibrium_overturning(_forcing_of(0.2499, FIXED), FIXED).size == 3
    assert equilibrium_overturning(_forcing_of(0.2501, FIXED), FIXED).size == 1


def test_overturning_reverses_above_saddle_node():
    mu = 0.27
    forcing = _forcing_of(mu, FIXED)
    time = np.linspace(0.0, 4000.0, 401)

    # Start from the on state of mu = 0.2, which no longer exists at mu = 0.27.
    run_ = integrate_box_model(time, np.full(time.shape, forcing), FIXED, initial_state=_state(_closed_form(0.2)[0], FIXED))

    assert float(run_.q[-1]) / FIXED.thermal_scale == pytest.approx((1 - np.sqrt(1 + 4 * mu)) / 2, rel=1e-5)


def test_critical_forcing_maximises_equilibrium_curve():
    params = StommelParameters()
    a, b, r = params.thermal_scale, params.haline_scale, params.relaxation_transport
    speed = np.linspace(1e-3, a, 400_001)

    # F(u) = u (A r / (r + 2 u) - u) / B on a fine grid of overturning speeds u [Sv].
    brute_force = np.max(speed * (a * r / (r + 2 * speed) - speed) / b)

    assert critical_forcing(params) == pytest.approx(brute_force, rel=1e-9)
    assert critical_forcing(params) < critical_forcing(FIXED)
    assert equilibrium_overturning(0.999 * critical_forcing(params), params).size == 3
    assert equilibrium_overturning(1.001 * critical_forcing(params), params).size == 1


def test_relaxing_temperatures_reach_cubic_root():
    params = StommelParameters()
    time = np.linspace(0.0, 2000.0, 401)
    start = integrate_box_model(time[:2], [0.1, 0.1], params)  # the default start: the on state at 0.1 Sv

    final = integrate_box_model(time, np.full(time.shape, 0.3), params, initial_state=start.isel(time=0)[["T1", "T2", "S1", "S2"]].to_array().values)

    stable_on, unstable, reversed_ = equilibrium_overturning(0.3, params)
    assert float(final.q[-1]) == pytest.approx(stable_on, rel=1e-5)
    assert float(start.q[0]) == pytest.approx(equilibrium_overturning(0.1, params)[0], rel=1e-9)
    assert reversed_ < 0 < unstable < stable_on


def test_salt_is_conserved():
    ds = load_amoc(n_years=300, forcing_end=0.4, freshwater_noise_std=0.3)

    total = ds.S1 + ds.S2

    np.testing.assert_allclose(total.values, 2 * StommelParameters().reference_salinity, rtol=0, atol=1e-9)


def test_collapse_follows_bifurcation_crossing():
    ds = load_amoc(freshwater_noise_std=0.0, temperature_noise_std=0.0)
    crossing = ds.attrs["critical_forcing_year"]

    reversed_years = ds.time.values[ds.q.values < 0]

    assert ds.attrs["critical_forcing"] == pytest.approx(critical_forcing())
    assert (ds.q.where(ds.forcing < ds.attrs["critical_forcing"], drop=True) > 0).all()
    assert reversed_years.size > 0
    assert reversed_years[0] > crossing
    # After the collapse the overturning sits on the reversed branch of the final forcing.
    assert float(ds.q[-1]) == pytest.approx(equilibrium_overturning(float(ds.forcing[-1]))[-1], rel=0.05)


def test_case_data_collapse_after_training():
    ds = load_dataset("amoc-tipping")
    config = load_config(CONFIG)
    train = ds.sel(time=slice(*config.split.train))
    apply = ds.sel(time=slice(*config.split.apply))

    assert (train.q > 0).all()
    assert float(apply.q[-200:].mean()) < 0
    xr.testing.assert_identical(ds, load_amoc())


def test_load_amoc_variables_and_attributes():
    ds = load_amoc(n_years=50, forcing_end=0.2, seed=3)

    expected_units = {"T1": "degC", "T2": "degC", "S1": "psu", "S2": "psu", "q": "Sv", "forcing": "Sv", "freshwater_flux": "Sv"}
    assert {name: ds[name].attrs["units"] for name in ds.data_vars} == expected_units
    assert all(ds[name].attrs["long_name"] for name in ds.data_vars)
    assert ds.time.values.tolist() == list(range(50))
    assert ds.time.attrs["units"] == "year"
    np.testing.assert_allclose(ds.forcing.values, np.linspace(0.1, 0.2, 50))
    p = StommelParameters()
    np.testing.assert_allclose(
        ds.q, p.hydraulic_constant * (p.thermal_expansion * (ds.T1 - ds.T2) - p.haline_contraction * (ds.S1 - ds.S2))
    )


def test_load_amoc_seed_reproducible():
    first = load_amoc(n_years=50, forcing_end=0.2, seed=3)

    again = load_amoc(n_years=50, forcing_end=0.2, seed=3)
    other = load_amoc(n_years=50, forcing_end=0.2, seed=4)

    xr.testing.assert_identical(first, again)
    assert not np.allclose(first.freshwater_flux, other.freshwater_flux)


def test_load_amoc_rejects_start_above_saddle_node():
    with pytest.raises(ValueError, match=r"forcing_start=0\.6 Sv is above the saddle-node forcing 0\.512"):
        load_amoc(forcing_start=0.6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_years": 1}, "n_years must be an integer of at least 2, got 1"),
        ({"freshwater_noise_std": -0.1}, "freshwater_noise_std must be a finite number >= 0, got -0.1"),
        ({"forcing_start": 0.0}, "forcing_start > 0 Sv, got 0.0"),
    ],
)
def test_load_amoc_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_amoc(**kwargs)


def test_parameters_reject_cold_low_latitude_box():
    with pytest.raises(ValueError, match="restoring_temperature_low .* must exceed restoring_temperature_high"):
        StommelParameters(restoring_temperature_low=0.0, restoring_temperature_high=5.0)


def test_equilibrium_rejects_non_positive_forcing():
    with pytest.raises(ValueError, match="forcing must be a positive freshwater transport"):
        equilibrium_overturning(0.0)


def _predictions() -> xr.Dataset:
    time = xr.DataArray(np.arange(100.0, 110.0), dims="time", attrs={"units": "year"})
    truth = xr.DataArray(np.linspace(5, -4, 10), dims="time", coords={"time": time}, attrs={"units": "Sv", "long_name": "overturning transport"})
    return xr.Dataset({"truth": truth, "parent": truth + 3.0, "child": truth + 1.0})


def test_plot_amoc_draws_each_method():
    fig = plot_amoc(_predictions(), training=xr.DataArray(np.full(5, 6.0), dims="time", coords={"time": np.arange(95.0, 100.0)}))

    lines = {line.get_label(): line for line in fig.axes[0].lines if not line.get_label().startswith("_")}
    assert list(lines) == ["truth (training)", "truth", "parent", "child"]
    np.testing.assert_allclose(lines["child"].get_ydata(), _predictions().child.values)
    assert fig.axes[0].get_ylabel() == "overturning transport [Sv]"


def test_plot_amoc_uses_given_axes():
    fig = Figure()
    ax = fig.subplots()

    assert plot_amoc(_predictions(), ax=ax) is fig
    assert len(ax.lines) >= 3


def test_plot_amoc_rejects_missing_truth():
    with pytest.raises(ValueError, match="predictions must be a Dataset with a 'truth' variable"):
        plot_amoc(_predictions().drop_vars("truth"))


def _merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = _merge(merged.get(key, {}), value) if isinstance(value, dict) else value
    return merged


def test_case_runs_with_quick_settings():
    quick = _merge(load_config(CONFIG).model_dump(mode="json"), CASES["amoc-tipping"].quick)
    quick = _merge(quick, {"training": {"epochs": 3}, "finetune": {"epochs": 2}})
    config = parse_config(quick)

    # The salinity predictor leaves its training range after the collapse, by design.
    with pytest.warns(ExtrapolationWarning, match="S2"):
        result = run(config)

    table = result.skill["q"]
    assert list(table.method.values) == ["parent", "child", "pattern_scaling"]
    assert np.isfinite(table.rmse.values).all()
    predictions = result.predictions["q"]
    assert float(predictions.time.min()) == config.split.apply[0]
    fig = plot_amoc(predictions)
    labels = [line.get_label() for line in fig.axes[0].lines if not line.get_label().startswith("_")]
    assert labels == ["truth", "parent", "child", "pattern scaling"]
