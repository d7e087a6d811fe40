"""Tests of condupdate.data: opening files lazily, selection, stacking and normalisation."""

from __future__ import annotations

import json
import re
import warnings

import cftime
import dask.array
import numpy as np
import pytest
import xarray as xr
from sklearn.exceptions import NotFittedError

from condupdate._errors import DataError
from condupdate.data import (
    Normalizer,
    decimal_year,
    open_dataset,
    select,
    stack_samples,
    unstack_samples,
    valid_samples,
)

SAMPLE_DIMS = ["time", "latitude", "longitude"]


def _with_domain_mean(ds: xr.Dataset) -> xr.Dataset:
    # A (time,) variable next to the (time, latitude, longitude) field, as the
    # pipeline's domain-mean input is.
    domain_mean = ds.air_temperature.mean(["latitude", "longitude"], skipna=True)
    return ds.assign(domain_mean=domain_mean)


# --------------------------------------------------------------------------- #
# open_dataset
# --------------------------------------------------------------------------- #


def test_open_dataset_is_dask_backed(temperature_file):
    ds = open_dataset(temperature_file)

    assert isinstance(ds.air_temperature.data, dask.array.Array)


def test_open_dataset_keeps_360_day_calendar(temperature_file):
    ds = open_dataset(temperature_file)

    first = ds.time.values[0]
    assert isinstance(first, cftime.Datetime360Day)
    assert first.calendar == "360_day"
    assert (first.year, first.month, first.day) == (1860, 7, 1)


def test_open_dataset_reads_values_unchanged(temperature_dataset, temperature_file):
    expected = temperature_dataset()

    ds = open_dataset(temperature_file)

    np.testing.assert_array_equal(ds.air_temperature.values, expected.air_temperature.values)
    np.testing.assert_array_equal(ds.latitude.values, expected.latitude.values)
    assert ds.air_temperature.attrs["units"] == "K"


def test_open_dataset_combines_several_files(temperature_dataset, write_netcdf, tmp_path):
    expected = temperature_dataset()
    early = write_netcdf(expected.isel(time=slice(0, 25)), tmp_path / "early.nc")
    late = write_netcdf(expected.isel(time=slice(25, None)), tmp_path / "late.nc")

    # Files given out of time order are still combined in time order.
    ds = open_dataset([late, early])

    assert ds.sizes["time"] == 40
    assert isinstance(ds.air_temperature.data, dask.array.Array)
    assert isinstance(ds.time.values[0], cftime.Datetime360Day)
    assert [t.year for t in ds.time.values] == list(range(1860, 1900))
    np.testing.assert_array_equal(ds.air_temperature.values, expected.air_temperature.values)


# zarr 3 warns that consolidated metadata is not in the version 3 specification.
@pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")
@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("store_name", ["field.zarr", "field_store"])
def test_open_dataset_reads_zarr_store(temperature_dataset, tmp_path, store_name, zarr_format):
    expected = temperature_dataset()
    store = tmp_path / store_name
    expected.to_zarr(store, consolidated=True, zarr_format=zarr_format)

    ds = open_dataset(store)

    assert isinstance(ds.air_temperature.data, dask.array.Array)
    assert isinstance(ds.time.values[0], cftime.Datetime360Day)
    np.testing.assert_array_equal(ds.air_temperature.values, expected.air_temperature.values)


def test_open_dataset_missing_path_raises(tmp_path, temperature_file):
    missing = tmp_path / "absent.nc"

    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        open_dataset([temperature_file, missing])


def test_open_dataset_corrupt_file_raises(tmp_path):
    corrupt = tmp_path / "corrupt.nc"
    corrupt.write_bytes(np.random.default_rng(0).bytes(2048))

    with pytest.raises(DataError, match=re.escape(str(corrupt))):
        open_dataset(corrupt)


def test_open_dataset_empty_list_raises():
    with pytest.raises(DataError, match="No input files"):
        open_dataset([])


# --------------------------------------------------------------------------- #
# select
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("selection", [("1870", "1879"), slice("1870", "1879")])
def test_select_partial_dates_on_cftime(temperature_file, selection):
    ds = open_dataset(temperature_file)

    selected = select(ds, "time", selection)

    years = [t.year for t in selected.time.values]
    assert years == list(range(1870, 1880))
    assert isinstance(selected.time.values[0], cftime.Datetime360Day)


def test_select_month_range_on_cftime(temperature_file):
    ds = open_dataset(temperature_file)

    selected = select(ds, "time", ("1870-06", "1871-06"))

    assert [t.year for t in selected.time.values] == [1870]


def test_select_descending_latitude_range(temperature_dataset):
    ds = temperature_dataset(descending_latitude=True)

    selected = select(ds, "latitude", (-40.0, 40.0))

    # The order of the coordinate is kept, so latitude still runs north to south.
    np.testing.assert_array_equal(selected.latitude.values, [37.5, 12.5, -12.5, -37.5])
    xr.testing.assert_identical(selected, ds.sel(latitude=slice(40.0, -40.0)))


def test_select_ascending_latitude_range(temperature_dataset):
    ds = temperature_dataset()

    selected = select(ds, "latitude", (-40.0, 40.0))

    np.testing.assert_array_equal(selected.latitude.values, [-37.5, -12.5, 12.5, 37.5])


def test_select_label_list_keeps_order(temperature_dataset):
    ds = temperature_dataset()

    selected = select(ds, "longitude", [337.5, 22.5])

    np.testing.assert_array_equal(selected.longitude.values, [337.5, 22.5])
    xr.testing.assert_identical(selected.air_temperature, ds.air_temperature.isel(longitude=[7, 0]))


def test_select_missing_label_raises(temperature_dataset):
    ds = temperature_dataset()

    with pytest.raises(DataError, match="'longitude'"):
        select(ds, "longitude", [22.5, 23.0])


@pytest.mark.parametrize("selection", [("1700", "1750"), ("1950", "1960"), ("1875-08", "1875-12")])
def test_select_empty_time_range_raises(temperature_file, selection):
    ds = open_dataset(temperature_file)

    with pytest.raises(DataError, match="along 'time' is empty"):
        select(ds, "time", selection)


def test_select_empty_latitude_range_raises(temperature_dataset):
    ds = temperature_dataset(descending_latitude=True)

    with pytest.raises(DataError, match="along 'latitude' is empty"):
        select(ds, "latitude", (70.0, 80.0))


def test_select_unknown_dim_raises(temperature_dataset):
    ds = temperature_dataset()

    with pytest.raises(DataError, match="'depth' not found"):
        select(ds, "depth", (0.0, 100.0))


# --------------------------------------------------------------------------- #
# stack_samples, unstack_samples, valid_samples
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("descending_latitude", [False, True])
def test_stack_unstack_round_trip_with_nan(temperature_dataset, descending_latitude):
    ds = _with_domain_mean(temperature_dataset(descending_latitude=descending_latitude))

    stacked = stack_samples(ds, ["air_temperature", "domain_mean"], SAMPLE_DIMS)
    unstacked = unstack_samples(stacked)

    assert stacked.dims == ("sample", "feature")
    assert stacked.sizes["sample"] == 40 * 6 * 8
    assert unstacked.dims == ("time", "latitude", "longitude", "feature")
    field = unstacked.sel(feature="air_temperature", drop=True)
    assert int(field.isnull().sum()) == int(ds.air_temperature.isnull().sum())
    xr.testing.assert_equal(field, ds.air_temperature.drop_attrs())


def test_stack_samples_column_order_and_labels(temperature_dataset):
    ds = _with_domain_mean(temperature_dataset())

    stacked = stack_samples(ds, ["domain_mean", "air_temperature", "latitude"], SAMPLE_DIMS)

    assert list(stacked.feature.values) == ["domain_mean", "air_temperature", "latitude"]
    assert list(stacked.indexes["sample"].names) == SAMPLE_DIMS
    # In C order over (time, latitude, longitude), sample 9 is time 0, latitude 1, longitude 1.
    np.testing.assert_equal(float(stacked.values[9, 1]), float(ds.air_temperature.values[0, 1, 1]))


def test_stack_samples_broadcasts_time_series(temperature_dataset):
    ds = _with_domain_mean(temperature_dataset())

    stacked = stack_samples(ds, ["domain_mean", "latitude"], SAMPLE_DIMS)

    column = stacked.sel(feature="domain_mean").values.reshape(40, 6, 8)
    expected = np.broadcast_to(ds.domain_mean.values[:, None, None], (40, 6, 8))
    np.testing.assert_array_equal(column, expected)
    latitude = stacked.sel(feature="latitude").values.reshape(40, 6, 8)
    np.testing.assert_array_equal(latitude, np.broadcast_to(ds.latitude.values[None, :, None], (40, 6, 8)))


def test_stack_samples_stays_lazy(temperature_file, compute_counter):
    ds = _with_domain_mean(open_dataset(temperature_file))

    stacked = stack_samples(ds, ["air_temperature", "domain_mean"], SAMPLE_DIMS)
    unstacked = unstack_samples(stacked)

    assert isinstance(stacked.data, dask.array.Array)
    assert isinstance(unstacked.data, dask.array.Array)
    assert compute_counter.count == 0


def test_stack_samples_unknown_dim_raises(temperature_dataset):
    ds = temperature_dataset()

    with pytest.raises(DataError, match=r"\['depth'\] not found"):
        stack_samples(ds, ["air_temperature"], ["time", "depth"])


def test_stack_samples_missing_variable_raises(temperature_dataset):
    ds = temperature_dataset()

    with pytest.raises(DataError, match="'sea_surface_temperature' not found"):
        stack_samples(ds, ["air_temperature", "sea_surface_temperature"], SAMPLE_DIMS)


def test_stack_samples_extra_variable_dim_raises(temperature_dataset):
    ds = temperature_dataset()
    ds = ds.assign(air_temperature=ds.air_temperature.expand_dims(height=[1.5, 10.0]))

    with pytest.raises(DataError, match=r"'air_temperature' has dimensions \['height'\]"):
        stack_samples(ds, ["air_temperature"], SAMPLE_DIMS)


def test_valid_samples_needs_every_column_finite(temperature_dataset, land_mask):
    ds = _with_domain_mean(temperature_dataset())
    stacked = stack_samples(ds, ["domain_mean", "air_temperature"], SAMPLE_DIMS)

    valid = valid_samples(stacked)

    expected = np.isfinite(ds.air_temperature.values).reshape(-1)
    np.testing.assert_array_equal(valid.values, expected)
    assert int((~valid).sum()) > 40 * int(land_mask().sum())


# --------------------------------------------------------------------------- #
# Normalizer
# --------------------------------------------------------------------------- #


def test_normalizer_ignores_masked_cells(temperature_dataset):
    ds = _with_domain_mean(temperature_dataset())
    stacked = stack_samples(ds, ["air_temperature", "domain_mean", "latitude"], SAMPLE_DIMS)

    norm = Normalizer().fit(stacked)

    field = ds.air_temperature.values
    assert np.isnan(field).any()
    np.testing.assert_allclose(norm.mean_[0], np.nanmean(field), rtol=1e-12)
    np.testing.assert_allclose(norm.scale_[0], np.nanstd(field), rtol=1e-12)
    np.testing.assert_allclose(norm.mean_[1], ds.domain_mean.values.mean(), rtol=1e-12)
    np.testing.assert_allclose(norm.scale_[2], ds.latitude.values.std(), rtol=1e-12)
    assert norm.names_ == ["air_temperature", "domain_mean", "latitude"]


def test_normalizer_fit_computes_dask_once(temperature_file, compute_counter):
    ds = open_dataset(temperature_file)
    stacked = stack_samples(ds, ["air_temperature"], SAMPLE_DIMS)

    norm = Normalizer().fit(stacked)

    assert compute_counter.count == 1
    np.testing.assert_allclose(norm.mean_[0], np.nanmean(ds.air_temperature.values), rtol=1e-12)


# Constants that binary floating point cannot hold exactly (280.15, 0.1) leave a
# rounding-level standard deviation, which must count as zero variance too.
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("constant", [4.0, 280.15, 0.1])
def test_normalizer_constant_column_maps_to_zero(constant, dtype):
    X = xr.DataArray(
        np.array(
            [[constant, 280.0], [constant, np.nan], [constant, 290.0], [constant, 300.0]]
            + [[constant, 285.0 + k] for k in range(6)],
            dtype=dtype,
        ),
        dims=("sample", "feature"),
        coords={"feature": ["height", "air_temperature"]},
    )

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        norm = Normalizer().fit(X)
        Z = norm.transform(X)

    assert norm.scale_[0] == 1.0
    np.testing.assert_array_equal(Z.values[:, 0], np.zeros(10))
    assert np.isnan(Z.values[1, 1])
    assert np.isfinite(np.delete(Z.values[:, 1], 1)).all()


def test_normalizer_dict_round_trip(temperature_dataset):
    ds = _with_domain_mean(temperature_dataset())
    stacked = stack_samples(ds, ["air_temperature", "domain_mean"], SAMPLE_DIMS)
    norm = Normalizer().fit(stacked)

    state = json.loads(json.dumps(norm.to_dict()))
    restored = Normalizer.from_dict(state)

    np.testing.assert_array_equal(restored.mean_, norm.mean_)
    np.testing.assert_array_equal(restored.scale_, norm.scale_)
    assert restored.names_ == norm.names_
    xr.testing.assert_identical(restored.transform(stacked), norm.transform(stacked))


def test_normalizer_transform_inverse_round_trip(temperature_dataset):
    ds = _with_domain_mean(temperature_dataset())
    stacked = stack_samples(ds, ["air_temperature", "domain_mean", "longitude"], SAMPLE_DIMS)
    norm = Normalizer().fit(stacked)

    standardised = norm.transform(stacked)
    restored = norm.inverse_transform(standardised)

    finite = np.isfinite(stacked.values)
    np.testing.assert_allclose(np.nanmean(standardised.values, axis=0), 0.0, atol=1e-10)
    np.testing.assert_allclose(np.nanstd(standardised.values, axis=0), 1.0, rtol=1e-10)
    np.testing.assert_array_equal(np.isfinite(restored.values), finite)
    np.testing.assert_allclose(restored.values[finite], stacked.values[finite], rtol=1e-12)
    np.testing.assert_allclose(norm.inverse_transform(norm.transform(stacked.values)), stacked.values, rtol=1e-12)


def test_normalizer_mismatched_labels_raise(temperature_dataset):
    ds = _with_domain_mean(temperature_dataset())
    norm = Normalizer().fit(stack_samples(ds, ["air_temperature", "domain_mean"], SAMPLE_DIMS))
    swapped = stack_samples(ds, ["domain_mean", "air_temperature"], SAMPLE_DIMS)

    with pytest.raises(ValueError, match=r"\['domain_mean', 'air_temperature'\] differ"):
        norm.transform(swapped)


def test_normalizer_wrong_column_count_raises(temperature_dataset):
    ds = _with_domain_mean(temperature_dataset())
    norm = Normalizer().fit(stack_samples(ds, ["air_temperature", "domain_mean"], SAMPLE_DIMS))

    with pytest.raises(ValueError, match=r"Expected 2 columns, got array of shape \(5, 3\)"):
        norm.inverse_transform(np.zeros((5, 3)))


def test_normalizer_unfitted_raises():
    with pytest.raises(NotFittedError, match="not fitted"):
        Normalizer().transform(np.zeros((2, 1)))


# --------------------------------------------------------------------------- #
# decimal_year
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("calendar", "month", "day", "expected"),
    [
        # 360_day: 1 April is day 91 of 360.
        ("360_day", 4, 1, 1860 + 90 / 360),
        # noleap: 1 July is day 182 of 365.
        ("noleap", 7, 1, 1860 + 181 / 365),
        # standard: 1860 is a leap year, so 1 July is day 183 of 366.
        ("standard", 7, 1, 1860 + 182 / 366),
        ("noleap", 1, 1, 1860.0),
    ],
)
def test_decimal_year_in_own_calendar(calendar, month, day, expected):
    time = xr.DataArray(
        [cftime.datetime(1860, month, day, calendar=calendar)], dims="time", name="time"
    )

    years = decimal_year(time)

    np.testing.assert_allclose(years.values, [expected], rtol=0, atol=1e-12)
    assert years.attrs["units"] == "year"


def test_decimal_year_keeps_numeric_time():
    time = xr.DataArray([0.5, 1.5], dims="time", attrs={"units": "days since 1860-01-01"})

    years = decimal_year(time)

    np.testing.assert_array_equal(years.values, [0.5, 1.5])
    assert years.attrs["units"] == "days since 1860-01-01"
