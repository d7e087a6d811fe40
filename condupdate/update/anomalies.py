"""The anomaly store: weight anomalies per subset as a labelled DataArray, saved as netCDF."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from xarray.coding.variables import SerializationWarning

from condupdate._io import atomic_path
from condupdate.update.params import parameter_labels

__all__ = ["anomalies_to_dataarray", "save_anomalies", "load_anomalies", "anomaly_layout", "predictor_matrix"]


def anomalies_to_dataarray(
    anomalies: np.ndarray,
    subsets: Sequence[str],
    predictors: np.ndarray,
    predictor_names: Sequence[str],
    layout: list[tuple[str, tuple[int, ...]]],
) -> xr.DataArray:
    """Label an anomaly matrix ``(subset, parameter)``.

    Parameters
    ----------
    anomalies : array, shape (n_subsets, n_parameters)
        ``theta_k - theta0`` for each subset k.
    subsets : sequence of str
        Subset labels.
    predictors : array, shape (n_subsets, n_predictors)
        Predictor of each subset.
    predictor_names : sequence of str
        One name per predictor column; each becomes a coordinate on ``subset``.
    layout : list of (name, shape)
        From :func:`condupdate.update.params.parameter_layout`.

    Returns
    -------
    xarray.DataArray
        Dims ``(subset, parameter)``; coords ``subset``, ``parameter`` (flat index),
        ``tensor`` (owning tensor per element) and one coordinate per predictor;
        attrs ``predictors``, ``tensor_names`` and ``tensor_shapes`` (JSON).
    """
    anomalies = np.asarray(anomalies)
    predictors = np.asarray(predictors, dtype="float64").reshape(len(subsets), -1)
    if len(predictor_names) != predictors.shape[1]:
        raise ValueError(f"Got {len(predictor_names)} predictor names for {predictors.shape[1]} predictor columns.")
    coords: dict[str, object] = {
        "subset": np.asarray(list(subsets), dtype=str),
        "parameter": np.arange(anomalies.shape[1]),
        "tensor": ("parameter", parameter_labels(layout)),
    }
    for j, name in enumerate(predictor_names):
        coords[name] = ("subset", predictors[:, j])
    return xr.DataArray(
        anomalies,
        dims=("subset", "parameter"),
        coords=coords,
        name="anomaly",
        attrs={
            "long_name": "fine-tuned weights minus parent weights",
            "units": "1",
            "predictors": json.dumps(list(predictor_names)),
            "tensor_names": json.dumps([name for name, _ in layout]),
            "tensor_shapes": json.dumps([list(shape) for _, shape in layout]),
        },
    )


def predictor_matrix(anomalies: xr.DataArray) -> np.ndarray:
    """Return the subset predictors ``(n_subsets, n_predictors)`` stored on an anomaly DataArray."""
    names = json.loads(anomalies.attrs["predictors"])
    return np.stack([anomalies[name].values for name in names], axis=1)


def anomaly_layout(anomalies: xr.DataArray) -> list[tuple[str, tuple[int, ...]]]:
    """Return the ``(name, shape)`` layout recorded on an anomaly DataArray."""
    names = json.loads(anomalies.attrs["tensor_names"])
    shapes = json.loads(anomalies.attrs["tensor_shapes"])
    return [(n, tuple(s)) for n, s in zip(names, shapes, strict=True)]


def save_anomalies(anomalies: xr.DataArray, path: str | os.PathLike) -> Path:
    """Write the anomaly store to netCDF atomically; an existing file is replaced only on success."""
    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # A predictor named with a space is written as a data variable, and
        # load_anomalies makes it a coordinate again from the 'predictors' attribute.
        warnings.filterwarnings("ignore", message="coordinate .* has a space in its name", category=SerializationWarning)
        anomalies.to_netcdf(tmp, engine="netcdf4", format="NETCDF4")
    return path


def load_anomalies(path: str | os.PathLike) -> xr.DataArray:
    """Read an anomaly store written by :func:`save_anomalies` into memory."""
    with xr.open_dataset(path, engine="netcdf4") as ds:
        ds = ds.load()
    da = ds["anomaly"]
    # The CF 'coordinates' attribute separates names with spaces, so a predictor
    # whose name contains a space comes back as a data variable. The 'predictors'
    # attribute lists them all, and each becomes a coordinate on subset again.
    names = json.loads(da.attrs["predictors"])
    return da.assign_coords({name: ds[name] for name in names if name not in da.coords})
