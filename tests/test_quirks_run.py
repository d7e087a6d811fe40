"""Whole runs on quirky files: variables in netCDF4 groups, names with spaces and accents, far predictors."""

from __future__ import annotations

import json
import unicodedata
import warnings

import cftime
import netCDF4
import numpy as np
import pytest
import xarray as xr

import condupdate
from condupdate._errors import DataError, ExtrapolationWarning
from condupdate.cli import _readable_warnings
from condupdate.jobs.check import EXTRAPOLATION_THRESHOLD
from condupdate.jobs.config import parse_config
from condupdate.jobs.prepare import prepare
from condupdate.jobs.redraw import load_outputs
from condupdate.jobs.run import run
from condupdate.skill import extrapolation_distance
from condupdate.update import load_anomalies

GROUP = "model/atmosphere"


def _write_grouped(ds: xr.Dataset, path, group: str = GROUP):
    # netCDF4 directly: coordinates in the root group, the field in a nested group
    # that inherits their dimensions, as some archives lay out their files.
    times = ds.time.values
    units = f"days since {times[0].year:04d}-01-01"
    with netCDF4.Dataset(path, "w") as nc:
        for name in ("time", "latitude", "longitude"):
            nc.createDimension(name, ds.sizes[name])
        time = nc.createVariable("time", "f8", ("time",))
        time.units, time.calendar = units, times[0].calendar
        time[:] = cftime.date2num(times, units, calendar=times[0].calendar)
        for name in ("latitude", "longitude"):
            coord = nc.createVariable(name, "f8", (name,))
            coord.setncatts(ds[name].attrs)
            coord[:] = ds[name].values
        holder = nc.createGroup(group.split("/")[0])
        for part in group.split("/")[1:]:
            holder = holder.createGroup(part)
        field = holder.createVariable("air_temperature", "f8", ("time", "latitude", "longitude"), fill_value=np.nan)
        field.setncatts(ds.air_temperature.attrs)
        field[:] = ds.air_temperature.values
    return path


# --------------------------------------------------------------------------- #
# Variables inside netCDF4 groups
# --------------------------------------------------------------------------- #


def test_run_on_group_matches_root_file(temperature_dataset, write_netcdf, run_config, tmp_path):
    field = temperature_dataset()
    grouped = _write_grouped(field, tmp_path / "grouped.nc")
    flat = write_netcdf(field, tmp_path / "flat.nc")
    raw = run_config([grouped])
    raw["data"]["group"] = GROUP

    in_group = run(parse_config(raw))
    at_root = run(parse_config(run_config([flat])))

    child = in_group.predictions["air_temperature"].child
    np.testing.assert_array_equal(child.values, at_root.predictions["air_temperature"].child.values)
    assert child.time.values[0].calendar == "360_day"


def test_variable_in_group_names_group_and_fix(temperature_dataset, run_config, tmp_path):
    path = _write_grouped(temperature_dataset(), tmp_path / "grouped.nc")

    with pytest.raises(DataError, match=r"'air_temperature' \(data.targets\) not found in the root group of .*grouped\.nc.*\['/model/atmosphere'\]. Set 'data.group: model/atmosphere'"):
        prepare(parse_config(run_config([path])))


def test_variable_in_other_group_names_it(temperature_dataset, run_config, tmp_path):
    path = _write_grouped(temperature_dataset(), tmp_path / "grouped.nc")
    raw = run_config([path])
    raw["data"]["group"] = "model"

    with pytest.raises(DataError, match=r"not found in group '/model' \(data.group\) .*Set 'data.group: model/atmosphere'"):
        prepare(parse_config(raw))


def test_input_in_other_group_than_target(temperature_dataset, run_config, tmp_path):
    path = _write_grouped(temperature_dataset(), tmp_path / "grouped.nc")
    with netCDF4.Dataset(path, "a") as nc:
        nc.createVariable("humidity", "f4", ("time", "latitude", "longitude"))[:] = 0.5
    raw = run_config([path])
    raw["data"]["group"] = GROUP
    raw["data"]["inputs"].append({"name": "humidity", "variable": "humidity"})

    with pytest.raises(DataError, match=r"'humidity' \(data.inputs\) not found in group '/model/atmosphere' .*\['/'\]\. A run reads one group, and \['air_temperature'\] are in group"):
        prepare(parse_config(raw))


def test_missing_group_lists_groups(temperature_dataset, run_config, tmp_path):
    path = _write_grouped(temperature_dataset(), tmp_path / "grouped.nc")
    raw = run_config([path])
    raw["data"]["group"] = "ocean"

    with pytest.raises(DataError, match=r"Group '/ocean' not found in '.*grouped\.nc', which has the groups \['/', '/model', '/model/atmosphere'\]"):
        prepare(parse_config(raw))


# --------------------------------------------------------------------------- #
# Names with spaces and non-ASCII letters
# --------------------------------------------------------------------------- #

# Two targets, so the per-target file names (skill_<target>.csv) carry the names too.
ODD_NAMES = {"air_temperature": "air temperature", "surface_temperature": "température de surface"}


def _odd_config(run_config, path, names):
    raw = run_config([path])
    first, second = names["air_temperature"], names["surface_temperature"]
    raw["data"]["targets"] = [first, second]
    raw["data"]["inputs"] = [
        # A predictor name takes no spaces (see test_predictor_name_with_space_raises).
        {"name": "moyenne_température", "variable": first, "transform": "domain_mean", "feature": False},
        {"name": f"climatologie {second}", "variable": second, "transform": "training_mean"},
        {"name": "latitude", "coordinate": "latitude"},
        {"name": "longitude", "coordinate": "longitude"},
    ]
    raw["predictors"] = [{"input": unicodedata.normalize("NFD", "moyenne_température")}]
    return raw


def _two_targets(field: xr.Dataset) -> xr.Dataset:
    surface = (field.air_temperature + 1.5).assign_attrs(field.air_temperature.attrs)
    return field.assign(surface_temperature=surface)


@pytest.fixture(scope="module")
def odd_name_runs(tmp_path_factory, temperature_dataset, write_netcdf, run_config):
    """The same two-target run with plain names and with names holding spaces and accents."""
    folder = tmp_path_factory.mktemp("odd_names")
    field = _two_targets(temperature_dataset())
    plain = run(parse_config(_odd_config(run_config, write_netcdf(field, folder / "plain.nc"), {k: k for k in ODD_NAMES})))
    odd_path = write_netcdf(field.rename(ODD_NAMES), folder / "odd.nc")
    # The configuration spells "é" as "e" plus a combining accent (NFD), as some
    # macOS tools write it; netCDF stores the name in NFC.
    odd_raw = _odd_config(run_config, odd_path, {k: unicodedata.normalize("NFD", v) for k, v in ODD_NAMES.items()})
    odd = run(parse_config(odd_raw), out_dir=folder / "out")
    return plain, odd, folder / "out"


def test_odd_names_give_same_numbers(odd_name_runs):
    plain, odd, _ = odd_name_runs

    for old, new in ODD_NAMES.items():
        np.testing.assert_array_equal(odd.predictions[new].child.values, plain.predictions[old].child.values)
        np.testing.assert_array_equal(odd.skill[new].rmse.values, plain.skill[old].rmse.values)


def test_odd_names_written_and_read_back(odd_name_runs):
    _, odd, out = odd_name_runs

    with xr.open_dataset(out / "predictions.nc") as written:
        for name in ODD_NAMES.values():
            np.testing.assert_array_equal(written[f"{name}_child"].values, odd.predictions[name].child.values)
    xr.testing.assert_identical(load_anomalies(out / "anomalies.nc"), odd.update.anomalies_)
    outputs = load_outputs(out)
    for name in ODD_NAMES.values():
        assert (out / f"skill_{name}.csv").is_file()
        assert (out / f"error_maps_{name}.png").stat().st_size > 0
        np.testing.assert_array_equal(outputs.target_predictions(name).child.values, odd.predictions[name].child.values)
        table = odd.skill[name]
        child_rmse = float(table.rmse.values[list(table.method.values).index("child")])
        assert outputs.skill[name]["child"]["rmse"] == pytest.approx(child_rmse, rel=1e-5)  # 6 digits in the CSV


def test_odd_names_bundle_round_trip(odd_name_runs, tmp_path):
    _, odd, out = odd_name_runs
    meta = json.loads((out / "model" / "metadata.json").read_text(encoding="utf-8"))
    loaded = condupdate.load(out / "model")
    apply = odd.emulator  # the in-memory emulator of the same run

    assert meta["config"]["data"]["targets"] == list(ODD_NAMES.values())
    assert set(meta["variables"]) >= set(ODD_NAMES.values())
    with xr.open_dataset(out.parent / "odd.nc") as ds:
        data = ds.load()
    data = data.sel(time=slice("1890", "1899"))
    for name in ODD_NAMES.values():
        np.testing.assert_array_equal(loaded.predict(data)[name].values, apply.predict(data)[name].values)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("air/temperature", r"'air/temperature' contains '/'.*name it 'temperature' and set data.group: air"),
        (" air temperature", r"' air temperature' is not a valid netCDF name \(NetCDF: Name contains illegal characters\)"),
        ("air temperature ", r"'air temperature ' is not a valid netCDF name"),
    ],
)
def test_unwritable_target_name_raises(temperature_dataset, run_config, name, message):
    ds = temperature_dataset().rename(air_temperature=name)
    raw = run_config([])
    raw["data"]["targets"] = [name]

    with pytest.raises(DataError, match=rf"Target variable \(data.targets\) {message}"):
        prepare(parse_config(raw), dataset=ds)


def test_predictor_name_with_space_round_trips(temperature_file, run_config, tmp_path):
    raw = run_config([temperature_file])
    raw["data"]["inputs"][0]["name"] = "domain mean temperature"
    raw["predictors"] = [{"input": "domain mean temperature"}]
    result = run(parse_config(raw), out_dir=tmp_path / "out")

    stored = load_anomalies(tmp_path / "out" / "anomalies.nc")
    assert "domain mean temperature" in stored.coords
    xr.testing.assert_identical(stored, result.update.anomalies_)
    loaded = condupdate.load(tmp_path / "out" / "model")
    xr.testing.assert_identical(loaded.update.anomalies_, result.update.anomalies_)


# --------------------------------------------------------------------------- #
# Application predictors far outside the training range
# --------------------------------------------------------------------------- #


def test_far_predictor_warns_and_is_not_clipped(temperature_dataset, write_netcdf, run_config, tmp_path):
    near_field = temperature_dataset()
    far_field = near_field.copy(deep=True)
    far_field["air_temperature"][30:] += 10.0  # [K], the application decade only
    near = run(parse_config(run_config([write_netcdf(near_field, tmp_path / "near.nc")])))
    far_config = parse_config(run_config([write_netcdf(far_field, tmp_path / "far.nc")]))

    with pytest.warns(ExtrapolationWarning) as record:
        far = run(far_config)

    # The distance named in the warning, recomputed from the domain means.
    prep = prepare(far_config)
    name = "predictor:domain_mean_temperature"
    expected = float(extrapolation_distance(prep.apply[name], prep.train[name]).max())
    assert expected > EXTRAPOLATION_THRESHOLD
    assert len(record) == 1
    assert f"'domain_mean_temperature' lies up to {expected:.2f} training standard deviations" in str(record[0].message)
    assert f"(threshold {EXTRAPOLATION_THRESHOLD:g})" in str(record[0].message)
    assert record[0].filename == __file__  # points at the caller of run()
    # Same training data, so the same parent and regressor; only the application
    # predictor differs, and the child follows it beyond the training range.
    xr.testing.assert_equal(far.update.anomalies_, near.update.anomalies_)
    far_child = far.predictions["air_temperature"].child
    near_child = near.predictions["air_temperature"].child
    assert float(abs(far_child - near_child).max()) > 0.1  # [K]
    # Ridge is affine in the predictor, so an unclipped anomaly at the far predictor
    # continues the line through the two ends of the training range.
    lowest, highest = float(far.update.train_predictors_.min()), float(far.update.train_predictors_.max())
    farthest = float(far.application_predictor.max())
    low, high, at_far = (far.update.predict_anomaly(np.array([[p]])) for p in (lowest, highest, farthest))
    np.testing.assert_allclose(at_far, high + (farthest - highest) / (highest - lowest) * (high - low), rtol=1e-6, atol=1e-9)
    assert not np.allclose(at_far, high)


def test_far_predictor_warns_among_several(temperature_dataset, write_netcdf, run_config, tmp_path):
    field = temperature_dataset()
    field["air_temperature"][30:] += 10.0  # [K]
    raw = run_config([write_netcdf(field, tmp_path / "far.nc")])
    raw["predictors"] = [{"coordinate": "time"}, {"input": "domain_mean_temperature"}]

    with pytest.warns(ExtrapolationWarning) as record:
        result = run(parse_config(raw))

    per_predictor = result.distances.extrapolation_distance.max("time")
    assert float(per_predictor.sel(predictor="time")) <= EXTRAPOLATION_THRESHOLD
    expected = float(per_predictor.sel(predictor="domain_mean_temperature"))
    assert [str(w.message).split(" lies")[0] for w in record] == ["Application predictor 'domain_mean_temperature'"]
    assert f"up to {expected:.2f} training standard deviations" in str(record[0].message)


def test_in_range_predictor_does_not_warn(temperature_file, run_config):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExtrapolationWarning)
        result = run(parse_config(run_config([temperature_file])))

    assert float(result.distance.max()) <= EXTRAPOLATION_THRESHOLD


def test_cli_shows_warning_once_on_one_line(capsys):
    # Python's own filters, without pytest's turning condupdate warnings into errors.
    with warnings.catch_warnings():
        warnings.resetwarnings()
        with _readable_warnings("run"):
            for _ in range(2):
                warnings.warn("Application predictor 'x' lies up to 5.00 ...", ExtrapolationWarning, stacklevel=1)

    assert capsys.readouterr().err == "condupdate run: warning: Application predictor 'x' lies up to 5.00 ... [ExtrapolationWarning]\n"
