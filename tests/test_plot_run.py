"""Tests of the run figures in condupdate.plot and of redrawing them from a finished run."""

from __future__ import annotations

import json
import shutil
import warnings

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.collections import QuadMesh  # noqa: E402
from matplotlib.container import ErrorbarContainer  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from sklearn.linear_model import LinearRegression  # noqa: E402

import condupdate.emulators  # noqa: E402
import condupdate.emulators.training  # noqa: E402
import condupdate.jobs.distributed  # noqa: E402
import condupdate.jobs.run  # noqa: E402
import condupdate.update.conditional  # noqa: E402
from condupdate._errors import DataError, ExtrapolationWarning  # noqa: E402
from condupdate.cli import main  # noqa: E402
from condupdate.jobs.config import parse_config  # noqa: E402
from condupdate.jobs.redraw import load_outputs, redraw  # noqa: E402
from condupdate.jobs.run import run  # noqa: E402
from condupdate.plot import (  # noqa: E402
    anomaly_vs_predictor,
    loss_curves,
    skill_vs_distance,
    summary,
    time_series,
)

YEARS = np.arange(2070, 2076)
LATITUDE = np.array([-45.0, 0.0, 45.0])
LONGITUDE = np.array([0.0, 120.0, 240.0])

# Figures redraw writes for a one-target run on a latitude-longitude grid along time.
RUN_FIGURES = [
    "error_vs_distance.png",
    "error_maps.png",
    "bias_maps.png",
    "time_series.png",
    "summary.png",
    "anomaly_vs_predictor.png",
    "loss_curves.png",
]


# --------------------------------------------------------------------------- #
# Small labelled inputs
# --------------------------------------------------------------------------- #


def _series(values, dim: str = "year", units: str | None = "K") -> xr.DataArray:
    values = np.asarray(values, dtype=float)
    attrs = {} if units is None else {"units": units}
    return xr.DataArray(values, dims=dim, coords={dim: YEARS[: values.size]}, attrs=attrs)


def _distance_and_errors() -> tuple[xr.DataArray, dict[str, xr.DataArray]]:
    # Distances deliberately out of order, so lines must be sorted by distance.
    distance = _series([1.5, 0.0, 2.5, 0.5, 1.0], units="1")
    errors = {
        "parent": _series([1.4, 0.3, 2.0, 0.5, 0.9]),
        "child": _series([0.7, 0.3, 0.9, 0.35, 0.5]),
        "pattern_scaling": _series([1.0, 0.4, 1.2, 0.6, 0.8]),
    }
    return distance, errors


def _member_errors(seed: int = 0, n_members: int = 20) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    values = 0.5 + rng.random((n_members, 5))
    return xr.DataArray(values, dims=("member", "year"), coords={"year": YEARS[:5]}, attrs={"units": "K"})


def _anomalies(values: np.ndarray, predictor: np.ndarray) -> xr.DataArray:
    """Label (subset, parameter) or (member, subset, parameter) anomalies of a 2 x 3 weight and a 2-element bias."""
    dims = ("subset", "parameter") if values.ndim == 2 else ("member", "subset", "parameter")
    n_subsets, n_parameters = values.shape[-2:]
    assert n_parameters == 8
    return xr.DataArray(
        values,
        dims=dims,
        coords={
            "subset": [f"s{k}" for k in range(n_subsets)],
            "parameter": np.arange(n_parameters),
            "tensor": ("parameter", ["layers.0.weight"] * 6 + ["layers.0.bias"] * 2),
            "forcing": ("subset", predictor, {"units": "W m-2", "long_name": "radiative forcing"}),
        },
        attrs={
            "predictors": json.dumps(["forcing"]),
            "tensor_names": json.dumps(["layers.0.weight", "layers.0.bias"]),
            "tensor_shapes": json.dumps([[2, 3], [2]]),
        },
    )


def _linear_anomalies(seed: int = 0) -> xr.DataArray:
    # Parameter p changes with slope p / 10 per W m-2 plus small noise, so the
    # largest variance across subsets belongs to parameters 7, 6, 5, ...
    rng = np.random.default_rng(seed)
    forcing = np.linspace(0.5, 2.0, 6)
    slopes = np.arange(8) / 10.0
    values = forcing[:, None] * slopes[None, :] + 0.001 * rng.standard_normal((6, 8))
    return _anomalies(values, forcing)


def _field(calendar: str = "360_day", n_years: int = 6, seed: int = 0) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    time = xr.date_range("2070-07-01", periods=n_years, freq="YS-JUL", calendar=calendar, use_cftime=True)
    values = 290.0 + rng.standard_normal((n_years, LATITUDE.size, LONGITUDE.size))
    return xr.DataArray(
        values,
        dims=("time", "latitude", "longitude"),
        coords={
            "time": time,
            "latitude": ("latitude", LATITUDE, {"units": "degrees_north"}),
            "longitude": ("longitude", LONGITUDE, {"units": "degrees_east"}),
        },
        attrs={"units": "K", "long_name": "air temperature"},
    )


def _history(n_subsets: int = 3, validation: bool = True) -> dict:
    parent_train = [1.0, 0.4, 0.2, 0.15, 0.16]
    parent = {"train_loss": parent_train, "val_loss": [0.9, 0.5, 0.25, 0.2, 0.22] if validation else parent_train}
    finetune = {}
    for k in range(n_subsets):
        train = [0.15 - 0.01 * k, 0.12 - 0.01 * k, 0.11 - 0.01 * k]
        finetune[f"{1860 + 10 * k}-{1869 + 10 * k}"] = {
            "train_loss": train,
            "val_loss": [0.2, 0.19, 0.185] if validation else train,
        }
    return {"parent": parent, "finetune": finetune}


def _legend_texts(legend) -> list[str]:
    return [text.get_text() for text in legend.get_texts()]


# --------------------------------------------------------------------------- #
# skill_vs_distance
# --------------------------------------------------------------------------- #


def test_skill_vs_distance_one_line_per_method():
    distance, errors = _distance_and_errors()

    fig = skill_vs_distance(distance, errors)

    (ax,) = fig.axes
    assert len(ax.lines) == 3
    assert [line.get_label() for line in ax.lines] == ["parent", "child", "pattern scaling"]


def test_skill_vs_distance_lines_sorted_by_distance():
    distance, errors = _distance_and_errors()
    order = np.argsort(distance.values)

    fig = skill_vs_distance(distance, errors)

    child = fig.axes[0].lines[1]
    np.testing.assert_allclose(child.get_xdata(), distance.values[order])
    np.testing.assert_allclose(child.get_ydata(), errors["child"].values[order])


def test_skill_vs_distance_axes_match_data():
    distance, errors = _distance_and_errors()

    fig = skill_vs_distance(distance, errors)

    (ax,) = fig.axes
    assert ax.get_xlabel() == "Distance beyond the training range (training standard deviations)"
    assert ax.get_ylabel() == "RMSE [K]"
    bottom, top = ax.get_ylim()
    assert bottom == 0.0
    assert top >= max(float(error.max()) for error in errors.values())
    left, right = ax.get_xlim()
    assert left <= float(distance.min())
    assert right >= float(distance.max())


def test_skill_vs_distance_percentile_band():
    distance, errors = _distance_and_errors()
    members = _member_errors()
    low = np.percentile(members.values, 5.0, axis=0)
    high = np.percentile(members.values, 95.0, axis=0)

    fig = skill_vs_distance(distance, errors, bands={"child": members})

    (ax,) = fig.axes
    (band,) = ax.collections
    vertices = band.get_paths()[0].vertices
    for x, expected_low, expected_high in zip(distance.values, low, high):
        at_x = vertices[np.isclose(vertices[:, 0], x), 1]
        assert at_x.min() == pytest.approx(expected_low)
        assert at_x.max() == pytest.approx(expected_high)


def test_skill_vs_distance_spread_band():
    distance, errors = _distance_and_errors()
    members = _member_errors()
    mean = members.values.mean(axis=0)
    spread = members.values.std(axis=0, ddof=1)

    fig = skill_vs_distance(distance, errors, bands={"child": members}, interval="spread")

    vertices = fig.axes[0].collections[0].get_paths()[0].vertices
    for x, centre, width in zip(distance.values, mean, spread):
        at_x = vertices[np.isclose(vertices[:, 0], x), 1]
        assert at_x.min() == pytest.approx(centre - width)
        assert at_x.max() == pytest.approx(centre + width)


def test_skill_vs_distance_legend_names_band():
    distance, errors = _distance_and_errors()

    fig = skill_vs_distance(distance, errors, bands={"child": _member_errors()})

    assert _legend_texts(fig.axes[0].get_legend()) == [
        "parent",
        "child",
        "pattern scaling",
        "child, 20 members: 5-95th percentile",
    ]


def test_skill_vs_distance_band_alone_gets_median_line():
    distance, errors = _distance_and_errors()
    members = _member_errors()

    fig = skill_vs_distance(distance, errors, bands={"child_ensemble": members})

    (ax,) = fig.axes
    assert len(ax.lines) == 4
    ensemble = ax.lines[3]
    assert ensemble.get_linestyle() == "--"
    order = np.argsort(distance.values)
    np.testing.assert_allclose(ensemble.get_ydata(), np.median(members.values, axis=0)[order])


def test_skill_vs_distance_rejects_one_member_band():
    distance, errors = _distance_and_errors()
    band = _member_errors(n_members=1)

    with pytest.raises(DataError, match=r"bands\['child'\] has 1 member"):
        skill_vs_distance(distance, errors, bands={"child": band})


def test_skill_vs_distance_rejects_band_without_member():
    distance, errors = _distance_and_errors()

    with pytest.raises(DataError, match=r"bands\['child'\] must be a DataArray with dims \('member', 'year'\)"):
        skill_vs_distance(distance, errors, bands={"child": errors["child"]})


def test_skill_vs_distance_draws_on_given_axes():
    distance, errors = _distance_and_errors()
    figure = Figure()
    ax = figure.subplots()

    fig = skill_vs_distance(distance, errors, ax=ax)

    assert fig is figure
    assert len(ax.lines) == 3


# --------------------------------------------------------------------------- #
# anomaly_vs_predictor
# --------------------------------------------------------------------------- #


def test_anomaly_panels_pick_largest_variance():
    anomalies = _linear_anomalies()

    fig = anomaly_vs_predictor(anomalies, n_parameters=3)

    assert len(fig.axes) == 3
    titles = [ax.get_title().splitlines()[0] for ax in fig.axes]
    # Parameters 7, 6 and 5: the second bias element, the first, and weight element [1, 2].
    assert titles == ["layers.0.bias[1]", "layers.0.bias[0]", "layers.0.weight[1, 2]"]


def test_anomaly_panels_title_give_variance():
    anomalies = _linear_anomalies()
    variance = anomalies.isel(parameter=7).var("subset", ddof=1)

    fig = anomaly_vs_predictor(anomalies, n_parameters=1)

    assert fig.axes[0].get_title().splitlines()[1] == f"variance across subsets {float(variance):.3g}"


def test_anomaly_members_rank_by_signal_to_noise():
    rng = np.random.default_rng(1)
    forcing = np.linspace(0.5, 2.0, 6)
    # (member, subset, parameter): weak trends under member noise of 0.05.
    values = 0.01 * forcing[None, :, None] + rng.normal(scale=0.05, size=(3, 6, 8))
    # Parameter 2 varies most between subsets, but its members scatter as much.
    # Parameter 4 varies less, with tiny member noise, so it leads on signal-to-noise.
    values[:, :, 2] = forcing * 0.5 + rng.normal(scale=0.5, size=(3, 6))
    values[:, :, 4] = forcing * 0.1 + rng.normal(scale=1e-4, size=(3, 6))
    anomalies = _anomalies(values, forcing)
    assert int(np.argmax(anomalies.mean("member").var("subset").values)) == 2

    fig = anomaly_vs_predictor(anomalies, n_parameters=2)

    first = fig.axes[0].get_title()
    assert first.splitlines()[0] == "layers.0.weight[1, 1]"
    assert "signal-to-noise ratio" in first


def test_anomaly_members_drawn_with_error_bars():
    rng = np.random.default_rng(2)
    forcing = np.linspace(0.5, 2.0, 6)
    values = forcing[None, :, None] * np.arange(8)[None, None, :] + rng.normal(scale=0.1, size=(4, 6, 8))
    anomalies = _anomalies(values, forcing)
    member_mean = values.mean(axis=0)
    member_std = values.std(axis=0, ddof=1)

    fig = anomaly_vs_predictor(anomalies, n_parameters=2)

    ax = fig.axes[0]
    (container,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    parameter = int(ax.get_title().split("[")[1].split("]")[0]) + 6  # a bias element
    data_line, _, (bars,) = container
    np.testing.assert_allclose(data_line.get_ydata(), member_mean[:, parameter])
    segments = bars.get_segments()
    heights = np.array([segment[1, 1] - segment[0, 1] for segment in segments])
    np.testing.assert_allclose(heights, 2 * member_std[:, parameter])


def test_anomaly_shading_starts_at_training_maximum():
    anomalies = _linear_anomalies()
    application = np.array([2.6, 3.1, 3.4])

    fig = anomaly_vs_predictor(anomalies, n_parameters=2, application_predictor=application)

    for ax in fig.axes:
        (shade,) = [patch for patch in ax.patches if isinstance(patch, Rectangle)]
        assert shade.get_x() == pytest.approx(2.0)  # largest training forcing
        assert shade.get_x() + shade.get_width() == pytest.approx(3.4)


def test_anomaly_shading_below_training_minimum():
    anomalies = _linear_anomalies()

    fig = anomaly_vs_predictor(anomalies, n_parameters=1, application_predictor=[-0.5, 0.2])

    (shade,) = [patch for patch in fig.axes[0].patches if isinstance(patch, Rectangle)]
    assert shade.get_x() == pytest.approx(-0.5)
    assert shade.get_x() + shade.get_width() == pytest.approx(0.5)  # smallest training forcing


def test_anomaly_no_shading_inside_training_range():
    anomalies = _linear_anomalies()

    fig = anomaly_vs_predictor(anomalies, n_parameters=1, application_predictor=[1.0, 1.5])

    assert [patch for patch in fig.axes[0].patches if isinstance(patch, Rectangle)] == []


def test_anomaly_regressor_line_spans_application():
    anomalies = _linear_anomalies()
    forcing = anomalies["forcing"].values
    regressor = LinearRegression().fit(forcing[:, None], anomalies.values)

    fig = anomaly_vs_predictor(anomalies, n_parameters=1, regressor=regressor, application_predictor=[3.0, 4.0])

    ax = fig.axes[0]
    (line,) = [line for line in ax.lines if line.get_label() == "weight regressor"]
    x = line.get_xdata()
    assert x.min() == pytest.approx(forcing.min())
    assert x.max() == pytest.approx(4.0)
    np.testing.assert_allclose(line.get_ydata(), regressor.predict(x[:, None])[:, 7])


def test_anomaly_default_line_is_least_squares():
    anomalies = _linear_anomalies()
    forcing = anomalies["forcing"].values
    slope, intercept = np.polyfit(forcing, anomalies.values[:, 7], 1)

    fig = anomaly_vs_predictor(anomalies, n_parameters=1)

    (line,) = [line for line in fig.axes[0].lines if line.get_label() == "least-squares line"]
    np.testing.assert_allclose(line.get_ydata(), intercept + slope * line.get_xdata())


def test_anomaly_uses_predict_anomaly():
    anomalies = _linear_anomalies()

    class Update:
        """Stands in for a fitted ConditionalUpdate: anomaly 5 times the predictor, for every parameter."""

        def predict_anomaly(self, predictors):
            return np.repeat(5.0 * predictors, 8, axis=1)

    fig = anomaly_vs_predictor(anomalies, n_parameters=1, regressor=Update())

    (line,) = [line for line in fig.axes[0].lines if line.get_label() == "weight regressor"]
    np.testing.assert_allclose(line.get_ydata(), 5.0 * line.get_xdata())


def test_anomaly_hides_regressor_extrapolation_warning():
    anomalies = _linear_anomalies()

    class WarningUpdate:
        def predict_anomaly(self, predictors):
            warnings.warn("outside the training range", ExtrapolationWarning, stacklevel=2)
            return np.zeros((len(predictors), 8))

    fig = anomaly_vs_predictor(anomalies, n_parameters=1, regressor=WarningUpdate(), application_predictor=[3.0])

    assert len(fig.axes) == 1


def test_anomaly_rejects_regressor_of_fewer_parameters():
    anomalies = _linear_anomalies()
    forcing = anomalies["forcing"].values
    regressor = LinearRegression().fit(forcing[:, None], anomalies.values[:, :5])

    with pytest.raises(DataError, match="regressor predicts 5 parameters but the anomalies have 8"):
        anomaly_vs_predictor(anomalies, regressor=regressor)


def test_anomaly_rejects_unknown_predictor():
    with pytest.raises(DataError, match=r"predictor='depth' is not a predictor of the anomalies, which have \['forcing'\]"):
        anomaly_vs_predictor(_linear_anomalies(), predictor="depth")


def test_anomaly_axis_labels_from_predictor():
    fig = anomaly_vs_predictor(_linear_anomalies(), n_parameters=1)

    assert fig.axes[0].get_xlabel() == "radiative forcing [W m-2]"
    assert fig.axes[0].get_ylabel() == "anomaly (fine-tuned minus parent)"


def test_anomaly_draws_on_given_axes():
    figure = Figure()
    axes = figure.subplots(1, 2)

    fig = anomaly_vs_predictor(_linear_anomalies(), n_parameters=2, ax=axes)

    assert fig is figure
    assert all(len(ax.lines) >= 2 for ax in axes)


# --------------------------------------------------------------------------- #
# time_series
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(("calendar", "days_per_year", "july_first"), [("360_day", 360, 180), ("noleap", 365, 181)])
def test_time_series_axis_on_calendar(calendar, days_per_year, july_first):
    truth = _field(calendar)

    fig = time_series(truth, {"child": truth + 0.5})

    ax = fig.axes[0]
    assert ax.get_xlabel() == f"year ({calendar} calendar)"
    expected = np.arange(2070, 2076) + july_first / days_per_year
    np.testing.assert_allclose(ax.lines[0].get_xdata(), expected)


@pytest.mark.parametrize("calendar", ["360_day", "noleap"])
def test_time_series_ticks_are_data_years(calendar):
    truth = _field(calendar)

    fig = time_series(truth, {"child": truth})
    fig.canvas.draw()

    ax = fig.axes[0]
    left, right = ax.get_xlim()
    assert 2069.0 < left <= 2070.5
    assert 2075.5 <= right < 2077.0
    ticks = [tick for tick in ax.get_xticks() if left <= tick <= right]
    assert ticks
    assert all(float(tick).is_integer() and 2070 <= tick <= 2076 for tick in ticks)
    labels = [label.get_text() for label in ax.get_xticklabels() if label.get_text()]
    assert set(labels) <= {str(year) for year in range(2070, 2077)}


def test_time_series_standard_calendar_datetimes():
    truth = _field().assign_coords(time=np.array([f"{year}-07-02" for year in YEARS], dtype="datetime64[ns]"))

    fig = time_series(truth, {"child": truth})

    ax = fig.axes[0]
    assert ax.get_xlabel() == "year (proleptic_gregorian calendar)"
    # Before 2 July, 182 days have passed in a common year and 183 in a leap year (2072).
    leap = YEARS % 4 == 0
    elapsed = np.where(leap, 183, 182)
    days = np.where(leap, 366, 365)
    np.testing.assert_allclose(ax.lines[0].get_xdata(), YEARS + elapsed / days)


def test_time_series_area_weighted_means():
    truth = _field()
    child = truth + xr.DataArray([1.0, 2.0, 3.0], dims="latitude", coords={"latitude": LATITUDE})
    weights = np.cos(np.deg2rad(LATITUDE))
    expected_offset = np.sum(weights * [1.0, 2.0, 3.0]) / np.sum(weights)

    fig = time_series(truth, {"child": child})

    truth_line, child_line = fig.axes[0].lines
    expected_truth = (truth * xr.DataArray(weights, dims="latitude")).sum(("latitude", "longitude")) / (
        3 * weights.sum()
    )
    np.testing.assert_allclose(truth_line.get_ydata(), expected_truth.values)
    np.testing.assert_allclose(child_line.get_ydata() - truth_line.get_ydata(), expected_offset)


def test_time_series_skips_cells_missing_in_truth():
    truth = _field()
    truth[:, 0, 0] = np.nan
    child = truth.fillna(1000.0)

    fig = time_series(truth, {"child": child})

    truth_line, child_line = fig.axes[0].lines
    np.testing.assert_allclose(child_line.get_ydata(), truth_line.get_ydata())


def test_time_series_labels_and_legend():
    truth = _field()
    predictions = {"parent": truth - 2.0, "child": truth - 0.5, "pattern_scaling": truth + 0.1}

    fig = time_series(truth, predictions)

    ax = fig.axes[0]
    assert ax.get_ylabel() == "area mean air temperature [K]"
    assert ax.get_title() == "Area-weighted mean air temperature along time"
    assert [line.get_label() for line in ax.lines] == ["truth", "parent", "child", "pattern scaling"]
    assert _legend_texts(fig.legends[0]) == ["truth", "parent", "child", "pattern scaling"]


def test_time_series_y_range_covers_data():
    truth = _field()

    fig = time_series(truth, {"parent": truth - 3.0})

    bottom, top = fig.axes[0].get_ylim()
    assert bottom <= float((truth - 3.0).weighted(np.cos(np.deg2rad(truth.latitude))).mean(("latitude", "longitude")).min())
    assert top >= float(truth.weighted(np.cos(np.deg2rad(truth.latitude))).mean(("latitude", "longitude")).max())


def test_time_series_ensemble_band():
    truth = _field()
    offsets = xr.DataArray(np.linspace(-1.0, 1.0, 11), dims="member")
    ensemble = truth + offsets

    fig = time_series(truth, {"child_ensemble": ensemble})

    ax = fig.axes[0]
    truth_line, mean_line = ax.lines
    np.testing.assert_allclose(mean_line.get_ydata(), truth_line.get_ydata())
    (band,) = ax.collections
    vertices = band.get_paths()[0].vertices
    at_first = vertices[np.isclose(vertices[:, 0], truth_line.get_xdata()[0]), 1]
    assert at_first.max() - at_first.min() == pytest.approx(2 * 0.9)  # 5th to 95th percentile of -1 .. 1


def test_time_series_given_axes_keep_legend_on_axes():
    truth = _field()
    figure = Figure()
    ax = figure.subplots()

    fig = time_series(truth, {"child": truth}, ax=ax)

    assert fig is figure
    assert _legend_texts(ax.get_legend()) == ["truth", "child"]


def test_time_series_rejects_missing_dim():
    truth = _field().rename(time="year")

    with pytest.raises(DataError, match="truth must be a DataArray with dim 'time'"):
        time_series(truth, {"child": truth})


def test_time_series_rejects_other_coordinates():
    truth = _field()
    child = _field().assign_coords(latitude=LATITUDE + 1.0)

    with pytest.raises(DataError, match=r"predictions\['child'\] and truth have different coordinates"):
        time_series(truth, {"child": child})


# --------------------------------------------------------------------------- #
# loss_curves
# --------------------------------------------------------------------------- #


def test_loss_curves_line_count():
    fig = loss_curves(_history(n_subsets=3))

    # Parent training and validation, two per subset, and the start marker.
    assert len(fig.axes[0].lines) == 2 + 2 * 3 + 1


def test_loss_curves_log_scale_and_styles():
    fig = loss_curves(_history(n_subsets=2))

    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    parent_train, parent_val, finetune_train, finetune_val = ax.lines[:4]
    assert parent_train.get_linewidth() > 2 * finetune_train.get_linewidth()
    assert parent_train.get_linestyle() == "-"
    assert parent_val.get_linestyle() == "--"
    assert finetune_val.get_linestyle() == "--"


def test_loss_curves_finetune_starts_at_kept_epoch():
    history = _history(n_subsets=1)
    # Lowest parent validation loss at epoch 4 (1-based).
    fig = loss_curves(history)

    ax = fig.axes[0]
    np.testing.assert_allclose(ax.lines[2].get_xdata(), [5, 6, 7])
    assert ax.lines[-1].get_xdata()[0] == 4


def test_loss_curves_legend_entries():
    fig = loss_curves(_history(n_subsets=4))

    assert _legend_texts(fig.axes[0].get_legend()) == [
        "parent, training",
        "parent, validation",
        "fine-tuning, training",
        "fine-tuning, validation",
        "parent weights kept (epoch 4)",
    ]
    assert "4 subsets" in fig.axes[0].get_xlabel()


def test_loss_curves_counts_members():
    history = _history(n_subsets=2)
    history["finetune"] = {
        f"{label}/member {m}": curves for label, curves in history["finetune"].items() for m in range(3)
    }

    fig = loss_curves(history)

    assert "2 subsets x 3 members" in fig.axes[0].get_xlabel()


def test_loss_curves_skip_copied_validation():
    fig = loss_curves(_history(n_subsets=2, validation=False))

    ax = fig.axes[0]
    assert len(ax.lines) == 1 + 2 + 1
    assert all(line.get_linestyle() != "--" for line in ax.lines)


def test_loss_curves_reject_missing_parent():
    with pytest.raises(ValueError, match="history must be a mapping with the key 'parent'"):
        loss_curves({"finetune": {}})


# --------------------------------------------------------------------------- #
# A finished tiny run, redrawn
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, temperature_dataset, write_netcdf, run_config):
    """A tiny run on a 40-year 360_day field, written to a folder."""
    folder = tmp_path_factory.mktemp("run")
    path = write_netcdf(temperature_dataset(), folder / "air_temperature.nc")
    run(parse_config(run_config([path])), out_dir=folder / "out")
    return folder / "out"


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory, temperature_dataset, write_netcdf, run_config):
    """The tiny run with 2 fine-tuning members per subset and a member ensemble."""
    folder = tmp_path_factory.mktemp("ensemble")
    path = write_netcdf(temperature_dataset(), folder / "air_temperature.nc")
    raw = run_config([path])
    raw["update"] = {"members": 2, "ensemble": "members"}
    run(parse_config(raw), out_dir=folder / "out")
    return folder / "out"


@pytest.fixture
def no_training(monkeypatch):
    """Make every route to the training loop raise, so a test fails if it trains."""

    def fail_training(*args, **kwargs):
        raise RuntimeError("train() was called while redrawing figures")

    monkeypatch.setattr(condupdate.emulators.training, "train", fail_training)
    monkeypatch.setattr(condupdate.emulators, "train", fail_training)
    monkeypatch.setattr(condupdate.update.conditional, "train", fail_training)
    monkeypatch.setattr(condupdate.jobs.distributed, "train", fail_training)
    monkeypatch.setattr(condupdate.jobs.run, "train_stream", fail_training)
    monkeypatch.setattr(condupdate.jobs.run, "run", fail_training)


def test_redraw_writes_every_figure(finished_run, tmp_path, no_training):
    paths = redraw(finished_run, out=tmp_path / "figures")

    assert [path.name for path in paths] == RUN_FIGURES
    for path in paths:
        assert path.parent == tmp_path / "figures"
        assert path.stat().st_size > 0
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_redraw_defaults_to_run_folder(finished_run, tmp_path, no_training):
    copy = shutil.copytree(finished_run, tmp_path / "run")
    (copy / "error_maps.png").unlink()

    paths = redraw(copy)

    assert {path.parent for path in paths} == {copy}
    assert (copy / "error_maps.png").stat().st_size > 0
    assert not [name for name in copy.iterdir() if name.suffix == ".tmp"]


@pytest.mark.parametrize(
    "name", ["config.yaml", "predictions.nc", "anomalies.nc", "training_history.json", "skill.csv"]
)
def test_redraw_names_missing_file(finished_run, tmp_path, name):
    copy = shutil.copytree(finished_run, tmp_path / "run")
    (copy / name).unlink()

    with pytest.raises(FileNotFoundError, match=f"{name} not found, so .* is not a finished condupdate run"):
        redraw(copy, out=tmp_path / "figures")


def test_redraw_rejects_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="Run folder .*missing.* not found"):
        redraw(tmp_path / "missing")


def test_redraw_without_model_draws_least_squares(finished_run, tmp_path):
    copy = shutil.copytree(finished_run, tmp_path / "run")
    shutil.rmtree(copy / "model")

    outputs = load_outputs(copy)
    paths = redraw(copy, out=tmp_path / "figures")

    assert outputs.update is None
    assert len(paths) == len(RUN_FIGURES)


def test_outputs_prefer_saved_application_predictor(finished_run):
    outputs = load_outputs(finished_run)
    values = xr.DataArray([[300.0, 301.5]], dims=("predictor", "time"), coords={"predictor": ["domain_mean_temperature"]})
    outputs.predictions["application_predictor"] = values.assign_coords(time=outputs.predictions.time[:2])

    fig = anomaly_vs_predictor(outputs.anomalies, n_parameters=1, application_predictor=outputs.application_predictor())

    # Assigning into the dataset fills the other time steps with NaN.
    np.testing.assert_allclose(outputs.application_predictor().dropna("time").values, [300.0, 301.5])
    (shade,) = [patch for patch in fig.axes[0].patches if isinstance(patch, Rectangle)]
    assert shade.get_x() == pytest.approx(float(outputs.anomalies["domain_mean_temperature"].max()))
    assert shade.get_x() + shade.get_width() == pytest.approx(301.5)


def test_outputs_application_range_from_attr(finished_run):
    outputs = load_outputs(finished_run)
    # Runs that saved no application_predictor variable fall back to the range attr.
    outputs.predictions = outputs.predictions.drop_vars("application_predictor")
    text = outputs.predictions.extrapolation_distance.attrs["application_predictor_range"]
    low, high = (float(part) for part in text.split(".."))

    np.testing.assert_allclose(outputs.application_predictor(), [low, high])


def test_outputs_application_predictor_saved(finished_run):
    outputs = load_outputs(finished_run)
    saved = outputs.predictions.application_predictor

    assert saved.dims[0] == "predictor"
    np.testing.assert_allclose(float(outputs.application_predictor().max()), float(saved.max()))


def test_load_outputs_reads_skill_table(finished_run):
    outputs = load_outputs(finished_run)

    assert outputs.targets == ["air_temperature"]
    assert list(outputs.skill["air_temperature"]) == ["parent", "child", "pattern_scaling"]
    assert set(outputs.methods("air_temperature")) == {"parent", "child", "pattern_scaling"}


def test_summary_has_expected_panels(finished_run, no_training):
    fig = summary(finished_run)

    titles = [ax.get_title() or ax.get_title(loc="left") for ax in fig.axes]
    assert titles[0] == "Skill on the application selection"
    assert titles[1] == "RMSE per time step applied"
    assert titles[2] == "Training and fine-tuning loss"
    assert titles[3] == "Area-weighted mean air temperature along time"
    assert titles[4].startswith("parent: mean absolute error")
    assert titles[5].startswith("child: mean absolute error")
    map_panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and any(isinstance(c, QuadMesh) for c in ax.collections)]
    assert len(map_panels) == 3
    # Skill text, distance, loss, series, three maps and two colorbars.
    assert len(fig.axes) == 9
    assert fig.get_suptitle().startswith("Run 'tiny': air_temperature")


def test_summary_text_gives_skill(finished_run):
    outputs = load_outputs(finished_run)
    child = outputs.skill["air_temperature"]["child"]

    fig = summary(outputs)

    (text,) = fig.axes[0].texts
    row = next(line for line in text.get_text().splitlines() if line.startswith("child "))
    assert row.split()[1:] == [f"{child['rmse']:.3f}", f"{child['mae']:.3f}", f"{child['bias']:.3f}"]


def test_summary_distance_panel_matches_run(finished_run):
    outputs = load_outputs(finished_run)
    distance = outputs.predictions.extrapolation_distance

    fig = summary(outputs)

    ax = fig.axes[1]
    assert [line.get_label() for line in ax.lines] == ["parent", "child", "pattern scaling"]
    np.testing.assert_allclose(np.sort(ax.lines[0].get_xdata()), np.sort(distance.values))


def test_summary_ensemble_band(ensemble_run):
    fig = summary(ensemble_run)

    distance_ax = fig.axes[1]
    assert "child ensemble" in [line.get_label() for line in distance_ax.lines]
    assert len(distance_ax.collections) == 1
    assert "child ensemble, 2 members: 5-95th percentile" in _legend_texts(distance_ax.get_legend())


def test_ensemble_anomalies_ranked_by_signal_to_noise(ensemble_run, tmp_path, no_training):
    outputs = load_outputs(ensemble_run)

    fig = anomaly_vs_predictor(outputs.anomalies, regressor=outputs.update)
    paths = redraw(ensemble_run, out=tmp_path / "figures")

    assert "signal-to-noise ratio" in fig.axes[0].get_title()
    assert len(paths) == len(RUN_FIGURES)


def test_cli_plot_prints_paths(finished_run, tmp_path, capsys, no_training):
    status = main(["plot", str(finished_run), "--out", str(tmp_path / "figures")])

    printed = capsys.readouterr().out.splitlines()
    assert status == 0
    assert printed == [str(tmp_path / "figures" / name) for name in RUN_FIGURES]
    for name in RUN_FIGURES:
        assert (tmp_path / "figures" / name).stat().st_size > 0


def test_cli_plot_reports_missing_file(finished_run, tmp_path, capsys):
    copy = shutil.copytree(finished_run, tmp_path / "run")
    (copy / "predictions.nc").unlink()

    status = main(["plot", str(copy)])

    assert status == 2
    assert "predictions.nc not found" in capsys.readouterr().err
