"""Ocean density from the Levitus climatology: train in the upper ocean, apply in the deep ocean.

The data are annual in-situ temperature and practical salinity of the Levitus
climatology (NOAA, public domain; Debian package ``ferret-datasets``), averaged
to a 2-degree grid by ``data/scripts/make_levitus_subset.py`` and shipped as
``data/levitus_2deg.nc`` in the source tree. The target is in-situ density from
the TEOS-10 equation of state (IOC, SCOR and IAPSO, 2010: The international
thermodynamic equation of seawater - 2010, Manuals and Guides 56, UNESCO),
computed with the PyPI package ``gsw``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from condupdate._errors import DataError

__all__ = ["LEVITUS_SUBSET", "in_situ_density", "load_deep_density"]

# The subset lives in data/ of the source tree, two levels above this package.
LEVITUS_SUBSET = Path(__file__).resolve().parents[2] / "data" / "levitus_2deg.nc"


def _in_situ_density(
    temperature: np.ndarray, salinity: np.ndarray, pressure: np.ndarray, lon: np.ndarray, lat: np.ndarray
) -> np.ndarray:
    # TEOS-10 needs Absolute Salinity and Conservative Temperature, in this order:
    # SA from practical salinity (which needs position and pressure for the
    # salinity anomaly atlas), then CT from in-situ temperature and SA, then rho.
    import gsw

    absolute_salinity = gsw.SA_from_SP(salinity, pressure, lon, lat)  # [g kg-1]
    conservative_temperature = gsw.CT_from_t(absolute_salinity, temperature, pressure)  # [deg C]
    return np.asarray(gsw.rho(absolute_salinity, conservative_temperature, pressure))  # [kg m-3]


def in_situ_density(
    temperature: xr.DataArray, salinity: xr.DataArray, pressure: xr.DataArray
) -> xr.DataArray:
    """Compute in-situ density with the TEOS-10 equation of state (``gsw.rho``).

    Parameters
    ----------
    temperature : xarray.DataArray
        In-situ temperature [deg C] with ``lat`` and ``lon`` coordinates.
    salinity : xarray.DataArray
        Practical salinity [1] on the same grid.
    pressure : xarray.DataArray
        Sea pressure [dbar] (absolute pressure minus 10.1325 dbar), broadcastable
        against ``temperature``.

    Returns
    -------
    xarray.DataArray
        ``density`` [kg m-3] on the dims of ``temperature``; NaN where an input is NaN.

    Examples
    --------
    >>> import xarray as xr
    >>> grid = {"lat": [0.0], "lon": [180.0]}
    >>> t = xr.DataArray([[10.0]], dims=("lat", "lon"), coords=grid)
    >>> s = xr.DataArray([[35.0]], dims=("lat", "lon"), coords=grid)
    >>> round(in_situ_density(t, s, xr.DataArray(0.0)).item(), 3)
    1026.954
    """
    lon, lat = xr.broadcast(temperature["lon"], temperature["lat"])
    density = xr.apply_ufunc(
        _in_situ_density,
        temperature,
        salinity,
        pressure,
        lon,
        lat,
        dask="parallelized",
        output_dtypes=["float64"],
    )
    return density.rename("density").assign_attrs(
        standard_name="sea_water_density",
        long_name="in-situ sea water density (TEOS-10)",
        units="kg m-3",
    )


def load_deep_density(path: str | os.PathLike | None = None) -> xr.Dataset:
    """Load the 2-degree Levitus subset with pressure and TEOS-10 in-situ density.

    Parameters
    ----------
    path : path, optional
        The subset file; default ``data/levitus_2deg.nc`` of the source tree.

    Returns
    -------
    xarray.Dataset
        Dims ``(depth, lat, lon)``: 20 depths 0..5000 m, 90 latitudes, 180
        longitudes 1..359 degrees east. Variables ``temperature`` (in-situ, deg C),
        ``salinity`` (practical, 1), ``pressure`` (sea pressure [dbar] on
        ``(depth, lat)``, from ``gsw.p_from_z``) and ``density`` (in-situ, kg m-3).
        Land and sea-floor cells are NaN.

    Raises
    ------
    FileNotFoundError
        If the subset file is missing (it ships with a source checkout).
    """
    path = Path(path) if path is not None else LEVITUS_SUBSET
    if not path.is_file():
        raise FileNotFoundError(
            f"Levitus subset {str(path)!r} not found; it ships in data/ of a condupdate source checkout. "
            "Rebuild it with python data/scripts/make_levitus_subset.py (needs the Debian package ferret-datasets)."
        )
    import gsw

    ds = xr.open_dataset(path, engine="netcdf4").load()
    for name in ("temperature", "salinity"):
        if name not in ds.data_vars:
            raise DataError(f"Levitus subset {str(path)!r} lacks variable {name!r}; rebuild it with data/scripts/make_levitus_subset.py.")

    # Depth is positive down, gsw's height z is positive up. Pressure depends on
    # latitude through gravity, so it lies on (depth, lat).
    height = -ds["depth"].astype("float64")
    pressure = xr.apply_ufunc(gsw.p_from_z, height, ds["lat"]).transpose("depth", "lat")
    ds["pressure"] = pressure.assign_attrs(
        standard_name="sea_water_pressure", long_name="sea pressure (TEOS-10, from depth and latitude)", units="dbar"
    )
    ds["density"] = in_situ_density(
        ds["temperature"].astype("float64"), ds["salinity"].astype("float64"), ds["pressure"]
    ).transpose("depth", "lat", "lon")
    return ds
