"""Tests of condupdate.data.quirks: files from many models and archives open to the right values."""

from __future__ import annotations

import logging
import re
import unicodedata

import cftime
import dask.array
import netCDF4
import numpy as np
import pytest
import xarray as xr
from xarray.coding.common import SerializationWarning
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from condupdate._errors import DataError
from condupdate.data import Normalizer, open_dataset, stack_samples, unstack_samples
from condupdate.data.io import find_variable_groups, list_groups
from condupdate.data.quirks import check_variable_name, normalize_longitude, normalize_names, standardize_coordinates


def _write_time_file(path, units, calendar=None, times=(0.0, 1.0, 2.0), values=None, time_name="time"):
    # netCDF4 directly, so the file contains exactly these attributes.
    values = np.arange(len(times), dtype="f4") if values is None else np.asarray(values, dtype="f4")
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension(time_name, len(times))
        time = nc.createVariable(time_name, "f8", (time_name,))
        time.units = units
        if calendar is not None:
            time.calendar = calendar
        time[:] = np.asarray(times, dtype="f8")
        field = nc.createVariable("tas", "f4", (time_name,))
        field[:] = values
    return path


def _grid_dataset(lat, lon, seed=0, dtype="f8"):
    rng = np.random.default_rng(seed)
    return xr.Dataset(
        {"tas": (("time", "lat", "lon"), rng.standard_normal((2, len(lat), len(lon))))},
        coords={
            "time": ("time", [0.0, 1.0], {"units": "days since 2000-01-01", "calendar": "noleap"}),
            "lat": ("lat", np.asarray(lat, dtype=dtype), {"units": "degrees_north"}),
            "lon": ("lon", np.asarray(lon, dtype=dtype), {"units": "degrees_east"}),
        },
    )


# --------------------------------------------------------------------------- #
# Time
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "calendar",
    ["standard", "gregorian", "proleptic_gregorian", "noleap", "365_day", "all_leap", "366_day", "360_day", "julian"],
)
def test_every_cf_calendar_decodes_to_cftime(tmp_path, calendar):
    path = _write_time_file(tmp_path / "t.nc", "days since 2000-01-01", calendar)

    ds = open_dataset(path)

    first = ds.time.values[0]
    assert isinstance(first, cftime.datetime)
    assert (first.year, first.month, first.day) == (2000, 1, 1)
    assert ds.time.values[2].day == 3


def test_months_since_on_360_day_decodes(tmp_path):
    path = _write_time_file(tmp_path / "t.nc", "months since 2000-01-01", "360_day")

    ds = open_dataset(path)

    assert [(t.year, t.month, t.day) for t in ds.time.values] == [(2000, 1, 1), (2000, 2, 1), (2000, 3, 1)]
    assert ds.time.values[0].calendar == "360_day"


@pytest.mark.parametrize("calendar", ["noleap", "standard"])
def test_months_since_on_other_calendars_raises(tmp_path, calendar):
    path = _write_time_file(tmp_path / "t.nc", "months since 2000-01-01", calendar)

    with pytest.raises(DataError, match=rf"t\.nc'.*'months since' is ambiguous on the '{calendar}' calendar"):
        open_dataset(path)


def test_year_zero_reference_raises_with_fix(tmp_path):
    path = _write_time_file(tmp_path / "ferret.nc", "hours since 0000-01-01 00:00:00", "standard")

    with pytest.raises(DataError, match=r"ferret\.nc.*decode_times=False"):
        open_dataset(path)


def test_year_zero_reference_opens_undecoded(tmp_path):
    path = _write_time_file(tmp_path / "ferret.nc", "hours since 0000-01-01 00:00:00", "standard")

    ds = open_dataset(path, decode_times=False)

    np.testing.assert_array_equal(ds.time.values, [0.0, 1.0, 2.0])
    assert ds.time.attrs["units"] == "hours since 0000-01-01 00:00:00"


def test_time_units_without_reference_raises(tmp_path):
    path = _write_time_file(tmp_path / "t.nc", "days", "noleap")

    with pytest.raises(DataError, match=r"'time' in '.*t\.nc' has units 'days' without a reference date"):
        open_dataset(path)


def test_identical_duplicate_times_dropped(tmp_path, caplog):
    path = _write_time_file(tmp_path / "t.nc", "days since 2000-01-01", "noleap", [0, 1, 1, 2, 2], [5, 6, 6, 7, 7])

    with caplog.at_level(logging.WARNING, logger="condupdate.data.quirks"):
        ds = open_dataset(path)

    assert [t.day for t in ds.time.values] == [1, 2, 3]
    np.testing.assert_array_equal(ds.tas.values, [5, 6, 7])
    assert "Dropped 2 repeated 'time' labels" in caplog.text


def test_conflicting_duplicate_times_raise(tmp_path):
    path = _write_time_file(tmp_path / "t.nc", "days since 2000-01-01", "noleap", [0, 1, 1], [5, 6, 9])

    with pytest.raises(DataError, match=r"Time stamp 2000-01-02 00:00:00 appears 2 times in '.*t\.nc' with different values of 'tas'"):
        open_dataset(path)


def test_overlapping_files_drop_identical_times(tmp_path, caplog):
    early = _write_time_file(tmp_path / "early.nc", "days since 2000-01-01", "noleap", [0, 1, 2], [5, 6, 7])
    late = _write_time_file(tmp_path / "late.nc", "days since 2000-01-01", "noleap", [2, 3], [7, 8])

    with caplog.at_level(logging.WARNING, logger="condupdate.data.quirks"):
        ds = open_dataset([late, early])

    assert [t.day for t in ds.time.values] == [1, 2, 3, 4]
    np.testing.assert_array_equal(ds.tas.values, [5, 6, 7, 8])
    assert "Dropped 1 repeated 'time' labels" in caplog.text


def test_overlapping_files_conflicting_times_raise(tmp_path):
    early = _write_time_file(tmp_path / "early.nc", "days since 2000-01-01", "noleap", [0, 1, 2], [5, 6, 7])
    late = _write_time_file(tmp_path / "late.nc", "days since 2000-01-01", "noleap", [2, 3], [9, 8])

    with pytest.raises(DataError, match=r"Time stamp 2000-01-03 00:00:00 appears 2 times in .*late\.nc.* values of 'tas'"):
        open_dataset([early, late])


def test_files_overlapping_inside_drop_identical_times(tmp_path):
    early = _write_time_file(tmp_path / "early.nc", "days since 2000-01-01", "noleap", [0, 1, 2, 3], [5, 6, 7, 8])
    late = _write_time_file(tmp_path / "late.nc", "days since 2000-01-01", "noleap", [2, 3, 4], [7, 8, 9])

    ds = open_dataset([early, late])

    assert [t.day for t in ds.time.values] == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(ds.tas.values, [5, 6, 7, 8, 9])


def test_unsorted_times_sorted(tmp_path):
    path = _write_time_file(tmp_path / "t.nc", "days since 2000-01-01", "360_day", [2, 0, 1], [7, 5, 6])

    ds = open_dataset(path)

    assert [t.day for t in ds.time.values] == [1, 2, 3]
    np.testing.assert_array_equal(ds.tas.values, [5, 6, 7])


def test_open_dataset_stays_lazy_after_cleaning(tmp_path, compute_counter):
    path = _write_time_file(tmp_path / "t.nc", "days since 2000-01-01", "noleap")

    ds = open_dataset(path)

    assert isinstance(ds.tas.data, dask.array.Array)
    assert compute_counter.count == 0


# --------------------------------------------------------------------------- #
# Coordinates
# --------------------------------------------------------------------------- #


def test_descending_latitude_kept(tmp_path):
    _grid_dataset([30.0, 0.0, -30.0], [0.0, 90.0]).to_netcdf(tmp_path / "g.nc")

    ds = open_dataset(tmp_path / "g.nc")

    np.testing.assert_array_equal(ds.lat.values, [30.0, 0.0, -30.0])


@pytest.mark.parametrize(
    ("convention", "expected", "moved"),
    [
        ("0..360", [0.0, 90.0, 180.0, 270.0], {270.0: -90.0}),
        ("-180..180", [-180.0, -90.0, 0.0, 90.0], {-180.0: 180.0}),
    ],
)
def test_normalize_longitude_wraps_and_sorts(convention, expected, moved):
    ds = _grid_dataset([0.0], [-90.0, 0.0, 90.0, 180.0])

    normalized = normalize_longitude(ds, convention)

    np.testing.assert_array_equal(normalized.lon.values, expected)
    for new, old in moved.items():
        np.testing.assert_array_equal(normalized.tas.sel(lon=new).values, ds.tas.sel(lon=old).values)
    assert normalized.lon.attrs["units"] == "degrees_east"


def test_normalize_longitude_drops_identical_wrap():
    ds = _grid_dataset([0.0], [-180.0, 0.0, 180.0])
    ds["tas"][..., 2] = ds.tas[..., 0]

    normalized = normalize_longitude(ds, "-180..180")

    np.testing.assert_array_equal(normalized.lon.values, [-180.0, 0.0])


def test_normalize_longitude_conflicting_wrap_raises():
    ds = _grid_dataset([0.0], [-180.0, 0.0, 180.0])

    with pytest.raises(DataError, match=r"Coordinate 'lon' value -180\.0 appears 2 times .* values of 'tas'"):
        normalize_longitude(ds, "-180..180")


def test_normalize_longitude_unknown_convention_raises():
    ds = _grid_dataset([0.0], [0.0, 90.0])

    with pytest.raises(DataError, match=r"convention '0\.\.180' is not supported"):
        normalize_longitude(ds, "0..180")


def test_wrapped_longitude_column_dropped(tmp_path):
    ds = _grid_dataset([0.0], [0.0, 180.0, 360.0])
    ds["tas"][..., 2] = ds.tas[..., 0]
    ds.to_netcdf(tmp_path / "g.nc")

    opened = open_dataset(tmp_path / "g.nc")

    np.testing.assert_array_equal(opened.lon.values, [0.0, 180.0])


def test_wrapped_longitude_column_differs_raises(tmp_path):
    _grid_dataset([0.0], [0.0, 180.0, 360.0]).to_netcdf(tmp_path / "g.nc")

    with pytest.raises(DataError, match=r"Longitudes 0\.0 and 360\.0 in '.*g\.nc' are the same meridian but 'tas' differs"):
        open_dataset(tmp_path / "g.nc")


def test_float32_coordinates_snap_to_first_file(tmp_path):
    lat = [-0.1, 0.1, 0.3]
    first = _grid_dataset(lat, [0.0, 90.0], dtype="f8")
    second = _grid_dataset(lat, [0.0, 90.0], dtype="f4", seed=1)
    second = second.assign_coords(time=("time", [2.0, 3.0], first.time.attrs))
    first.to_netcdf(tmp_path / "a.nc")
    second.to_netcdf(tmp_path / "b.nc")

    ds = open_dataset([tmp_path / "a.nc", tmp_path / "b.nc"])

    assert ds.sizes == {"time": 4, "lat": 3, "lon": 2}
    np.testing.assert_array_equal(ds.lat.values, lat)
    assert not np.isnan(ds.tas.values).any()


def test_dims_in_different_orders_align_by_name(tmp_path):
    first = _grid_dataset([0.0, 10.0], [0.0, 90.0, 180.0])
    second = _grid_dataset([0.0, 10.0], [0.0, 90.0, 180.0], seed=1)
    second = second.assign_coords(time=("time", [2.0, 3.0], first.time.attrs)).transpose("lon", "time", "lat")
    first.to_netcdf(tmp_path / "a.nc")
    second.to_netcdf(tmp_path / "b.nc")

    ds = open_dataset([tmp_path / "a.nc", tmp_path / "b.nc"])

    np.testing.assert_array_equal(ds.tas.isel(time=[2, 3]).transpose("time", "lat", "lon").values, second.tas.transpose("time", "lat", "lon").values)


def test_length_one_dims_squeezed(tmp_path, caplog):
    ds = _grid_dataset([0.0, 10.0], [0.0, 90.0]).expand_dims(height=[2.0], member=[1])
    ds.to_netcdf(tmp_path / "g.nc")

    with caplog.at_level(logging.INFO, logger="condupdate.data.quirks"):
        opened = open_dataset(tmp_path / "g.nc", keep_dims=["member"])

    assert opened.tas.dims == ("member", "time", "lat", "lon")
    assert float(opened.height) == 2.0
    assert "['height']" in caplog.text


def test_length_one_time_kept(tmp_path):
    path = _write_time_file(tmp_path / "t.nc", "days since 2000-01-01", "noleap", times=[0.0])

    ds = open_dataset(path)

    assert ds.tas.dims == ("time",)


def test_ferret_coordinates_renamed(tmp_path):
    with netCDF4.Dataset(tmp_path / "ferret.nc", "w") as nc:
        for name, size in [("TIME", 2), ("DEPTH", 1), ("YAXIS", 3), ("XAXIS", 4)]:
            nc.createDimension(name, size)
        time = nc.createVariable("TIME", "f8", ("TIME",))
        time.units, time.axis, time.calendar = "DAYS since 2000-01-01", "T", "NOLEAP"
        depth = nc.createVariable("DEPTH", "f8", ("DEPTH",))
        depth.units, depth.positive = "M", "DOWN"
        lat = nc.createVariable("YAXIS", "f8", ("YAXIS",))
        lat.units = "DEGREES_NORTH"
        lon = nc.createVariable("XAXIS", "f8", ("XAXIS",))
        lon.units, lon.axis = "degrees_E", "X"
        time[:], depth[:], lat[:], lon[:] = [0, 1], [5.0], [-10, 0, 10], [0, 90, 180, 270]
        nc.createVariable("TEMP", "f4", ("TIME", "DEPTH", "YAXIS", "XAXIS"))[:] = np.ones((2, 1, 3, 4))

    ds = open_dataset(tmp_path / "ferret.nc", keep_dims=["depth"])

    assert ds.TEMP.dims == ("time", "depth", "lat", "lon")
    assert ds.time.values[1] == cftime.DatetimeNoLeap(2000, 1, 2)


def test_standardize_coordinates_keeps_latitude_name():
    ds = _grid_dataset([0.0], [0.0]).rename(lat="latitude", lon="LONGITUDE")

    renamed = standardize_coordinates(ds)

    assert set(renamed.tas.dims) == {"time", "latitude", "longitude"}


def test_standardize_coordinates_ambiguous_left_alone():
    ds = xr.Dataset(coords={"YAXIS": ("YAXIS", [0.0], {"units": "degrees_north"}), "Y2": ("Y2", [0.0], {"units": "degrees_north"})})

    renamed = standardize_coordinates(ds)

    assert set(renamed.dims) == {"YAXIS", "Y2"}


# --------------------------------------------------------------------------- #
# Encoding
# --------------------------------------------------------------------------- #


def _write_encoded(path, dtype, values, **attrs):
    with netCDF4.Dataset(path, "w") as nc:
        nc.set_auto_maskandscale(False)
        nc.createDimension("x", len(values))
        nc.createVariable("x", "f8", ("x",))[:] = np.arange(len(values), dtype="f8")
        fill = attrs.pop("_FillValue", None)
        var = nc.createVariable("tas", dtype, ("x",), fill_value=fill)
        # Write the raw integers, so netCDF4 does not pack them again.
        var.set_auto_maskandscale(False)
        for key, value in attrs.items():
            var.setncattr(key, value)
        var[:] = np.asarray(values, dtype=dtype)
    return path


def test_fill_value_and_missing_value_both_masked(tmp_path):
    path = _write_encoded(tmp_path / "e.nc", "f4", [1.0, -999.0, 1e20, 4.0], _FillValue=np.float32(1e20), missing_value=np.float32(-999.0))

    # xarray masks every fill value and warns that it does.
    with pytest.warns(SerializationWarning, match="multiple fill values"):
        ds = open_dataset(path)

    np.testing.assert_array_equal(np.isnan(ds.tas.values), [False, True, True, False])


def test_packed_integers_decode(tmp_path):
    path = _write_encoded(tmp_path / "e.nc", "i2", [0, 100, -32767], _FillValue=np.int16(-32767), scale_factor=0.01, add_offset=273.15)

    ds = open_dataset(path)

    np.testing.assert_allclose(ds.tas.values[:2], [273.15, 274.15])
    assert np.isnan(ds.tas.values[2])


def test_unsigned_bytes_decode(tmp_path):
    path = _write_encoded(tmp_path / "e.nc", "i1", [-1, 1, -128], _Unsigned="true")

    ds = open_dataset(path)

    np.testing.assert_array_equal(ds.tas.values, [255, 1, 128])


# zarr 3 warns that consolidated metadata is not in the version 3 specification.
@pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")
def test_float16_converted_to_float32(tmp_path):
    # netCDF4 has no float16 type, but zarr stores do.
    store = tmp_path / "h.zarr"
    xr.Dataset({"tas": ("x", np.array([1.5, 2.5], dtype=np.float16))}).to_zarr(store, consolidated=True)

    ds = open_dataset(store)

    assert ds.tas.dtype == np.float32
    np.testing.assert_array_equal(ds.tas.values, [1.5, 2.5])


# --------------------------------------------------------------------------- #
# Round trips with hypothesis
# --------------------------------------------------------------------------- #


_FIELDS = hnp.arrays(
    np.float64,
    hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=5),
    elements=st.one_of(st.floats(-1e6, 1e6), st.just(np.nan)),
)


def _field_dataset(values):
    n_time, n_lat, n_lon = values.shape
    return xr.Dataset(
        {"tas": (("time", "lat", "lon"), values)},
        coords={"time": np.arange(n_time), "lat": np.linspace(80, -80, n_lat), "lon": np.arange(n_lon) * 10.0},
    )


@settings(max_examples=50, deadline=None)
@given(_FIELDS)
def test_stack_unstack_round_trip_property(values):
    ds = _field_dataset(values)

    unstacked = unstack_samples(stack_samples(ds, ["tas"], ["time", "lat", "lon"]))

    xr.testing.assert_identical(unstacked.sel(feature="tas", drop=True), ds.tas.rename(None))


@settings(max_examples=50, deadline=None)
@given(_FIELDS)
def test_normalizer_round_trip_property(values):
    stacked = stack_samples(_field_dataset(values), ["tas", "lat"], ["time", "lat", "lon"])
    norm = Normalizer().fit(stacked)

    restored = norm.inverse_transform(norm.transform(stacked))

    np.testing.assert_array_equal(np.isnan(restored.values), np.isnan(stacked.values))
    np.testing.assert_allclose(restored.values, stacked.values, rtol=1e-9, atol=1e-6)


# --------------------------------------------------------------------------- #
# Groups
# --------------------------------------------------------------------------- #


def _write_nested_groups(path):
    # time in the root group, x in /forecast, the field in /forecast/surface, which
    # inherits both dimensions; /forecast/ocean has its own x of another size.
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", 3)
        time = nc.createVariable("time", "f8", ("time",))
        time.units, time.calendar = "days since 2000-01-01", "noleap"
        time[:] = [0.0, 1.0, 2.0]
        forecast = nc.createGroup("forecast")
        forecast.createDimension("x", 2)
        forecast.createVariable("x", "f8", ("x",))[:] = [10.0, 20.0]
        surface = forecast.createGroup("surface")
        tas = surface.createVariable("tas", "f4", ("time", "x"))
        tas.units = "K"
        tas[:] = np.arange(6.0).reshape(3, 2)
        ocean = forecast.createGroup("ocean")
        ocean.createDimension("x", 4)
        ocean.createVariable("tas", "f4", ("x",))[:] = np.arange(4.0)
    return path


def test_open_group_inherits_parent_coordinates(tmp_path):
    path = _write_nested_groups(tmp_path / "g.nc")

    ds = open_dataset(path, group="forecast/surface")

    assert ds.tas.dims == ("time", "x")
    np.testing.assert_array_equal(ds.tas.values, np.arange(6.0).reshape(3, 2))
    np.testing.assert_array_equal(ds.x.values, [10.0, 20.0])
    assert ds.time.values[2] == cftime.DatetimeNoLeap(2000, 1, 3)
    assert ds.tas.attrs["units"] == "K"


@pytest.mark.parametrize("spelling", ["/forecast/surface", "forecast/surface/", "forecast/surface"])
def test_open_group_spellings_agree(tmp_path, spelling):
    path = _write_nested_groups(tmp_path / "g.nc")

    ds = open_dataset(path, group=spelling)

    np.testing.assert_array_equal(ds.tas.values, np.arange(6.0).reshape(3, 2))


def test_open_group_own_dimension_wins(tmp_path):
    # /forecast/ocean defines its own x of size 4, so /forecast's x must not attach.
    path = _write_nested_groups(tmp_path / "g.nc")

    ds = open_dataset(path, group="forecast/ocean")

    assert ds.sizes["x"] == 4
    assert "x" not in ds.coords


def test_open_missing_group_lists_groups(tmp_path):
    path = _write_nested_groups(tmp_path / "g.nc")

    with pytest.raises(DataError, match=r"Group '/analysis' not found in '.*g\.nc', which has the groups \['/', '/forecast', '/forecast/surface', '/forecast/ocean'\]"):
        open_dataset(path, group="analysis")


def test_find_variable_groups_lists_each_file(tmp_path):
    nested = _write_nested_groups(tmp_path / "g.nc")
    flat = _write_time_file(tmp_path / "t.nc", "days since 2000-01-01", "noleap")

    found = find_variable_groups([nested, flat], "tas")

    assert found == {str(nested): ["/forecast/surface", "/forecast/ocean"], str(flat): ["/"]}
    assert find_variable_groups(nested, "pr") == {}


# zarr 3 warns that consolidated metadata is not in the version 3 specification.
@pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")
def test_open_zarr_group(tmp_path):
    store = tmp_path / "g.zarr"
    field = xr.Dataset({"tas": ("time", np.arange(3.0))}, coords={"time": ("time", [0.0, 1.0, 2.0], {"units": "days since 2000-01-01", "calendar": "360_day"})})
    field.to_zarr(store, group="forecast")

    ds = open_dataset(store, group="forecast")

    np.testing.assert_array_equal(ds.tas.values, [0.0, 1.0, 2.0])
    assert ds.time.values[1] == cftime.Datetime360Day(2000, 1, 2)
    assert list_groups(store) == ["/", "/forecast"]
    assert find_variable_groups(store, "tas") == {str(store): ["/forecast"]}
    with pytest.raises(DataError, match=r"Group '/analysis' not found in '.*g\.zarr', which has the groups \['/', '/forecast'\]"):
        open_dataset(store, group="analysis")


# --------------------------------------------------------------------------- #
# Names with spaces, slashes and non-ASCII letters
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", ["air temperature", "température", "温度", "x:y", "1000hPa"])
def test_unusual_names_round_trip(tmp_path, name):
    _write_time_file(tmp_path / "t.nc", "days since 2000-01-01", "noleap")
    xr.open_dataset(tmp_path / "t.nc").load().rename(tas=name).to_netcdf(tmp_path / "n.nc")

    ds = open_dataset(tmp_path / "n.nc")

    assert list(ds.data_vars) == [name]
    np.testing.assert_array_equal(ds[name].values, [0.0, 1.0, 2.0])
    check_variable_name(name)


def test_decomposed_names_become_nfc():
    decomposed = unicodedata.normalize("NFD", "température")
    ds = xr.Dataset({decomposed: ("x", [1.0])})

    normalized = normalize_names(ds)

    assert list(normalized.data_vars) == ["température"]
    assert len(decomposed) == len("température") + 1


def test_names_equal_after_nfc_raise():
    ds = xr.Dataset({"température": ("x", [1.0]), unicodedata.normalize("NFD", "température"): ("x", [2.0])})

    with pytest.raises(DataError, match=r"differ only in their Unicode normalisation \(\['température'\]\)"):
        normalize_names(ds, "'t.nc'")


def test_netcdf4_reads_slash_as_group_path(tmp_path):
    # netCDF4-python creates the group 'air' with a variable 'temperature' for the
    # name 'air/temperature'; the netCDF library itself forbids '/' in names.
    with netCDF4.Dataset(tmp_path / "s.nc", "w") as nc:
        nc.createDimension("x", 2)
        nc.createVariable("air/temperature", "f4", ("x",))[:] = [1.0, 2.0]

    ds = open_dataset(tmp_path / "s.nc", group="air")

    assert list(ds.data_vars) == ["temperature"]
    assert find_variable_groups(tmp_path / "s.nc", "temperature") == {str(tmp_path / "s.nc"): ["/air"]}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("air/temperature", r"'air/temperature' contains '/'.*name it 'temperature' and set data.group: air"),
        ("/temperature", r"in the root group of the files, name it 'temperature'; otherwise"),
        (" tas", r"' tas' is not a valid netCDF name"),
        ("tas ", r"'tas ' is not a valid netCDF name"),
        ("-tas", r"'-tas' is not a valid netCDF name"),
        ("tas\x07", r"is not a valid netCDF name"),
    ],
)
def test_unwritable_names_raise(name, message):
    with pytest.raises(DataError, match=rf"^Target variable .*{message}"):
        check_variable_name(name, "Target variable")
