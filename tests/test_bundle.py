"""Saving and loading an adapted emulator, and predicting from xarray with it."""

from __future__ import annotations

import collections
import contextvars
import json
import pickle
import zipfile

import numpy as np
import pytest
import torch
import xarray as xr

import condupdate
from condupdate._errors import DataError
from condupdate.bundle import load, save
from condupdate.data import open_dataset, select
from condupdate.jobs.config import parse_config
from condupdate.jobs.run import run


def _config(run_config, path, **changes):
    raw = run_config([path])
    for key, value in changes.items():
        raw[key] = value
    return parse_config(raw)


@pytest.fixture
def fitted(run_config, temperature_file):
    result = run(_config(run_config, temperature_file))
    ds = open_dataset(temperature_file)
    return result, select(ds, "time", ("1890", "1899"))


def test_loaded_bundle_predicts_identically(fitted, tmp_path):
    result, apply = fitted
    path = save(result.emulator, tmp_path / "model")
    loaded = load(path)

    for method in ("child", "parent"):
        before = result.emulator.predict(apply, method=method).air_temperature
        after = loaded.predict(apply, method=method).air_temperature
        np.testing.assert_array_equal(before.values, after.values)


def test_bundle_prediction_matches_run(fitted):
    result, apply = fitted
    predicted = result.emulator.predict(apply).air_temperature
    np.testing.assert_array_equal(predicted.values, result.predictions["air_temperature"].child.values)


def test_bundle_ignores_targets_of_new_data(fitted):
    result, apply = fitted
    scrambled = apply.copy()
    scrambled["air_temperature"] = apply.air_temperature  # the input variable stays
    baseline = result.emulator.predict(apply).air_temperature
    # Only inputs enter: a dataset whose values are the same inputs gives the same result.
    np.testing.assert_array_equal(result.emulator.predict(scrambled).air_temperature.values, baseline.values)


def test_bundle_prediction_keeps_coords_and_attrs(fitted):
    result, apply = fitted
    predicted = result.emulator.predict(apply).air_temperature
    assert predicted.dims == ("time", "latitude", "longitude")
    assert predicted.attrs["units"] == "K"
    assert predicted.time.values[0].calendar == "360_day"
    assert np.isnan(predicted.values).any()  # land cells stay NaN


def test_bundle_weights_load_without_code(fitted, tmp_path):
    result, _ = fitted
    path = save(result.emulator, tmp_path / "model")
    weights = torch.load(path / "weights.pt", weights_only=True)
    assert set(weights) == {"parent", "theta0", "updated"}
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["training_fingerprint"] == result.emulator.training_fingerprint
    assert "torch" in meta["versions"]


def test_bundle_rejects_other_units(fitted):
    result, apply = fitted
    celsius = apply.assign(air_temperature=(apply.air_temperature - 273.15).assign_attrs(units="degC"))
    with pytest.raises(DataError, match="'air_temperature' has units 'degC'.*'K'"):
        result.emulator.predict(celsius)


def test_bundle_rejects_missing_variable(fitted):
    result, apply = fitted
    renamed = apply.rename({"air_temperature": "tas"})
    with pytest.raises(DataError, match=r"\['air_temperature'\].*missing"):
        result.emulator.predict(renamed)


def test_save_refuses_existing_folder(fitted, tmp_path):
    result, _ = fitted
    path = save(result.emulator, tmp_path / "model")
    before = (path / "metadata.json").read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save(result.emulator, path)
    assert (path / "metadata.json").read_bytes() == before


def test_failed_save_keeps_old_bundle(fitted, tmp_path, monkeypatch):
    result, _ = fitted
    path = save(result.emulator, tmp_path / "models" / "model")
    before = (path / "metadata.json").read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", broken)
    with pytest.raises(OSError, match="disk full"):
        save(result.emulator, path, overwrite=True)
    assert (path / "metadata.json").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["model"]


def test_load_names_missing_file(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(FileNotFoundError, match="metadata.json"):
        load(tmp_path / "model")


def test_top_level_save_and_load(fitted, tmp_path):
    result, apply = fitted
    condupdate.save(result.emulator, tmp_path / "model")
    loaded = condupdate.load(tmp_path / "model")
    assert loaded.targets == ["air_temperature"]


@pytest.mark.parametrize("parameters", ["biases", "last_layers", "lora"])
def test_parameter_spaces_round_trip(run_config, temperature_file, tmp_path, parameters):
    config = _config(run_config, temperature_file, update={"parameters": parameters})
    result = run(config)
    apply = select(open_dataset(temperature_file), "time", ("1890", "1899"))
    loaded = load(save(result.emulator, tmp_path / "model"))
    np.testing.assert_array_equal(
        loaded.predict(apply).air_temperature.values, result.emulator.predict(apply).air_temperature.values
    )


def test_member_ensemble_has_member_dim(run_config, temperature_file, tmp_path):
    config = _config(run_config, temperature_file, update={"members": 3, "ensemble": "members"})
    result = run(config, out_dir=tmp_path / "out")
    ensemble = result.predictions["air_temperature"].child_ensemble
    assert ensemble.sizes["member"] == 3
    assert result.update.anomalies_.dims == ("member", "subset", "parameter")
    table = result.ensemble_skill["air_temperature"]
    assert float(table.crps.sel({"method": "child_ensemble"})) > 0
    header = (tmp_path / "out" / "ensemble_skill.csv").read_text().splitlines()[0]
    assert header == "method,rmse,crps,spread_skill_ratio"


def test_posterior_ensemble_round_trip(run_config, temperature_file, tmp_path):
    config = _config(
        run_config, temperature_file, regressor={"method": "bayesian_ridge"}, update={"ensemble": "posterior", "n_samples": 4}
    )
    result = run(config)
    apply = select(open_dataset(temperature_file), "time", ("1890", "1899"))
    loaded = load(save(result.emulator, tmp_path / "model"))
    before = result.emulator.predict(apply, ensemble="posterior", n_samples=4, random_state=1).air_temperature
    after = loaded.predict(apply, ensemble="posterior", n_samples=4, random_state=1).air_temperature
    assert before.sizes["member"] == 4
    np.testing.assert_array_equal(before.values, after.values)


def test_two_predictors_report_distances(run_config, temperature_file, tmp_path):
    raw = run_config([temperature_file])
    raw["predictors"] = [{"input": "domain_mean_temperature"}, {"coordinate": "time"}]
    result = run(parse_config(raw), out_dir=tmp_path / "out")

    per_predictor = result.distances.extrapolation_distance
    assert list(per_predictor["predictor"].values) == ["domain_mean_temperature", "time"]
    # 1890-1899 lies beyond 1860-1889: every application year is outside in time.
    assert float(per_predictor.sel(predictor="time").min()) > 0
    assert float(result.distances.mahalanobis_distance.min()) > 0
    with xr.open_dataset(tmp_path / "out" / "predictions.nc") as written:
        assert written.predictor_distance.sizes["predictor"] == 2
        assert "mahalanobis_distance" in written


def test_members_write_signal_to_noise(run_config, temperature_file, tmp_path):
    raw = run_config([temperature_file])
    raw["update"] = {"members": 2, "snr_threshold": 0.5}
    result = run(parse_config(raw), out_dir=tmp_path / "out")

    with xr.open_dataarray(tmp_path / "out" / "signal_to_noise.nc") as ratio:
        kept = (ratio.values >= 0.5).sum()
    assert kept == result.update.updated_.sum()
    assert result.update.updated_.sum() < result.update.updated_.size


# --------------------------------------------------------------------------- #
# A bundle saved on a GPU, loaded on a CPU
# --------------------------------------------------------------------------- #

# torch.save records each storage's device as the location string that the first
# tagger registered with torch.serialization.register_package returns. This tagger
# returns "cuda:0" while the flag is set, the string torch records for a tensor on
# the first GPU, so a machine without one writes a GPU-tagged archive. Otherwise it
# returns None and torch calls its own taggers, so one registration serves the module.
_SAVE_AS_CUDA = contextvars.ContextVar("save_as_cuda", default=False)
torch.serialization.register_package(
    0, lambda storage: "cuda:0" if _SAVE_AS_CUDA.get() else None, lambda storage, location: None
)


class _LocationRecorder(pickle.Unpickler):
    """Read the device of every storage in a torch.save archive, without building tensors."""

    def __init__(self, file):
        super().__init__(file)
        self.locations = []

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        return lambda *args, **kwargs: None  # torch's tensor builders; only the locations matter

    def persistent_load(self, pid):
        # ("storage", storage type, key, location, number of elements)
        self.locations.append(pid[3])


def _storage_locations(path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
        recorder = _LocationRecorder(archive.open(name))
        recorder.load()
    return recorder.locations


def test_bundle_saved_on_gpu_loads_on_cpu(fitted, tmp_path):
    result, apply = fitted
    token = _SAVE_AS_CUDA.set(True)
    try:
        path = save(result.emulator, tmp_path / "model")
    finally:
        _SAVE_AS_CUDA.reset(token)
    locations = _storage_locations(path / "weights.pt")

    loaded = load(path)

    assert locations and set(locations) == {"cuda:0"}
    assert not torch.cuda.is_available()
    for method in ("child", "parent"):
        before = result.emulator.predict(apply, method=method).air_temperature
        after = loaded.predict(apply, method=method).air_temperature
        np.testing.assert_array_equal(after.values, before.values)


def test_gpu_weights_need_map_location(fitted, tmp_path):
    # The archive really names a CUDA device: without map_location torch fails on a CPU.
    result, _ = fitted
    token = _SAVE_AS_CUDA.set(True)
    try:
        path = save(result.emulator, tmp_path / "model")
    finally:
        _SAVE_AS_CUDA.reset(token)

    with pytest.raises(RuntimeError, match="CUDA device but torch.cuda.is_available"):
        torch.load(path / "weights.pt", weights_only=True)
