"""The deep-density case: Levitus subset, TEOS-10 density and a quick end-to-end run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import gsw
import numpy as np
import pytest
import xarray as xr
import yaml

from condupdate import ExtrapolationWarning
from condupdate.bench.cases import CASES, configs_dir
from condupdate.datasets import load_dataset
from condupdate.datasets.ocean import LEVITUS_SUBSET, _in_situ_density, load_deep_density
from condupdate.jobs.config import parse_config
from condupdate.jobs.run import run

ROOT = Path(__file__).resolve().parents[1]
DEBIAN_FILE = Path("/usr/share/ferret-vis/data/levitus_climatology.cdf")
GSW_CHECK_VALUES = Path(gsw.__file__).parent / "tests" / "gsw_cv_v3_0.npz"


def _script():
    spec = importlib.util.spec_from_file_location("make_levitus_subset", ROOT / "data" / "scripts" / "make_levitus_subset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


@pytest.fixture(scope="module")
def levitus() -> xr.Dataset:
    return load_deep_density()


@pytest.mark.skipif(not GSW_CHECK_VALUES.is_file(), reason="gsw installed without its check-value file")
def test_density_matches_teos10_check_values():
    # Reference values of the GSW toolbox: rho from SA and CT, where SA and CT come
    # from the practical salinity and in-situ temperature of the same casts. Our
    # conversion chain starts from SP and t, so a wrong order or argument fails here.
    cv = np.load(GSW_CHECK_VALUES)
    density = _in_situ_density(cv["t_chck_cast"], cv["SP_chck_cast"], cv["p_chck_cast"], cv["long_chck_cast"], cv["lat_chck_cast"])
    finite = np.isfinite(cv["rho"])
    assert finite.sum() > 90
    np.testing.assert_allclose(density[finite], cv["rho"][finite], rtol=0, atol=float(cv["rho_ca"]))


def test_loader_pressure_inverts_to_depth(levitus):
    # gsw.z_from_p is the inverse of the p_from_z the loader uses.
    height = gsw.z_from_p(levitus["pressure"].values, levitus["lat"].values[None, :])
    np.testing.assert_allclose(height, -np.broadcast_to(levitus["depth"].values[:, None], height.shape), atol=1e-6)
    assert levitus["pressure"].attrs["units"] == "dbar"


def test_loader_density_is_teos10_in_situ_density(levitus):
    # One cell of the deep ocean, recomputed step by step from the file's values.
    deep = levitus.sel(depth=4000.0).stack(cell=("lat", "lon"))
    cell = deep.isel(cell=int(np.flatnonzero(deep["density"].notnull().values)[0]))
    lat, lon = float(cell["lat"]), float(cell["lon"])
    pressure = gsw.p_from_z(-4000.0, lat)
    sa = gsw.SA_from_SP(float(cell["salinity"]), pressure, lon, lat)
    ct = gsw.CT_from_t(sa, float(cell["temperature"]), pressure)
    assert float(cell["density"]) == pytest.approx(float(gsw.rho(sa, ct, pressure)), abs=1e-9)
    # Density of sea water at 4000 dbar lies far above any surface value.
    assert 1040.0 < float(cell["density"]) < 1050.0


def test_loader_layout_and_mask(levitus):
    assert levitus["density"].dims == ("depth", "lat", "lon")
    assert levitus.sizes == {"depth": 20, "lat": 90, "lon": 180}
    assert levitus["density"].attrs["units"] == "kg m-3"
    assert float(levitus["lon"].min()) > 0
    assert float(levitus["lon"].max()) < 360
    np.testing.assert_array_equal(levitus["density"].isnull().values, levitus["temperature"].isnull().values)
    assert int(levitus["density"].sel(depth=slice(1000, 5000)).notnull().sum()) > 40000


def test_registry_returns_the_loader_dataset(levitus):
    xr.testing.assert_identical(load_dataset("deep-density"), levitus)


def test_loader_missing_file_names_path(tmp_path):
    missing = tmp_path / "levitus.nc"
    with pytest.raises(FileNotFoundError, match="levitus.nc"):
        load_deep_density(missing)


@pytest.mark.skipif(not DEBIAN_FILE.is_file(), reason="Debian package ferret-datasets not installed")
def test_subset_script_reproduces_committed_file(tmp_path):
    script = _script()
    out = script.write_subset(script.make_subset(DEBIAN_FILE), tmp_path / "levitus_2deg.nc")
    with xr.open_dataset(out) as rebuilt, xr.open_dataset(LEVITUS_SUBSET) as committed:
        xr.testing.assert_identical(rebuilt.load(), committed.load())


def test_subset_script_keeps_existing_output(tmp_path):
    script = _script()
    out = tmp_path / "levitus_2deg.nc"
    out.write_text("earlier results")
    with pytest.raises(FileExistsError, match="--overwrite"):
        script.write_subset(xr.Dataset({"x": ("a", [1.0])}), out)
    assert out.read_text() == "earlier results"


def test_deep_density_quick_run():
    raw = yaml.safe_load((configs_dir() / "deep-density.yaml").read_text())
    config = parse_config(_merge(raw, CASES["deep-density"].quick))
    with pytest.warns(ExtrapolationWarning, match="pressure"):
        result = run(config)

    table = result.skill["density"]
    assert list(table["method"].values) == ["parent", "child"]
    assert np.isfinite(table["rmse"].values).all()
    predictions = result.predictions["density"]
    assert list(predictions["depth"].values) == [1000.0, 1200.0, 1500.0, 2000.0, 3000.0, 4000.0, 5000.0]
    # The application predictor is pressure, far beyond the 0-400 dbar of training.
    assert float(result.distance.max()) > 10
