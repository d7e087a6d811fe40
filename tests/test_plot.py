"""Tests of condupdate.plot: what each figure contains, and how it is written."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.collections import QuadMesh  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from condupdate._errors import DataError  # noqa: E402
from condupdate.plot import error_maps, error_vs_distance, save_figure  # noqa: E402

LAT = np.array([-60.0, -20.0, 20.0, 60.0])
LON = np.array([0.0, 90.0, 180.0, 270.0])
YEARS = np.arange(2080, 2085)


def _series(values, units: str | None = "K") -> xr.DataArray:
    attrs = {} if units is None else {"units": units}
    return xr.DataArray(np.asarray(values, dtype=float), dims="time", coords={"time": YEARS}, attrs=attrs)


def _error_map(seed: int, scale: float = 1.0) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    return xr.DataArray(
        scale * rng.random((LAT.size, LON.size)),
        dims=("lat", "lon"),
        coords={
            "lat": ("lat", LAT, {"units": "degrees_north", "long_name": "latitude"}),
            "lon": ("lon", LON, {"units": "degrees_east", "long_name": "longitude"}),
        },
        attrs={"units": "K"},
    )


def _errors_by_distance() -> tuple[xr.DataArray, dict[str, xr.DataArray]]:
    distance = _series([0.0, 0.4, 1.1, 1.9, 2.5], units="1")
    errors = {
        "parent": _series([0.3, 0.5, 0.9, 1.4, 1.8]),
        "child": _series([0.3, 0.35, 0.5, 0.7, 0.9]),
    }
    return distance, errors


# --------------------------------------------------------------------------- #
# error_vs_distance
# --------------------------------------------------------------------------- #


def test_error_vs_distance_series_per_method():
    distance, errors = _errors_by_distance()

    fig = error_vs_distance(distance, errors)

    (ax,) = fig.axes
    assert [line.get_label() for line in ax.lines] == ["parent", "child"]
    np.testing.assert_allclose(ax.lines[0].get_xdata(), distance.values)
    np.testing.assert_allclose(ax.lines[1].get_ydata(), errors["child"].values)


def test_error_vs_distance_labels_and_legend():
    distance, errors = _errors_by_distance()

    fig = error_vs_distance(distance, errors)

    (ax,) = fig.axes
    assert ax.get_xlabel() == "Distance beyond the training range (training standard deviations)"
    assert ax.get_ylabel() == "RMSE [K]"
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["parent", "child"]
    assert ax.get_title() != ""


def test_error_vs_distance_units_argument_wins():
    distance, errors = _errors_by_distance()

    fig = error_vs_distance(distance, errors, units="degC")

    assert fig.axes[0].get_ylabel() == "RMSE [degC]"


def test_error_vs_distance_draws_on_given_axes():
    distance, errors = _errors_by_distance()
    figure = Figure()
    ax = figure.subplots()

    fig = error_vs_distance(distance, errors, ax=ax)

    assert fig is figure
    assert len(ax.lines) == 2


def test_error_vs_distance_rejects_other_dim():
    distance, errors = _errors_by_distance()
    errors["child"] = errors["child"].rename(time="year")

    with pytest.raises(DataError, match=r"errors\['child'\] must be a 1-D DataArray on dim 'time'"):
        error_vs_distance(distance, errors)


# --------------------------------------------------------------------------- #
# error_maps
# --------------------------------------------------------------------------- #


def test_error_maps_share_colour_limits():
    errors = {"parent": _error_map(0, scale=3.0), "child": _error_map(1), "pattern scaling": _error_map(2, 2.0)}
    every_value = np.concatenate([error.values.ravel() for error in errors.values()])

    fig = error_maps(errors)

    panels = fig.axes[:3]
    meshes = [collection for panel in panels for collection in panel.collections]
    assert len(meshes) == 3
    assert all(isinstance(mesh, QuadMesh) for mesh in meshes)
    for mesh in meshes:
        assert mesh.get_clim() == pytest.approx((every_value.min(), every_value.max()))


def test_error_maps_one_colorbar_with_units():
    errors = {"parent": _error_map(0), "child": _error_map(1)}

    fig = error_maps(errors)

    # Two panels plus one colorbar axes.
    assert len(fig.axes) == 3
    assert fig.axes[-1].get_ylabel() == "K"


def test_error_maps_titles_give_area_mean():
    error = _error_map(0)
    error[1, 2] = np.nan
    values = error.values
    weights = np.broadcast_to(np.cos(np.deg2rad(LAT))[:, None], values.shape)
    valid = np.isfinite(values)
    area_mean = np.sum(weights[valid] * values[valid]) / np.sum(weights[valid])

    fig = error_maps({"child": error})

    assert fig.axes[0].get_title() == f"child\narea mean {area_mean:.3g} K"


def test_error_maps_axis_labels_from_coordinates():
    fig = error_maps({"parent": _error_map(0)})

    assert fig.axes[0].get_xlabel() == "longitude [degrees_east]"
    assert fig.axes[0].get_ylabel() == "latitude [degrees_north]"


def test_error_maps_accept_lon_lat_order():
    error = _error_map(0)

    fig = error_maps({"parent": error.transpose("lon", "lat")})

    (mesh,) = fig.axes[0].collections
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(error.shape), error.values)


def test_error_maps_draw_on_given_axes():
    figure = Figure()
    axes = figure.subplots(1, 2)

    fig = error_maps({"parent": _error_map(0), "child": _error_map(1)}, ax=axes)

    assert fig is figure
    assert len(axes[0].collections) == 1
    assert len(axes[1].collections) == 1


def test_error_maps_reject_wrong_axes_count():
    axes = Figure().subplots(1, 2)
    errors = {"parent": _error_map(0), "child": _error_map(1), "pattern scaling": _error_map(2)}

    with pytest.raises(ValueError, match="ax has 2 axes but errors has 3 methods"):
        error_maps(errors, ax=axes)


def test_error_maps_reject_three_dims():
    field = _error_map(0).expand_dims(time=YEARS)

    with pytest.raises(DataError, match="must be a 2-D DataArray"):
        error_maps({"parent": field})


# --------------------------------------------------------------------------- #
# save_figure
# --------------------------------------------------------------------------- #


def test_save_figure_writes_png(tmp_path):
    distance, errors = _errors_by_distance()
    fig = error_vs_distance(distance, errors)

    path = save_figure(fig, tmp_path / "figures" / "distance.png")

    assert path == tmp_path / "figures" / "distance.png"
    assert path.stat().st_size > 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(path.parent.iterdir()) == [path]


def test_save_figure_closes_pyplot_figure(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])

    save_figure(fig, tmp_path / "line.png")

    assert fig.number not in plt.get_fignums()


def test_save_figure_rejects_other_suffix(tmp_path):
    fig = Figure()
    path = tmp_path / "figure.pdf"

    with pytest.raises(ValueError, match="must end in '.png'"):
        save_figure(fig, path)


def test_time_series_labels_named_steps_by_name():
    # A split dim of names (climate models, scenarios) has no numeric value to plot against.
    rng = np.random.default_rng(0)
    truth = xr.DataArray(rng.random((3, 4)), dims=("model", "point"), coords={"model": ["CanESM5", "MIROC6", "UKESM1"]})
    from condupdate.plot import time_series

    fig = time_series(truth, {"child": truth + 0.5}, dim="model")
    ax = fig.axes[0]
    assert [label.get_text() for label in ax.get_xticklabels()] == ["CanESM5", "MIROC6", "UKESM1"]
    child = next(line for line in ax.get_lines() if line.get_label() == "child")
    np.testing.assert_allclose(child.get_xdata(), [0, 1, 2])
    np.testing.assert_allclose(child.get_ydata(), truth.mean("point").values + 0.5)
