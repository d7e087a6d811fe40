"""Monthly tropical Pacific surface winds 1982-1992, for the wind-speed uncertainty case.

The data are a subset of ``monthly_navy_winds.cdf`` from the Debian package
``ferret-datasets`` (NOAA PMEL, public domain), kept in the source tree as
``data/navy_winds_tropical_pacific.nc`` and rebuilt by
``data/scripts/make_winds_subset.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from condupdate._errors import DataError
from condupdate.data import open_dataset

__all__ = ["WINDS_FILE", "load_winds", "wind_speed"]

# The subset in the source tree.
WINDS_FILE = Path(__file__).resolve().parents[2] / "data" / "navy_winds_tropical_pacific.nc"


def wind_speed(uwnd: xr.DataArray, vwnd: xr.DataArray) -> xr.DataArray:
    """Compute the speed ``sqrt(u**2 + v**2)`` [m s-1] of a wind vector (u, v) [m s-1]."""
    speed = np.hypot(uwnd, vwnd)
    return speed.rename("wind_speed").assign_attrs(
        standard_name="wind_speed", long_name="speed of the monthly mean surface wind", units="m s-1"
    )


def load_winds(path: str | os.PathLike | None = None) -> xr.Dataset:
    """Load the tropical Pacific winds with the target and inputs of the wind-uncertainty case.

    Parameters
    ----------
    path : path, optional
        The subset file; default :data:`WINDS_FILE`.

    Returns
    -------
    xarray.Dataset
        Dims ``(time, lat, lon)``: 132 months (1982-01..1992-12, cftime dates on
        the first day of each month, as the SOI of ``iris-sample-data``) on a
        2.5-degree grid, 20S-20N, 120-280E. Variables:

        - ``wind_speed`` [m s-1], the target: speed of the monthly mean wind vector;
        - ``uwnd``, ``vwnd`` [m s-1], the wind components, from which a run takes
          large-scale inputs such as domain means (never the local values, whose
          speed is the target);
        - ``season_sin``, ``season_cos`` [1] on ``time``: sine and cosine of
          ``2 pi (month - 0.5) / 12``, the phase of the annual cycle.

    Raises
    ------
    FileNotFoundError
        If the subset file is missing.
    DataError
        If the file lacks ``uwnd`` or ``vwnd``.
    """
    path = Path(path) if path is not None else WINDS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"Wind subset {str(path)!r} not found. It ships in the source tree of condupdate; rebuild it with "
            "`python data/scripts/make_winds_subset.py` (needs the Debian package ferret-datasets)."
        )
    # condupdate's reader decodes times to cftime objects, as it decodes the
    # external SOI series, so the two time axes compare label by label.
    ds = open_dataset(path).load()
    missing = [name for name in ("uwnd", "vwnd") if name not in ds.data_vars]
    if missing:
        raise DataError(f"Wind subset {str(path)!r} lacks the variables {missing}; rebuild it with data/scripts/make_winds_subset.py.")

    ds["wind_speed"] = wind_speed(ds["uwnd"], ds["vwnd"])
    month = ds["time"].dt.month.astype("float64")
    phase = 2.0 * np.pi * (month - 0.5) / 12.0
    ds["season_sin"] = np.sin(phase).assign_attrs(units="1", long_name="sine of the phase of the annual cycle")
    ds["season_cos"] = np.cos(phase).assign_attrs(units="1", long_name="cosine of the phase of the annual cycle")
    return ds
