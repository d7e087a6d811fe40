"""Rebuild ``data/levitus_2deg.nc`` from the Levitus annual climatology of Debian's ferret-datasets.

Source: ``/usr/share/ferret-vis/data/levitus_climatology.cdf`` of the Debian package
``ferret-datasets`` (NOAA, public domain): annual in-situ temperature [deg C] and
practical salinity on 20 depths (0..5000 m) of a 1-degree grid.

The subset keeps every depth and averages 2 x 2 blocks of cells to a 2-degree
grid, so it is small enough (about 1 MB) to ship with the source tree. A block
mean skips land cells, so a coastal block keeps the mean of its ocean cells.

Usage::

    python data/scripts/make_levitus_subset.py [--source FILE] [--out FILE]

The output is written to a temporary file beside ``--out`` and renamed only when
complete; an existing ``--out`` is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

DEFAULT_SOURCE = Path("/usr/share/ferret-vis/data/levitus_climatology.cdf")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "levitus_2deg.nc"
BLOCK = 2  # cells per side of one block mean: 1-degree to 2-degree grid


def make_subset(source: Path) -> xr.Dataset:
    """Read the Ferret file, clean its quirks and average 2 x 2 blocks of cells.

    Ferret quirks handled here: axes named ``ZAXLEVITR``, ``YAXLEVITR`` and
    ``XAXLEVITR``; longitudes 20.5..379.5 (wrapped to 0..360 and sorted); missing
    values -1e10 (masked by xarray's CF decoding of ``missing_value``); upper-case
    units ``DEG C``, ``PPT`` and ``METERS``. The file has no time axis.
    """
    ds = xr.open_dataset(source, decode_times=False, engine="netcdf4").load()
    ds = ds.rename({"ZAXLEVITR": "depth", "YAXLEVITR": "lat", "XAXLEVITR": "lon"})
    ds = ds[["TEMP", "SALT"]].drop_vars("ZAXLEVITRedges", errors="ignore")

    # Longitudes 20.5..379.5 become 0.5..359.5 in increasing order.
    ds = ds.assign_coords(lon=ds["lon"] % 360.0).sortby("lon")

    # Block means in float64, then stored as float32 like the source.
    coarse = ds.astype("float64").coarsen(lat=BLOCK, lon=BLOCK).mean()
    out = xr.Dataset(
        {
            "temperature": coarse["TEMP"].astype("float32").assign_attrs(
                standard_name="sea_water_temperature",
                long_name="in-situ sea water temperature",
                units="degC",
            ),
            "salinity": coarse["SALT"].astype("float32").assign_attrs(
                standard_name="sea_water_practical_salinity",
                long_name="practical salinity",
                units="1",
            ),
        },
        coords={
            "depth": ("depth", ds["depth"].values, {"standard_name": "depth", "units": "m", "positive": "down", "axis": "Z"}),
            "lat": ("lat", coarse["lat"].values, {"standard_name": "latitude", "units": "degrees_north", "axis": "Y"}),
            "lon": ("lon", coarse["lon"].values, {"standard_name": "longitude", "units": "degrees_east", "axis": "X"}),
        },
    )
    out.attrs = {
        "title": "Levitus annual temperature and salinity climatology, 2-degree block means",
        "source": "levitus_climatology.cdf of the Debian package ferret-datasets (NOAA)",
        "license": "public domain (NOAA)",
        "history": "made by data/scripts/make_levitus_subset.py: 2 x 2 block means of the 1-degree grid, land cells skipped",
    }
    return out


def _encoding(ds: xr.Dataset) -> dict:
    return {name: {"zlib": True, "complevel": 4, "_FillValue": np.float32(np.nan)} for name in ds.data_vars}


def write_subset(ds: xr.Dataset, out: Path, overwrite: bool = False) -> Path:
    """Write ``ds`` to ``out`` through a temporary file, refusing to replace a file unless ``overwrite``."""
    if out.exists() and not overwrite:
        raise FileExistsError(f"Output file {str(out)!r} exists; pass --overwrite to replace it or choose another --out.")
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(suffix=".nc.tmp", dir=out.parent)
    os.close(handle)
    try:
        ds.to_netcdf(tmp, format="NETCDF4", encoding=_encoding(ds))
        os.chmod(tmp, 0o644)  # mkstemp creates the file readable by its owner only
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="Levitus climatology file of ferret-datasets")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="netCDF file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    if not args.source.is_file():
        parser.error(
            f"source file {str(args.source)!r} not found; install it with "
            "apt-get install ferret-datasets, or pass --source"
        )
    write_subset(make_subset(args.source), args.out, overwrite=args.overwrite)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
