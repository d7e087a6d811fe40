"""Rebuild data/navy_winds_tropical_pacific.nc from the Debian ferret-datasets file.

The source is ``monthly_navy_winds.cdf`` of the Debian package ``ferret-datasets``
(NOAA PMEL, public domain): monthly zonal and meridional surface winds UWND,
VWND [m s-1], 1982-01 to 1992-12, on a 2.5-degree global grid. The subset keeps
the tropical Pacific, 20S-20N and 120E-80W (120-280 degrees east), and changes
only names, units spelling and time stamps:

- dims TIME, FNOCY, FNOCX become time, lat, lon; longitudes lie in [0, 360);
- units ``M/S`` become the CF spelling ``m s-1``;
- each monthly mean, stamped in the source at the middle of its month, is
  stamped at the first day of that month, as the monthly Southern Oscillation
  Index of ``iris-sample-data`` (SOI_Darwin.nc) is. condupdate aligns external
  predictors by label, so the two time axes must use the same stamps.

Usage::

    python data/scripts/make_winds_subset.py [SOURCE] [--out PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

SOURCE = Path("/usr/share/ferret-vis/data/monthly_navy_winds.cdf")
OUTPUT = Path(__file__).resolve().parents[1] / "navy_winds_tropical_pacific.nc"
LATITUDE_RANGE = (-20.0, 20.0)  # [degrees_north], inclusive
LONGITUDE_RANGE = (120.0, 280.0)  # [degrees_east], inclusive


def make_subset(source: str | os.PathLike = SOURCE) -> xr.Dataset:
    """Read the Debian file and return the tropical Pacific subset (time, lat, lon) in memory."""
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(
            f"Wind file {str(source)!r} not found. Install the Debian package ferret-datasets "
            "(apt-get install ferret-datasets) or pass the file's path."
        )
    with xr.open_dataset(source) as raw:
        ds = raw[["UWND", "VWND"]].rename({"TIME": "time", "FNOCY": "lat", "FNOCX": "lon"}).load()

    # Longitudes run 20..377.5 in the source; wrap them into [0, 360) and sort.
    ds = ds.assign_coords(lon=ds["lon"] % 360.0).sortby("lon")
    ds = ds.sel(lat=slice(*LATITUDE_RANGE), lon=slice(*LONGITUDE_RANGE))
    months = pd.DatetimeIndex(ds["time"].values).to_period("M").to_timestamp()
    ds = ds.assign_coords(time=np.asarray(months, dtype="datetime64[ns]"))

    out = xr.Dataset(
        {
            "uwnd": ds["UWND"].astype("float32").assign_attrs(
                standard_name="eastward_wind", long_name="monthly mean zonal surface wind", units="m s-1"
            ),
            "vwnd": ds["VWND"].astype("float32").assign_attrs(
                standard_name="northward_wind", long_name="monthly mean meridional surface wind", units="m s-1"
            ),
        },
        coords={
            "time": ("time", ds["time"].values, {"standard_name": "time", "long_name": "first day of the month"}),
            "lat": ("lat", ds["lat"].values, {"standard_name": "latitude", "units": "degrees_north"}),
            "lon": ("lon", ds["lon"].values, {"standard_name": "longitude", "units": "degrees_east"}),
        },
        attrs={
            "title": "Monthly surface winds over the tropical Pacific, 1982-1992",
            "source": "monthly_navy_winds.cdf of the Debian package ferret-datasets (NOAA PMEL, public domain)",
            "history": "subset by data/scripts/make_winds_subset.py of condupdate",
            "license": "public domain (US Government work)",
        },
    )
    return out


def write_subset(ds: xr.Dataset, path: str | os.PathLike = OUTPUT) -> Path:
    """Write ``ds`` to ``path`` as compressed netCDF4, replacing the file only once the write succeeded."""
    path = Path(path)
    encoding = {name: {"zlib": True, "complevel": 4} for name in ds.data_vars}
    encoding["time"] = {"units": "days since 1982-01-01", "calendar": "standard", "dtype": "int32"}
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        ds.to_netcdf(tmp, encoding=encoding, engine="netcdf4")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", default=str(SOURCE), help="monthly_navy_winds.cdf of ferret-datasets")
    parser.add_argument("--out", default=str(OUTPUT), help="netCDF file to write")
    args = parser.parse_args(argv)
    path = write_subset(make_subset(args.source), args.out)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.2f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
