"""Tests of condupdate.regimes: subset labels and the predictors that describe them."""

from __future__ import annotations

import cftime
import dask.array
import numpy as np
import pytest
import xarray as xr

from condupdate._errors import DataError
from condupdate.regimes import (
    coordinate_predictor,
    domain_mean,
    external_predictor,
    label_subsets,
    quantile_subsets,
    subset_order,
    subset_predictors,
    window_subsets,
)


def _annual_time(calendar: str = "360_day", start_year: int = 1860, n_years: int = 45) -> xr.DataArray:
    times = xr.date_range(
        f"{start_year:04d}-07-01", periods=n_years, freq="YS-JUL", calendar=calendar, use_cftime=True
    )
    return xr.DataArray(times, dims="time", coords={"time": times}, name="time")


def _series(values, time: xr.DataArray, name: str = "global_mean_temperature") -> xr.DataArray:
    return xr.DataArray(
        np.asarray(values, dtype=float), dims="time", coords={"time": time.values}, name=name, attrs={"units": "K"}
    )


# --------------------------------------------------------------------------- #
# Subsets
# --------------------------------------------------------------------------- #


def test_window_subsets_decade_labels_360_day():
    time = _annual_time("360_day", 1860, 45)

    labels = window_subsets(time, "time", 10)

    assert labels.name == "subset"
    assert labels.dims == ("time",)
    expected = ["1860-1869", "1870-1879", "1880-1889", "1890-1899", "1900-1904"]
    assert subset_order(labels) == expected
    assert list(labels.values[:10]) == ["1860-1869"] * 10
    # The last window is short (five years) and kept as its own subset.
    assert list(labels.values[40:]) == ["1900-1904"] * 5
    assert labels.time.values[0] == time.values[0]


def test_window_subsets_single_step_labels():
    time = _annual_time("noleap", 1860, 3)

    labels = window_subsets(time, "time", 1)

    assert list(labels.values) == ["1860", "1861", "1862"]


def test_window_subsets_monthly_windows_distinct():
    # Monthly means stamped mid-month, January 1860 to December 1861.
    times = [cftime.Datetime360Day(1860 + m // 12, m % 12 + 1, 16) for m in range(24)]
    time = xr.DataArray(times, dims="time", coords={"time": times}, name="time")

    # Half-year windows: four windows, two in each year.
    labels = window_subsets(time, "time", 6)

    assert len(subset_order(labels)) == 4
    for start in range(0, 24, 6):
        assert len(set(labels.values[start : start + 6])) == 1


def test_window_subsets_on_depth_levels():
    depth = xr.DataArray([5.0, 15.0, 25.0, 50.0, 100.0], dims="depth", coords={"depth": [5.0, 15.0, 25.0, 50.0, 100.0]})

    labels = window_subsets(depth, "depth", 2)

    assert list(labels.values) == ["5-15", "5-15", "25-50", "25-50", "100"]


def test_window_subsets_zero_size_raises():
    time = _annual_time()

    with pytest.raises(ValueError, match="got 0"):
        window_subsets(time, "time", 0)


def test_window_subsets_unknown_dim_raises():
    time = _annual_time()

    with pytest.raises(DataError, match="'depth' not found"):
        window_subsets(time, "depth", 10)


def test_quantile_subsets_nearly_equal_counts():
    rng = np.random.default_rng(3)
    predictor = xr.DataArray(rng.gamma(2.0, 1.5, size=103), dims="time", name="global_mean_temperature")

    labels = quantile_subsets(predictor, 4)

    names, counts = np.unique(labels.values, return_counts=True)
    assert list(names) == ["q0", "q1", "q2", "q3"]
    assert counts.max() - counts.min() <= 1
    # Bins are ordered, so every value of bin k is at most every value of bin k + 1.
    for low, high in zip(names[:-1], names[1:]):
        assert predictor.values[labels.values == low].max() <= predictor.values[labels.values == high].min()


def test_quantile_subsets_nan_gets_no_subset():
    values = np.array([1.0, np.nan, 2.0, 3.0, 4.0, np.nan, 5.0, 6.0])
    predictor = xr.DataArray(values, dims="time", name="global_mean_temperature")

    labels = quantile_subsets(predictor, 2)

    assert list(labels.values) == ["q0", "", "q0", "q0", "q1", "", "q1", "q1"]
    assert subset_order(labels) == ["q0", "q1"]


def test_quantile_subsets_too_few_values_raises():
    predictor = xr.DataArray([1.0, np.nan, 2.0], dims="time", name="global_mean_temperature")

    with pytest.raises(DataError, match="2 finite values, fewer than n_bins=3"):
        quantile_subsets(predictor, 3)


def test_label_subsets_one_per_label():
    models = ["HadGEM3-GC31-LL", "CanESM5", "MPI-ESM1-2-LR"]
    field = xr.DataArray(np.zeros((3, 2)), dims=("model", "time"), coords={"model": models})

    labels = label_subsets(field, "model")

    assert list(labels.values) == models
    assert labels.dims == ("model",)
    assert subset_order(labels) == models


def test_label_subsets_formats_depth_and_time():
    depth = xr.DataArray([5.0, 15.5], dims="depth", coords={"depth": [5.0, 15.5]})
    time = _annual_time("360_day", 1860, 2)

    assert list(label_subsets(depth, "depth").values) == ["5", "15.5"]
    assert list(label_subsets(time, "time").values) == ["1860", "1861"]


def test_subset_order_first_appearance():
    labels = xr.DataArray(["b", "b", "", "a", "c", "a"], dims="time")

    assert subset_order(labels) == ["b", "a", "c"]


# --------------------------------------------------------------------------- #
# Predictors
# --------------------------------------------------------------------------- #


def test_domain_mean_cos_latitude_weights(temperature_dataset):
    field = temperature_dataset().air_temperature

    mean = domain_mean(field)

    weights = np.broadcast_to(np.cos(np.deg2rad(field.latitude.values))[None, :, None], field.shape)
    finite = np.isfinite(field.values)
    expected = (np.where(finite, weights * field.values, 0.0).sum((1, 2))) / np.where(finite, weights, 0.0).sum((1, 2))
    assert mean.dims == ("time",)
    assert np.isfinite(mean.values).all()
    np.testing.assert_allclose(mean.values, expected, rtol=1e-12)
    assert mean.attrs["units"] == "K"


def test_domain_mean_ignores_nan_cells():
    # Two latitude rows: the NaN cell must not pull the mean towards zero.
    field = xr.DataArray(
        [[[280.0, np.nan], [300.0, 300.0]]],
        dims=("time", "lat", "lon"),
        coords={"lat": [0.0, 60.0], "lon": [0.0, 180.0]},
        attrs={"units": "K"},
    )

    mean = domain_mean(field)

    # Weights cos 0 = 1 (one valid cell) and cos 60 = 0.5 (two cells).
    np.testing.assert_allclose(mean.values, [(280.0 + 0.5 * 600.0) / 2.0], rtol=1e-12)


def test_domain_mean_stays_lazy(temperature_dataset, compute_counter):
    field = temperature_dataset().air_temperature.chunk({"time": 10})

    mean = domain_mean(field)

    assert isinstance(mean.data, dask.array.Array)
    assert compute_counter.count == 0


@pytest.mark.parametrize(
    ("calendar", "expected_first"),
    [
        # 1 July is day 181 of 360 in 360_day and day 182 of 365 in noleap.
        ("360_day", 1860 + 180 / 360),
        ("noleap", 1860 + 181 / 365),
    ],
)
def test_coordinate_predictor_decimal_years(temperature_dataset, calendar, expected_first):
    ds = temperature_dataset(calendar=calendar)

    years = coordinate_predictor(ds, "time")

    assert years.name == "time"
    assert years.dtype == np.float64
    np.testing.assert_allclose(years.values, expected_first + np.arange(40), rtol=0, atol=1e-9)


def test_coordinate_predictor_keeps_latitude(temperature_dataset):
    ds = temperature_dataset()

    latitude = coordinate_predictor(ds, "latitude")

    np.testing.assert_array_equal(latitude.values, ds.latitude.values)
    assert latitude.dims == ("latitude",)


def test_coordinate_predictor_unknown_raises(temperature_dataset):
    ds = temperature_dataset()

    with pytest.raises(DataError, match="'depth' not found"):
        coordinate_predictor(ds, "depth")


def test_external_predictor_aligns_by_label():
    time = _annual_time("360_day", 1860, 30)
    # The series covers more years than the data and is stored newest first.
    longer = _annual_time("360_day", 1850, 60)
    series = _series(0.01 * np.arange(60) + 0.5, longer).isel(time=slice(None, None, -1))

    aligned = external_predictor(series, time, "time")

    np.testing.assert_allclose(aligned.values, 0.01 * np.arange(10, 40) + 0.5, rtol=1e-12)
    assert list(aligned.time.values) == list(time.values)


def test_external_predictor_other_calendar_raises():
    time = _annual_time("360_day", 1860, 30)
    series = _series(np.arange(30.0), _annual_time("noleap", 1860, 30))

    with pytest.raises(DataError, match="'global_mean_temperature' lacks some 'time' labels"):
        external_predictor(series, time, "time")


def test_external_predictor_missing_years_raises():
    time = _annual_time("360_day", 1860, 30)
    series = _series(np.arange(20.0), _annual_time("360_day", 1860, 20))

    with pytest.raises(DataError, match="'global_mean_temperature' lacks some 'time' labels"):
        external_predictor(series, time, "time")


def test_external_predictor_without_dim_raises():
    time = _annual_time("360_day", 1860, 30)
    series = xr.DataArray(np.arange(30.0), dims="year", name="global_mean_temperature")

    with pytest.raises(DataError, match="has no dimension 'time'"):
        external_predictor(series, time, "time")


def test_subset_predictors_window_means():
    time = _annual_time("360_day", 1860, 30)
    values = np.random.default_rng(5).normal(14.0, 0.4, 30)
    predictor = _series(values, time)
    subsets = window_subsets(time, "time", 5)

    means = subset_predictors(predictor, subsets)

    assert means.dims == ("subset",)
    assert list(means.subset.values) == subset_order(subsets)
    np.testing.assert_allclose(means.values, values.reshape(6, 5).mean(1), rtol=1e-12)


def test_subset_predictors_several_predictors():
    time = _annual_time("360_day", 1860, 30)
    rng = np.random.default_rng(6)
    values = rng.normal(size=(30, 2))
    predictor = xr.DataArray(
        values, dims=("time", "predictor"), coords={"time": time.values, "predictor": ["forcing", "temperature"]}
    )
    subsets = window_subsets(time, "time", 10)

    means = subset_predictors(predictor, subsets)

    assert set(means.dims) == {"subset", "predictor"}
    expected = values.reshape(3, 10, 2).mean(1)
    np.testing.assert_allclose(means.transpose("subset", "predictor").values, expected, rtol=1e-12)


def test_subset_predictors_gridded_with_nan(temperature_dataset):
    field = temperature_dataset().air_temperature.isel(time=slice(0, 30))
    subsets = window_subsets(field, "time", 10)

    means = subset_predictors(field, subsets)

    expected = [np.nanmean(field.values[k * 10 : (k + 1) * 10]) for k in range(3)]
    assert list(means.subset.values) == ["1860-1869", "1870-1879", "1880-1889"]
    np.testing.assert_allclose(means.values, expected, rtol=1e-12)


def test_subset_predictors_follow_first_appearance():
    time = _annual_time("360_day", 1860, 6)
    predictor = _series([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], time)
    subsets = xr.DataArray(["late", "late", "early", "early", "late", "early"], dims="time", name="subset")

    means = subset_predictors(predictor, subsets)

    assert list(means.subset.values) == ["late", "early"]
    np.testing.assert_allclose(means.values, [(1.0 + 2.0 + 5.0) / 3.0, (3.0 + 4.0 + 6.0) / 3.0], rtol=1e-12)


def test_subset_predictors_gridded_quantile_bins(temperature_dataset):
    field = temperature_dataset().air_temperature
    subsets = quantile_subsets(field, 4)

    means = subset_predictors(field, subsets)

    expected = [np.nanmean(field.values[subsets.values == f"q{k}"]) for k in range(4)]
    assert list(means.subset.values) == subset_order(subsets)
    np.testing.assert_allclose(means.sel(subset=["q0", "q1", "q2", "q3"]).values, expected, rtol=1e-12)
