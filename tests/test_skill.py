"""Tests of condupdate.skill against closed forms and numpy references."""

from __future__ import annotations

import contextlib
import csv

import dask
import dask.array
import numpy as np
import pytest
import xarray as xr
from sklearn.exceptions import NotFittedError

from condupdate._errors import DataError
from condupdate.skill import (
    PatternScaling,
    bias,
    extrapolation_distance,
    latitude_weights,
    mae,
    rmse,
    skill_table,
    write_skill_csv,
)

LAT = np.array([-60.0, -20.0, 20.0, 60.0])
LON = np.array([0.0, 90.0, 180.0, 270.0, 330.0])
TIME = np.arange(2000, 2006)


def _field(seed: int, scale: float = 1.0) -> xr.DataArray:
    """Return a seeded (time, lat, lon) field in K on a coarse global grid."""
    rng = np.random.default_rng(seed)
    values = 280.0 + scale * rng.standard_normal((TIME.size, LAT.size, LON.size))
    return xr.DataArray(
        values,
        dims=("time", "lat", "lon"),
        coords={"time": TIME, "lat": LAT, "lon": LON},
        name="tas",
        attrs={"units": "K", "long_name": "near-surface air temperature"},
    )


def _numpy_weights(shape: tuple[int, ...]) -> np.ndarray:
    """Return cos-latitude weights broadcast to a (time, lat, lon) shape."""
    return np.broadcast_to(np.cos(np.deg2rad(LAT))[None, :, None], shape)


class _ComputeCounter:
    """Dask scheduler that counts graph executions and raises instead of running them."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, dsk, keys, **kwargs):
        self.calls += 1
        raise RuntimeError("a dask graph was computed where the code should stay lazy")


@contextlib.contextmanager
def _count_computes():
    counter = _ComputeCounter()
    with dask.config.set(scheduler=counter):
        yield counter


# --------------------------------------------------------------------------- #
# latitude_weights
# --------------------------------------------------------------------------- #


def test_latitude_weights_are_cosine():
    weights = latitude_weights(_field(0))

    np.testing.assert_allclose(weights.values, np.cos(np.deg2rad(LAT)))
    assert weights.dims == ("lat",)
    assert weights.attrs["units"] == "1"


@pytest.mark.parametrize(
    "attrs",
    [{"standard_name": "latitude"}, {"units": "degrees_north"}, {"units": "degree_N"}],
)
def test_latitude_weights_find_coordinate_by_attrs(attrs):
    field = xr.DataArray(np.ones(3), dims="phi", coords={"phi": ("phi", [0.0, 30.0, 60.0], attrs)})

    weights = latitude_weights(field)

    np.testing.assert_allclose(weights.values, [1.0, np.sqrt(3) / 2, 0.5])


def test_latitude_weights_clip_poles_to_zero():
    field = xr.DataArray(np.ones(3), dims="lat", coords={"lat": [-90.0, 0.0, 90.0]})

    weights = latitude_weights(field)

    assert weights.values[0] == 0.0
    assert weights.values[2] == 0.0


def test_latitude_weights_without_latitude_raise():
    field = xr.DataArray(np.ones(2), dims="x", coords={"x": [0.0, 1.0]})

    with pytest.raises(DataError, match=r"No latitude coordinate found among coordinates \['x'\]"):
        latitude_weights(field)


def test_latitude_weights_reject_unknown_name():
    with pytest.raises(DataError, match="lat='phi' is not a coordinate"):
        latitude_weights(_field(0), lat="phi")


# --------------------------------------------------------------------------- #
# rmse, mae, bias
# --------------------------------------------------------------------------- #


def test_rmse_matches_weighted_numpy():
    truth, prediction = _field(0), _field(1)
    error = prediction.values - truth.values
    w = _numpy_weights(error.shape)

    result = rmse(prediction, truth, weights=latitude_weights(truth))

    expected = np.sqrt(np.sum(w * error**2) / np.sum(w))
    np.testing.assert_allclose(float(result), expected, rtol=1e-12)


def test_mae_and_bias_match_weighted_numpy():
    truth, prediction = _field(0), _field(1)
    error = prediction.values - truth.values
    w = _numpy_weights(error.shape)
    weights = latitude_weights(truth)

    result_mae = mae(prediction, truth, weights=weights)
    result_bias = bias(prediction, truth, weights=weights)

    np.testing.assert_allclose(float(result_mae), np.sum(w * np.abs(error)) / np.sum(w), rtol=1e-12)
    np.testing.assert_allclose(float(result_bias), np.sum(w * error) / np.sum(w), rtol=1e-12)


def test_rmse_unweighted_matches_numpy():
    truth, prediction = _field(0), _field(1)

    result = rmse(prediction, truth)

    expected = np.sqrt(np.mean((prediction.values - truth.values) ** 2))
    np.testing.assert_allclose(float(result), expected, rtol=1e-12)


def test_rmse_reduces_only_given_dims():
    truth, prediction = _field(0), _field(1)
    error = prediction.values - truth.values
    w = _numpy_weights(error.shape)

    result = rmse(prediction, truth, dim=("lat", "lon"), weights=latitude_weights(truth))

    expected = np.sqrt(np.sum(w * error**2, axis=(1, 2)) / np.sum(w, axis=(1, 2)))
    assert result.dims == ("time",)
    np.testing.assert_array_equal(result["time"].values, TIME)
    np.testing.assert_allclose(result.values, expected, rtol=1e-12)


def test_rmse_ignores_nan_cells():
    truth, prediction = _field(0), _field(1)
    truth[0, 1, 2] = np.nan
    truth[3, 0, :] = np.nan
    prediction[5, 3, 4] = np.nan
    error = prediction.values - truth.values
    w = _numpy_weights(error.shape)
    valid = np.isfinite(error)

    result = rmse(prediction, truth, weights=latitude_weights(truth))

    expected = np.sqrt(np.sum(w[valid] * error[valid] ** 2) / np.sum(w[valid]))
    np.testing.assert_allclose(float(result), expected, rtol=1e-12)


def test_bias_ignores_nan_cells_unweighted():
    truth, prediction = _field(0), _field(1)
    truth[2, 2, 2] = np.nan
    error = (prediction.values - truth.values).ravel()

    result = bias(prediction, truth)

    np.testing.assert_allclose(float(result), np.mean(error[np.isfinite(error)]), rtol=1e-12)


def test_rmse_without_skipna_returns_nan():
    truth, prediction = _field(0), _field(1)
    truth[0, 0, 0] = np.nan

    result = rmse(prediction, truth, weights=latitude_weights(truth), skipna=False)

    assert np.isnan(float(result))


def test_metrics_keep_truth_units():
    truth, prediction = _field(0), _field(1)
    prediction.attrs = {"units": "degC"}

    for metric in (rmse, mae, bias):
        assert metric(prediction, truth).attrs["units"] == "K"


def test_rmse_rejects_mismatched_coordinates():
    truth = _field(0)
    prediction = _field(1).assign_coords(lat=LAT + 1.0)

    with pytest.raises(DataError, match="prediction and truth have different coordinates"):
        rmse(prediction, truth)


def test_rmse_rejects_unknown_dim():
    truth, prediction = _field(0), _field(1)

    with pytest.raises(DataError, match=r"dim \['depth'\] not found"):
        rmse(prediction, truth, dim="depth")


def test_metrics_stay_lazy():
    truth, prediction = _field(0), _field(1)
    truth[1, 1, 1] = np.nan
    lazy_truth = truth.chunk({"time": 2})
    lazy_prediction = prediction.chunk({"time": 3})
    weights = latitude_weights(truth)

    with _count_computes() as counter:
        results = [
            metric(lazy_prediction, lazy_truth, dim=("lat", "lon"), weights=weights) for metric in (rmse, mae, bias)
        ]

    assert counter.calls == 0
    for metric, result in zip((rmse, mae, bias), results):
        assert isinstance(result.data, dask.array.Array)
        expected = metric(prediction, truth, dim=("lat", "lon"), weights=weights)
        np.testing.assert_allclose(result.compute(scheduler="sync").values, expected.values, rtol=1e-12)


# --------------------------------------------------------------------------- #
# extrapolation_distance
# --------------------------------------------------------------------------- #


def test_extrapolation_distance_closed_form():
    # Training range [0, 2] with sample standard deviation 1.
    train = xr.DataArray([0.0, 1.0, 2.0], dims="subset")
    predictor = xr.DataArray([0.0, 1.3, 2.0, 4.0, -0.5, np.nan], dims="time")

    distance = extrapolation_distance(predictor, train)

    np.testing.assert_allclose(distance.values, [0.0, 0.0, 0.0, 2.0, 0.5, np.nan])


def test_extrapolation_distance_uses_sample_std():
    train = xr.DataArray([0.0, 4.0], dims="subset")  # ddof=1 std: 2 * sqrt(2)
    predictor = xr.DataArray([4.0 + 2.0 * np.sqrt(2.0)], dims="time")

    distance = extrapolation_distance(predictor, train)

    np.testing.assert_allclose(distance.values, [1.0])


def test_extrapolation_distance_per_predictor():
    train = xr.DataArray(
        [[0.0, 10.0], [1.0, 20.0], [2.0, 30.0]],
        dims=("subset", "predictor"),
        coords={"predictor": ["gmst", "forcing"]},
    )
    predictor = xr.DataArray(
        [[3.0, 30.0], [1.0, -10.0]],
        dims=("time", "predictor"),
        coords={"predictor": ["gmst", "forcing"]},
    )

    distance = extrapolation_distance(predictor, train)

    # gmst: std 1, range [0, 2]. forcing: std 10, range [10, 30].
    assert distance.dims == ("time", "predictor")
    np.testing.assert_allclose(distance.values, [[1.0, 0.0], [0.0, 2.0]])


def test_extrapolation_distance_over_given_dim():
    train = xr.DataArray([[0.0, 0.0], [2.0, 4.0]], dims=("subset", "member"))

    distance = extrapolation_distance(xr.DataArray(6.0), train, dim="subset")

    # Member 0: range [0, 2], std sqrt(2). Member 1: range [0, 4], std 2 * sqrt(2).
    assert distance.dims == ("member",)
    np.testing.assert_allclose(distance.values, [4.0 / np.sqrt(2.0), 2.0 / (2.0 * np.sqrt(2.0))])


def test_extrapolation_distance_attrs():
    train = xr.DataArray([0.0, 1.0], dims="subset")

    distance = extrapolation_distance(xr.DataArray([3.0], dims="time"), train)

    assert distance.attrs == {
        "units": "1",
        "long_name": "extrapolation distance in training standard deviations",
    }


def test_extrapolation_distance_constant_training_raises():
    train = xr.DataArray([1.5, 1.5, 1.5], dims="subset")
    predictor = xr.DataArray([2.0], dims="time")

    with pytest.raises(DataError, match="training predictor does not vary"):
        extrapolation_distance(predictor, train)


def test_extrapolation_distance_names_constant_predictor():
    train = xr.DataArray(
        [[0.0, 5.0], [1.0, 5.0]], dims=("subset", "predictor"), coords={"predictor": ["gmst", "depth"]}
    )
    predictor = xr.DataArray([1.0, 5.0], dims="predictor", coords={"predictor": ["gmst", "depth"]})

    with pytest.raises(DataError, match=r"for predictor \['depth'\]"):
        extrapolation_distance(predictor, train)


def test_extrapolation_distance_stays_lazy():
    train = xr.DataArray(np.arange(10.0), dims="subset").chunk({"subset": 5})
    predictor = xr.DataArray(np.linspace(-5.0, 15.0, 8), dims="time").chunk({"time": 4})

    with _count_computes() as counter:
        distance = extrapolation_distance(predictor, train)

    assert counter.calls == 0
    assert isinstance(distance.data, dask.array.Array)
    expected = extrapolation_distance(predictor.compute(), train.compute())
    np.testing.assert_allclose(distance.compute(scheduler="sync").values, expected.values)


def test_distance_raises_on_lazy_constant():
    train = xr.DataArray(np.full(4, 2.0), dims="subset").chunk({"subset": 2})
    distance = extrapolation_distance(xr.DataArray([1.0], dims="time"), train)

    with pytest.raises(DataError, match="training predictor does not vary"):
        distance.compute(scheduler="sync")


# --------------------------------------------------------------------------- #
# PatternScaling
# --------------------------------------------------------------------------- #


def _gmst() -> xr.DataArray:
    values = np.linspace(0.0, 1.5, TIME.size) + np.array([0.0, 0.1, -0.05, 0.2, 0.0, -0.1])
    return xr.DataArray(values, dims="time", coords={"time": TIME}, attrs={"units": "K"})


def test_pattern_scaling_recovers_linear_field():
    gmst = _gmst()
    rng = np.random.default_rng(3)
    grid = {"dims": ("lat", "lon"), "coords": {"lat": LAT, "lon": LON}}
    intercept = xr.DataArray(rng.normal(size=(LAT.size, LON.size)), **grid)
    slope = xr.DataArray(rng.normal(size=(LAT.size, LON.size)), **grid)
    target = (intercept + slope * gmst).transpose("time", "lat", "lon")

    model = PatternScaling().fit(target, gmst)

    np.testing.assert_allclose(model.slope_.values, slope.values, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.intercept_.values, intercept.values, rtol=1e-10, atol=1e-12)
    assert model.slope_.dims == ("lat", "lon")


def test_pattern_scaling_matches_polyfit():
    gmst = _gmst()
    target = _field(4, scale=3.0)

    model = PatternScaling().fit(target, gmst)

    for i in range(LAT.size):
        for j in range(LON.size):
            slope, intercept = np.polyfit(gmst.values, target.values[:, i, j], deg=1)
            np.testing.assert_allclose(model.slope_.values[i, j], slope, rtol=1e-10)
            np.testing.assert_allclose(model.intercept_.values[i, j], intercept, rtol=1e-10)


def test_pattern_scaling_skips_nan_times():
    gmst = _gmst()
    target = _field(5)
    target[[0, 4], 1, 2] = np.nan
    target[:, 3, 0] = np.nan
    target[1:, 2, 3] = np.nan  # one valid time: slope undefined

    model = PatternScaling().fit(target, gmst)

    valid = np.isfinite(target.values[:, 1, 2])
    slope, intercept = np.polyfit(gmst.values[valid], target.values[valid, 1, 2], deg=1)
    np.testing.assert_allclose(model.slope_.values[1, 2], slope, rtol=1e-10)
    np.testing.assert_allclose(model.intercept_.values[1, 2], intercept, rtol=1e-10)
    assert np.isnan(model.slope_.values[3, 0])
    assert np.isnan(model.intercept_.values[3, 0])
    assert np.isnan(model.slope_.values[2, 3])
    assert np.isfinite(model.slope_.values[0, 0])


def test_predict_keeps_dims_and_attrs():
    gmst = _gmst()
    target = _field(6).transpose("lat", "time", "lon")
    future = xr.DataArray([2.0, 3.0], dims="time", coords={"time": [2100, 2101]}, attrs={"units": "K"})

    model = PatternScaling().fit(target, gmst)
    prediction = model.predict(future)

    assert prediction.dims == ("lat", "time", "lon")
    assert prediction.attrs == target.attrs
    assert prediction.name == "tas"
    np.testing.assert_array_equal(prediction["time"].values, [2100, 2101])
    # (lat, time, lon) = (lat, 1, lon) + (lat, 1, lon) * (1, time, 1)
    future_values = np.array([2.0, 3.0])[None, :, None]
    expected = model.intercept_.values[:, None, :] + model.slope_.values[:, None, :] * future_values
    np.testing.assert_allclose(prediction.values, expected)


def test_pattern_scaling_units():
    model = PatternScaling().fit(_field(7), _gmst())

    assert model.intercept_.attrs["units"] == "K"
    assert model.slope_.attrs["units"] == "K (K)-1"


def test_predict_before_fit_raises():
    model = PatternScaling()
    gmst = _gmst()

    with pytest.raises(NotFittedError, match="not fitted"):
        model.predict(gmst)


def test_pattern_scaling_rejects_constant_predictor():
    constant = xr.full_like(_gmst(), 1.0)
    target = _field(8)
    model = PatternScaling()

    with pytest.raises(DataError, match="predictor does not vary over the training period"):
        model.fit(target, constant)


def test_pattern_scaling_rejects_gridded_predictor():
    target = _field(8)
    model = PatternScaling()

    with pytest.raises(DataError, match="must have the single dim 'time'"):
        model.fit(target, target)


def test_pattern_scaling_rejects_other_period():
    target = _field(8)
    shifted = _gmst().assign_coords(time=TIME + 100)
    model = PatternScaling()

    with pytest.raises(DataError, match="different 'time' coordinates"):
        model.fit(target, shifted)


def test_pattern_scaling_stays_lazy():
    gmst = _gmst()
    target = _field(9)
    target[2, 1, 1] = np.nan
    lazy_target = target.chunk({"lat": 2, "lon": 2})
    future = xr.DataArray([2.0, 2.5], dims="time", coords={"time": [2100, 2101]})

    with _count_computes() as counter:
        model = PatternScaling().fit(lazy_target, gmst)
        prediction = model.predict(future)

    assert counter.calls == 0
    assert isinstance(model.slope_.data, dask.array.Array)
    assert isinstance(prediction.data, dask.array.Array)
    eager = PatternScaling().fit(target, gmst)
    np.testing.assert_allclose(model.slope_.compute(scheduler="sync").values, eager.slope_.values, rtol=1e-12)
    np.testing.assert_allclose(
        prediction.compute(scheduler="sync").values, eager.predict(future).values, rtol=1e-12
    )


# --------------------------------------------------------------------------- #
# skill_table and write_skill_csv
# --------------------------------------------------------------------------- #


def test_skill_table_dims_and_units():
    truth = _field(0)
    predictions = {"parent": _field(1), "child": _field(2), "pattern scaling": _field(3)}

    table = skill_table(truth, predictions, weights=latitude_weights(truth))

    assert set(table.data_vars) == {"rmse", "mae", "bias"}
    for name in ("rmse", "mae", "bias"):
        assert table[name].dims == ("method",)
        assert table[name].attrs["units"] == "K"
        assert "long_name" in table[name].attrs
    assert table["method"].values.tolist() == ["parent", "child", "pattern scaling"]


def test_skill_table_matches_metrics():
    truth = _field(0)
    predictions = {"parent": _field(1), "child": _field(2)}
    weights = latitude_weights(truth)

    table = skill_table(truth, predictions, weights=weights)

    for method, prediction in predictions.items():
        row = table.sel({"method": method})
        np.testing.assert_allclose(float(row["rmse"]), float(rmse(prediction, truth, weights=weights)))
        np.testing.assert_allclose(float(row["mae"]), float(mae(prediction, truth, weights=weights)))
        np.testing.assert_allclose(float(row["bias"]), float(bias(prediction, truth, weights=weights)))


def test_skill_table_excludes_nan_per_method():
    truth = _field(0)
    truth[0, 0, 0] = np.nan
    parent = _field(1)
    parent[1, 1, 1] = np.nan
    child = _field(2)

    table = skill_table(truth, {"parent": parent, "child": child})

    for method, prediction in (("parent", parent), ("child", child)):
        error = (prediction.values - truth.values).ravel()
        expected = np.sqrt(np.mean(error[np.isfinite(error)] ** 2))
        np.testing.assert_allclose(float(table["rmse"].sel({"method": method})), expected, rtol=1e-12)


def test_skill_table_stays_lazy():
    truth, parent = _field(0), _field(1)
    weights = latitude_weights(truth)

    with _count_computes() as counter:
        table = skill_table(truth.chunk({"time": 2}), {"parent": parent.chunk({"time": 3})}, weights=weights)

    assert counter.calls == 0
    for name in ("rmse", "mae", "bias"):
        assert isinstance(table[name].data, dask.array.Array)
    expected = rmse(parent, truth, weights=weights)
    np.testing.assert_allclose(table["rmse"].compute(scheduler="sync").values, [float(expected)], rtol=1e-12)


def test_write_skill_csv_from_lazy_table(tmp_path):
    truth = _field(0)
    table = skill_table(truth.chunk({"time": 2}), {"parent": _field(1)})

    path = write_skill_csv(table, tmp_path / "skill.csv")

    rows = path.read_text().splitlines()
    assert rows[0] == "method,rmse,mae,bias"
    assert rows[1].startswith("parent,")


def test_skill_table_keeps_unreduced_dims():
    truth = _field(0)

    table = skill_table(truth, {"parent": _field(1)}, dim=("lat", "lon"))

    assert table["rmse"].dims == ("method", "time")


def test_skill_table_rejects_empty_predictions():
    truth = _field(0)

    with pytest.raises(ValueError, match="predictions is empty"):
        skill_table(truth, {})


def test_write_skill_csv_header_and_rows(tmp_path):
    truth = _field(0)
    table = skill_table(truth, {"parent": _field(1), "child, tuned": _field(2)})

    path = write_skill_csv(table, tmp_path / "skill.csv")

    with open(path, newline="") as stream:
        rows = list(csv.reader(stream))
    assert path == tmp_path / "skill.csv"
    assert rows[0] == ["method", "rmse", "mae", "bias"]
    assert len(rows) == 3
    assert [row[0] for row in rows[1:]] == ["parent", "child, tuned"]
    np.testing.assert_allclose(float(rows[1][1]), float(table["rmse"][0]), rtol=1e-5)
    assert list(tmp_path.iterdir()) == [path]


def test_write_skill_csv_rejects_unreduced_table(tmp_path):
    table = skill_table(_field(0), {"parent": _field(1)}, dim="time")
    path = tmp_path / "skill.csv"

    with pytest.raises(DataError, match=r"has dims \['method', 'lat', 'lon'\]"):
        write_skill_csv(table, path)
