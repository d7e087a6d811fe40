"""Tests of run safety in condupdate.jobs: split checks, result folders, configuration paths and written files."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import netCDF4
import numpy as np
import pytest
import xarray as xr
import yaml

import condupdate.emulators
from condupdate import plot, skill
from condupdate._errors import ConfigError, DataError, SplitOverlapWarning
from condupdate.cli import _parser
from condupdate.jobs.config import ACTIVATION_NAMES, load_config, parse_config
from condupdate.jobs.prepare import prepare
from condupdate.jobs.run import run

def _files(folder: Path) -> dict[str, bytes]:
    # Contents of every file under folder, keyed by relative path.
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _hidden_siblings(folder: Path) -> list[str]:
    # A run writes to hidden folders beside the result folder, named .NAME.tmp.* and .NAME.old.*.
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


@pytest.fixture(scope="module")
def earlier_results(tmp_path_factory, temperature_dataset, write_netcdf, run_config) -> tuple[Path, Path]:
    """Run the tiny configuration once and return its input file and result folder."""
    folder = tmp_path_factory.mktemp("earlier")
    path = write_netcdf(temperature_dataset(), folder / "air_temperature.nc")
    run(parse_config(run_config([path])), out_dir=folder / "out")
    return path, folder / "out"


@pytest.fixture
def result_copy(earlier_results, tmp_path) -> Path:
    """Copy the earlier result folder to tmp_path / "out" and return the copy."""
    _, out = earlier_results
    return Path(shutil.copytree(out, tmp_path / "out"))


# --------------------------------------------------------------------------- #
# Splits along latitude
# --------------------------------------------------------------------------- #


def _latitude_split(run_config, path: Path, size: int = 1) -> dict:
    raw = run_config([path])
    # Train on the four southern bands (-62.5 .. 12.5) and apply to 37.5 and 62.5 degrees north.
    raw["split"] = {"dim": "latitude", "train": [-62.5, 12.5], "apply": [37.5, 62.5]}
    raw["subsets"] = {"method": "window", "dim": "latitude", "size": size}
    raw["predictors"] = [{"coordinate": "latitude"}]
    return raw


def test_latitude_split_runs_end_to_end(temperature_file, run_config, tmp_path, monkeypatch):
    maps_drawn = []
    original_error_maps = plot.error_maps

    def recording_error_maps(errors, **kwargs):
        maps_drawn.append(dict(errors))
        return original_error_maps(errors, **kwargs)

    monkeypatch.setattr(plot, "error_maps", recording_error_maps)
    out = tmp_path / "out"

    result = run(parse_config(_latitude_split(run_config, temperature_file)), out_dir=out)

    # The latitude predictor lies along the split dim, so pattern scaling has one
    # predictor value per latitude step and is kept.
    table = result.skill["air_temperature"]
    assert list(table.method.values) == ["parent", "child", "pattern_scaling"]
    for metric in ("rmse", "mae", "bias"):
        assert np.isfinite(table[metric].values).all(), metric
    predictions = result.predictions["air_temperature"]
    np.testing.assert_array_equal(predictions.latitude.values, [37.5, 62.5])
    assert predictions.sizes == {"time": 40, "latitude": 2, "longitude": 8}
    assert result.update.anomalies_.sizes["subset"] == 4
    assert result.distance.dims == ("latitude",)
    assert (np.diff(result.distance.values) > 0).all()
    for name in ("error_maps.png", "bias_maps.png", "error_vs_distance.png", "skill.csv"):
        assert (out / name).stat().st_size > 0, name

    # The map figures (absolute error, then bias) come first, each with one
    # time-mean map per method; the summary page draws more maps after them.
    assert len(maps_drawn) >= 2
    absolute_errors, biases = maps_drawn[:2]
    for method in ("parent", "child", "pattern_scaling"):
        error = predictions[method] - predictions.truth
        panel = method.replace("_", " ")  # panel titles use spaces
        assert set(absolute_errors[panel].dims) == {"latitude", "longitude"}
        np.testing.assert_allclose(
            absolute_errors[panel].transpose("latitude", "longitude").values,
            abs(error).mean("time").transpose("latitude", "longitude").values,
        )
        np.testing.assert_allclose(
            biases[panel].transpose("latitude", "longitude").values,
            error.mean("time").transpose("latitude", "longitude").values,
        )


# --------------------------------------------------------------------------- #
# Split values
# --------------------------------------------------------------------------- #


def test_split_unquoted_years_match_strings(temperature_file, run_config):
    raw_strings = run_config([temperature_file])
    raw_years = run_config([temperature_file])
    raw_years["split"] = {"dim": "time", "train": [1860, 1889], "apply": [1890, 1899]}

    by_strings, by_years = prepare(parse_config(raw_strings)), prepare(parse_config(raw_years))

    assert by_years.train.sizes["time"] == 30
    xr.testing.assert_identical(by_years.train.time, by_strings.train.time)
    xr.testing.assert_identical(by_years.apply.time, by_strings.apply.time)


@pytest.mark.parametrize(
    ("split", "pattern"),
    [
        (
            {"dim": "time", "train": ["1889", "1860"], "apply": ["1890", "1899"]},
            r"split\.train = \['1889', '1860'\]: .*empty.*reversed; give it as \[start, stop\]",
        ),
        (
            {"dim": "time", "train": ["1860", "1889"], "apply": [1899, 1890]},
            r"split\.apply = \[1899, 1890\]: .*empty.*reversed; give it as \[start, stop\]",
        ),
        (
            {"dim": "latitude", "train": [12.5, -62.5], "apply": [37.5, 62.5]},
            r"split\.train = \[12\.5, -62\.5\]: .*empty.*reversed; give it as \[start, stop\]",
        ),
    ],
)
def test_split_reversed_range_raises(temperature_file, run_config, split, pattern):
    raw = run_config([temperature_file])
    raw["split"] = split
    config = parse_config(raw)

    with pytest.raises(DataError, match=pattern):
        prepare(config)


@pytest.mark.parametrize(
    ("split", "pattern"),
    [
        ({"dim": "time", "train": ["1860", "1889"], "apply": ["1950", "1960"]}, r"split\.apply = .*empty"),
        ({"dim": "latitude", "train": [70, 80], "apply": [37.5, 62.5]}, r"split\.train = .*empty"),
    ],
)
def test_split_empty_range_raises(temperature_file, run_config, split, pattern):
    raw = run_config([temperature_file])
    raw["split"] = split
    config = parse_config(raw)

    with pytest.raises(DataError, match=pattern) as excinfo:
        prepare(config)

    # A range outside the coordinate is not reversed, so no order is suggested.
    assert "reversed" not in str(excinfo.value)


@pytest.mark.parametrize(("apply", "shared"), [(["1880", "1899"], 10), (["1889", "1899"], 1)])
def test_split_overlap_warns(temperature_file, run_config, apply, shared):
    raw = run_config([temperature_file])
    raw["split"]["apply"] = apply
    config = parse_config(raw)

    with pytest.warns(SplitOverlapWarning, match=rf"share {shared} steps along 'time'"):
        prepare(config)


@pytest.mark.parametrize("masked", [False, True], ids=["complete", "masked"])
def test_predictor_constant_across_subsets_raises(temperature_dataset, write_netcdf, run_config, tmp_path, masked):
    # Latitude does not change along time, so five-year windows of time all share
    # its value. Missing cells remove a few samples from some windows, which must
    # not make the predictor look as if it varied between them.
    path = write_netcdf(temperature_dataset(masked=masked), tmp_path / "air_temperature.nc")
    raw = run_config([path])
    raw["predictors"] = [{"coordinate": "latitude"}]
    config = parse_config(raw)

    with pytest.raises(DataError, match=r"Predictors \['latitude'\] take the same value"):
        run(config)


# --------------------------------------------------------------------------- #
# Result folders
# --------------------------------------------------------------------------- #


def test_overwrite_replaces_whole_folder(earlier_results, result_copy, run_config):
    path, _ = earlier_results
    (result_copy / "stale.txt").write_text("left by an earlier run")
    raw = run_config([path])
    raw["name"] = "rerun"

    run(parse_config(raw), out_dir=result_copy, overwrite=True)

    assert not (result_copy / "stale.txt").exists()
    assert yaml.safe_load((result_copy / "config.yaml").read_text())["name"] == "rerun"
    for name in ("skill.csv", "predictions.nc", "timings.json", "model/weights.pt"):
        assert (result_copy / name).stat().st_size > 0, name
    assert _hidden_siblings(result_copy) == []


def test_overwrite_rejects_folder_without_results(earlier_results, run_config, tmp_path):
    path, _ = earlier_results
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("\\chapter{Introduction}\n")
    (out / "timings.json").write_text("{}")  # without config.yaml, not a result folder
    before = _files(out)
    config = parse_config(run_config([path]))

    with pytest.raises(FileExistsError, match=r"holds no condupdate results"):
        run(config, out_dir=out, overwrite=True)

    assert _files(out) == before
    assert _hidden_siblings(out) == []


def _raise_disk_full(*args, **kwargs):
    plt.close("all")
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("writer", [(plot, "save_figure"), (skill, "write_skill_csv")], ids=["figure", "skill_csv"])
def test_failed_write_keeps_earlier_results(earlier_results, result_copy, run_config, monkeypatch, writer):
    path, _ = earlier_results
    before = _files(result_copy)
    monkeypatch.setattr(*writer, _raise_disk_full)
    config = parse_config(run_config([path]))

    with pytest.raises(OSError, match="No space left on device"):
        run(config, out_dir=result_copy, overwrite=True)

    assert _files(result_copy) == before
    assert _hidden_siblings(result_copy) == []


def test_failed_first_write_leaves_no_folder(earlier_results, run_config, tmp_path, monkeypatch):
    path, _ = earlier_results
    out = tmp_path / "out"
    monkeypatch.setattr(plot, "save_figure", _raise_disk_full)
    config = parse_config(run_config([path]))

    with pytest.raises(OSError, match="No space left on device"):
        run(config, out_dir=out)

    assert not out.exists()
    assert _hidden_siblings(out) == []


# --------------------------------------------------------------------------- #
# Configuration
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".hidden", ""])
def test_config_bad_run_name_raises(run_config, tmp_path, name):
    raw = run_config([tmp_path / "field.nc"])
    raw["name"] = name

    with pytest.raises(ConfigError, match=r"\bname: .*\(got " + re.escape(repr(name)) + r"\)"):
        parse_config(raw)


def test_config_relative_predictor_path_follows_file(temperature_dataset, write_netcdf, run_config, tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    field = temperature_dataset()
    write_netcdf(field, folder / "air_temperature.nc")
    # An external forcing series [W m-2] on the field's own 360_day time axis.
    forcing = xr.Dataset(
        {"forcing": ("time", 0.5 + 0.04 * np.arange(field.sizes["time"]), {"units": "W m-2"})},
        coords={"time": field.time},
    )
    write_netcdf(forcing, folder / "forcing.nc")
    raw = run_config(["air_temperature.nc"])
    raw["predictors"] = [{"path": "forcing.nc", "variable": "forcing", "dim": "time"}]
    config_path = folder / "run.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    config = load_config(config_path)
    prep = prepare(config)
    result = run(config)

    assert config.predictors[0].path == str(folder / "forcing.nc")
    np.testing.assert_array_equal(prep.train["predictor:forcing"].values, forcing.forcing.values[:30])
    assert result.update.anomalies_.sizes["subset"] == 6
    assert np.isfinite(result.skill["air_temperature"].rmse.values).all()


@pytest.mark.parametrize(
    ("section", "key", "value", "pattern"),
    [
        ("split", "dim", "depth", r"split\.dim 'depth' must be one of data\.sample_dims"),
        ("split", "train", ["1860", "1870", "1889"], r"split\.train must be \[start, stop\]"),
        ("update", "ensemble", "posterior", r"ensemble 'posterior' needs a regressor with posterior samples"),
    ],
)
def test_config_cross_key_error_is_short(run_config, tmp_path, section, key, value, pattern):
    raw = run_config([tmp_path / "field.nc"])
    raw.setdefault(section, {})[key] = value

    with pytest.raises(ConfigError, match=pattern) as excinfo:
        parse_config(raw)

    # The message names the keys, without the whole configuration section it checked.
    message = str(excinfo.value)
    assert len(message) < 400, message
    assert "'inputs':" not in message
    assert "'sample_dims':" not in message


def test_activation_names_match_emulators():
    assert ACTIVATION_NAMES == tuple(sorted(condupdate.emulators.ACTIVATIONS))


# --------------------------------------------------------------------------- #
# Command line parser
# --------------------------------------------------------------------------- #


def test_cli_parser_import_skips_torch():
    code = "import condupdate.cli, sys; condupdate.cli._parser(); print('torch' in sys.modules)"

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


@pytest.mark.parametrize(
    "argv",
    [["-v", "demo"], ["demo", "-v"], ["--verbose", "run", "x.yaml"], ["run", "x.yaml", "--verbose"]],
)
def test_cli_verbose_before_or_after_command(argv):
    args = _parser().parse_args(argv)

    assert args.verbose is True


# --------------------------------------------------------------------------- #
# Written predictions
# --------------------------------------------------------------------------- #


def _field_with_provenance(temperature_dataset) -> xr.Dataset:
    # Add what climate model output often carries, namely provenance attributes,
    # a grid mapping variable and cell bounds on latitude and time.
    ds = temperature_dataset()
    ds["air_temperature"].attrs.update(source="Unified Model vn8.5", grid_mapping="crs")
    ds["crs"] = xr.DataArray(0, attrs={"grid_mapping_name": "latitude_longitude"})
    latitude = ds.latitude.values
    ds["latitude_bnds"] = (("latitude", "bnds"), np.stack([latitude - 12.5, latitude + 12.5], axis=1))
    ds.latitude.attrs["bounds"] = "latitude_bnds"
    ds["time_bnds"] = (("time", "bnds"), np.stack([ds.time.values, ds.time.values], axis=1))
    ds.time.attrs["bounds"] = "time_bnds"
    return ds


def test_predictions_file_attributes(temperature_dataset, write_netcdf, run_config, tmp_path):
    path = write_netcdf(_field_with_provenance(temperature_dataset), tmp_path / "air_temperature.nc")
    out = tmp_path / "out"

    run(parse_config(run_config([path])), out_dir=out)

    with netCDF4.Dataset(out / "predictions.nc") as written:
        names = set(written.variables)
        attrs = {name: {key: written[name].getncattr(key) for key in written[name].ncattrs()} for name in names}
        global_attrs = set(written.ncattrs())
    for method in ("parent", "child", "pattern_scaling"):
        prediction = attrs[f"air_temperature_{method}"]
        assert prediction["units"] == "K", method
        assert prediction["standard_name"] == "air_temperature", method
        assert "source" not in prediction, method
        assert "grid_mapping" not in prediction, method
    dangling = {name: a["bounds"] for name, a in attrs.items() if "bounds" in a and a["bounds"] not in names}
    assert dangling == {}
    missing_mappings = {
        name: a["grid_mapping"] for name, a in attrs.items() if "grid_mapping" in a and a["grid_mapping"] not in names
    }
    assert missing_mappings == {}
    assert {"title", "history"} <= global_attrs
