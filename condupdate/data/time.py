"""Numeric time for cftime axes, without converting calendars."""

from __future__ import annotations

import numpy as np
import xarray as xr

__all__ = ["decimal_year"]


def decimal_year(time: xr.DataArray) -> xr.DataArray:
    """Return the time coordinate as a decimal year in its own calendar.

    ``year + (dayofyear - 1) / days_in_year`` computed with the calendar of the
    data, so a 360_day year advances by 1/360 per day and a noleap year by 1/365.

    Parameters
    ----------
    time : xarray.DataArray
        Datetime-like values (cftime or numpy datetime64).

    Returns
    -------
    xarray.DataArray
        Same dims and coords as ``time``, float64, ``units="year"``.
    """
    if not (np.issubdtype(time.dtype, np.datetime64) or time.dtype == object):
        # Already numeric, for example a climatology opened with decode_times=False.
        return time.astype("float64").assign_attrs(units=time.attrs.get("units", ""))
    accessor = time.dt
    fraction = (accessor.dayofyear - 1 + accessor.hour / 24.0) / accessor.days_in_year
    out = (accessor.year + fraction).astype("float64")
    return out.assign_attrs(units="year", long_name="decimal year")
