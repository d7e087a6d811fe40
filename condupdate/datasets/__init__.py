"""Loaders for the use-case data and generators of synthetic benchmark problems.

A configuration file names a loader's data as ``dataset:NAME`` in ``data.paths``,
for example ``paths: ["dataset:amoc-tipping"]``; :func:`load_dataset` then calls
the loader registered under ``NAME`` in :data:`LOADERS`.
"""

from __future__ import annotations

import importlib

import xarray as xr

from condupdate.datasets.synthetic import LinearWeightsProblem, linear_weights_problem

__all__ = ["LOADERS", "LinearWeightsProblem", "linear_weights_problem", "load_dataset"]

# Name -> "module:function". Modules are imported only when their data are
# asked for, so that reading a configuration stays cheap.
LOADERS: dict[str, str] = {
    "amoc-tipping": "condupdate.datasets.amoc:load_amoc",
    "deep-density": "condupdate.datasets.ocean:load_deep_density",
    "cross-model": "condupdate.datasets.cmip:load_cross_model",
    "wind-uncertainty": "condupdate.datasets.winds:load_winds",
    "scenarios": "condupdate.datasets.scenarios:load_scenarios",
}


def load_dataset(name: str) -> xr.Dataset:
    """Return the Dataset of the loader registered as ``name`` in :data:`LOADERS`."""
    if name not in LOADERS:
        raise KeyError(f"Unknown dataset {name!r} (dataset:NAME in data.paths); known datasets: {sorted(LOADERS)}.")
    module, function = LOADERS[name].split(":")
    return getattr(importlib.import_module(module), function)()
