"""Turn a validated configuration into datasets, features, subsets and predictors."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import xarray as xr

from condupdate import regimes
from condupdate._errors import DataError, SplitOverlapWarning
from condupdate.data import open_dataset, select
from condupdate.data.io import find_variable_groups
from condupdate.data.quirks import check_variable_name, normalize_names
from condupdate.jobs.config import DATASET_PREFIX, PredictorSpec, RunConfig, resolve_path

__all__ = [
    "Prepared",
    "build_inputs",
    "check_training_values",
    "per_sample",
    "prepare",
    "select_split",
    "training_climatology",
]


@dataclass
class Prepared:
    """Everything a run needs, still lazy where the input files are large."""

    config: RunConfig
    dataset: xr.Dataset  # the opened (and thinned) input files
    train: xr.Dataset  # features, targets and predictors of the training selection
    apply: xr.Dataset  # the same for the application selection
    features: list[str]  # input feature names, in column order
    targets: list[str]
    predictors: list[str]
    subsets: xr.DataArray  # subset label of each training sample, along some sample dims
    climatology: xr.Dataset  # training_mean inputs, computed from the training selection


def _open(config: RunConfig, dataset: xr.Dataset | None = None) -> xr.Dataset:
    # Targets and inputs become variables of predictions.nc and the saved model, so
    # a name that netCDF cannot store fails here rather than after training.
    for name in config.data.targets:
        check_variable_name(name, "Target variable (data.targets)")
    for spec in config.data.inputs:
        check_variable_name(spec.name, "Input name (data.inputs)")

    if dataset is not None:
        # Names in the configuration are NFC, as open_dataset makes those of files.
        ds = normalize_names(dataset, "dataset=")
    elif not config.data.paths:
        raise DataError("data.paths is empty; list the input files, or pass the data as dataset= to run().")
    elif any(p.startswith(DATASET_PREFIX) for p in config.data.paths):
        ds = _open_registered(config.data.paths)
    else:
        paths = [resolve_path(p) for p in config.data.paths]
        try:
            # Sample dims of length one (a single member, say) must not be squeezed away.
            ds = open_dataset(
                paths,
                engine=config.data.engine,
                keep_dims=tuple(config.data.sample_dims),
                group=config.data.group,
                chunks=_chunks(config),
            )
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{err} (data.paths; paths in a configuration file are read from that file's folder)") from err

        # A variable missing here may sit in a netCDF4 or zarr group, which needs data.group.
        opened = "/" + (config.data.group or "").strip("/")
        requested = [(name, "data.targets") for name in config.data.targets]
        requested += [(spec.variable, "data.inputs") for spec in config.data.inputs if spec.variable is not None]
        for name, key in requested:
            if name in ds.data_vars:
                continue
            holders = {
                path: [group for group in groups if group != opened]
                for path, groups in find_variable_groups(paths, name).items()
            }
            listing = "; ".join(f"{path!r}: {groups}" for path, groups in holders.items() if groups)
            if listing:
                where = "the root group" if opened == "/" else f"group {opened!r} (data.group)"
                suggested = next(groups for groups in holders.values() if groups)[0].strip("/") or "/"
                found_here = list(dict.fromkeys(other for other, _ in requested if other in ds.data_vars))
                fix = (
                    f"A run reads one group, and {found_here} are in {where}: merge the groups with xarray "
                    "and pass the result as run(config, dataset=...), or write one file per group."
                    if found_here
                    else f"Set 'data.group: {suggested}' in the configuration, or open_dataset(..., group=...) in Python."
                )
                raise DataError(
                    f"Variable {name!r} ({key}) not found in {where} of {[str(p) for p in paths]}, but these "
                    f"files contain it in other groups: {listing}. {fix}"
                )
    for dim, step in config.data.thin.items():
        if dim not in ds.dims:
            raise DataError(f"data.thin names dimension {dim!r}, which the input files lack; they have {list(ds.dims)}.")
        ds = ds.isel({dim: slice(None, None, step)})
    for name in config.data.targets:
        if name not in ds.data_vars:
            raise DataError(
                f"Target variable {name!r} (data.targets) not found in {config.data.paths or 'the dataset'}; "
                f"the files hold {sorted(map(str, ds.data_vars))}."
            )
    return ds


def _chunks(config: RunConfig) -> dict[str, int | str] | str:
    if config.data.memory_budget_mb is None:
        return "auto"
    # Streamed training reads whole steps of the first sample dim: chunks that span
    # the other sample dims read a contiguous variable in one run per step, where
    # square tiles of the same size read about ten times slower.
    first, *others = config.data.sample_dims
    return {first: "auto", **{d: -1 for d in others}}


def _open_registered(paths: list[str]) -> xr.Dataset:
    # "dataset:NAME" names the data of a loader in condupdate.datasets.LOADERS.
    from condupdate.datasets import LOADERS, load_dataset

    if len(paths) != 1:
        raise DataError(f"data.paths = {paths!r}: a 'dataset:NAME' entry must be the only path; remove the others.")
    name = paths[0][len(DATASET_PREFIX) :]
    if name not in LOADERS:
        raise DataError(f"data.paths: unknown dataset {name!r}; known datasets: {sorted(LOADERS)}.")
    return load_dataset(name)


def training_climatology(train: xr.Dataset, config: RunConfig) -> xr.Dataset:
    """Compute the ``training_mean`` inputs: means over the split dim of the training selection.

    The result is computed (it is small: one field without the split dim) and is
    stored with a saved model, so new data are described with the statistics of
    the training selection, never with their own.
    """
    fields = {}
    for spec in config.data.inputs:
        if spec.transform != "training_mean":
            continue
        if spec.variable not in train.data_vars:
            raise DataError(f"Input {spec.name!r}: variable {spec.variable!r} not found; the files contain {sorted(map(str, train.data_vars))}.")
        field = train[spec.variable]
        fields[spec.name] = field.mean(config.split.dim, skipna=True).assign_attrs(field.attrs).reset_coords(drop=True)
    return xr.Dataset(fields).compute()


def _feature(ds: xr.Dataset, climatology: xr.Dataset, spec) -> xr.DataArray:
    if spec.coordinate is not None:
        if spec.coordinate not in ds.coords:
            raise DataError(f"Input {spec.name!r}: coordinate {spec.coordinate!r} not found; the files have {sorted(map(str, ds.coords))}.")
        return regimes.coordinate_predictor(ds, spec.coordinate)
    if spec.transform == "training_mean":
        field = climatology[spec.name]
        try:
            xr.align(field, ds, join="exact", exclude=[d for d in ds.dims if d not in field.dims])
        except ValueError as err:
            raise DataError(
                f"Input {spec.name!r}: the training climatology of {spec.variable!r} is on other "
                f"coordinates than the data ({err}); use data on the training grid."
            ) from err
        return field
    if spec.variable not in ds.data_vars:
        raise DataError(f"Input {spec.name!r}: variable {spec.variable!r} not found; the files contain {sorted(map(str, ds.data_vars))}.")
    field = ds[spec.variable]
    if spec.transform == "domain_mean":
        return regimes.domain_mean(field)
    return field


def build_inputs(ds: xr.Dataset, config: RunConfig, climatology: xr.Dataset) -> xr.Dataset:
    """Build every input and predictor of ``config`` from ``ds``; no target is read.

    Returns a Dataset with one variable per entry of ``data.inputs`` and one
    ``predictor:NAME`` variable per predictor, on the dims and coordinates of ``ds``.
    """
    features = xr.Dataset({spec.name: _feature(ds, climatology, spec) for spec in config.data.inputs})
    predictors = {
        f"predictor:{spec.name}": _predictor(ds, features, spec).reset_coords(drop=True) for spec in config.predictors
    }
    for name, values in predictors.items():
        extra = [d for d in values.dims if d not in config.data.sample_dims]
        if extra:
            raise DataError(f"Predictor {name.split(':', 1)[1]!r} has dimensions {extra} outside data.sample_dims.")
    inputs = xr.merge([features, xr.Dataset(predictors)], compat="override", join="left").drop_attrs(deep=False)
    return inputs.assign_coords({d: ds[d] for d in config.data.sample_dims if d in ds.coords})


def _predictor(ds: xr.Dataset, features: xr.Dataset, spec: PredictorSpec) -> xr.DataArray:
    if spec.input is not None:
        return features[spec.input]
    if spec.coordinate is not None:
        return regimes.coordinate_predictor(ds, spec.coordinate)
    try:
        series_ds = open_dataset(resolve_path(spec.path))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"Predictor file {spec.path!r} (predictors[].path) not found; paths in a configuration file are read from that file's folder.") from err
    if spec.variable not in series_ds.data_vars:
        raise DataError(f"Predictor variable {spec.variable!r} not found in {spec.path!r}; it contains {sorted(map(str, series_ds.data_vars))}.")
    return regimes.external_predictor(series_ds[spec.variable], ds, spec.dim)


def prepare(config: RunConfig, dataset: xr.Dataset | None = None) -> Prepared:
    """Open the inputs, build features and predictors, split them and assign subsets.

    ``dataset``, when given, is used instead of the files in ``data.paths``.
    Statistics that need the training data (climatology inputs) are computed from
    the training selection only. Predictors come from inputs, coordinates or
    external series, never from targets of the application selection.
    """
    ds = _open(config, dataset)
    split = config.split
    train_raw = select_split(ds, config, "train")

    climatology = training_climatology(train_raw, config)
    inputs = build_inputs(ds, config, climatology)
    combined = xr.merge([inputs, ds[config.data.targets]], compat="override", join="left").drop_attrs(deep=False)
    combined = combined.assign_coords({d: ds[d] for d in config.data.sample_dims if d in ds.coords})
    for name in config.data.targets:
        combined[name].attrs = ds[name].attrs
    train = select_split(combined, config, "train")
    apply = select_split(combined, config, "apply")
    overlap = np.intersect1d(np.asarray(train[split.dim].values), np.asarray(apply[split.dim].values))
    if overlap.size:
        warnings.warn(
            f"split.train and split.apply share {overlap.size} steps along {split.dim!r} "
            f"({overlap[0]} .. {overlap[-1]}); skill on the application selection then partly measures "
            "training data. Make the two selections disjoint.",
            SplitOverlapWarning,
            stacklevel=2,
        )

    predictor_names = [spec.name for spec in config.predictors]
    subsets = _subsets(config, train, f"predictor:{predictor_names[0]}")
    feature_names = [s.name for s in config.data.inputs if s.feature]
    return Prepared(
        config, ds, train, apply, feature_names, list(config.data.targets), predictor_names, subsets, climatology
    )


def select_split(ds: xr.Dataset, config: RunConfig, key: str) -> xr.Dataset:
    """Select ``split.train`` or ``split.apply`` (``key``) of ``config`` from ``ds``."""
    split = config.split
    value = getattr(split, key)
    try:
        return select(ds, split.dim, value if split.labels else tuple(value))
    except DataError as err:
        raise DataError(f"split.{key} = {value!r}: {err}") from err


def _subsets(config: RunConfig, train: xr.Dataset, first_predictor: str) -> xr.DataArray:
    spec = config.subsets
    dim = spec.dim or config.split.dim
    if spec.method == "window":
        labels = regimes.window_subsets(train, dim, spec.size)
    elif spec.method == "label":
        labels = regimes.label_subsets(train, dim)
    else:
        labels = regimes.quantile_subsets(train[first_predictor].compute(), spec.bins)
    n_subsets = len(regimes.subset_order(labels))
    if n_subsets < 2:
        fix = {
            "window": f"use a subsets.size below {train.sizes.get(dim, 0)}, the training length along {dim!r}",
            "label": f"give split.train more than one {dim!r} label",
            "quantile": "check that the first predictor varies over the training selection",
        }[spec.method]
        raise DataError(
            f"Subsets ({spec.method} along {dim!r}, size {spec.size}, bins {spec.bins}) give {n_subsets} subset of "
            f"the training selection; the weight regressor needs at least 2: {fix}."
        )
    return labels


def per_sample(values: xr.DataArray, like: xr.Dataset, sample_dims: list[str]) -> np.ndarray:
    """Broadcast ``values`` over the sample dims of ``like`` and flatten in stacking order."""
    template = like[sample_dims[0]].reset_coords(drop=True)
    full = values.reset_coords(drop=True)
    for d in sample_dims:
        full = full.broadcast_like(like[d].reset_coords(drop=True))
    full = full.broadcast_like(template).transpose(*sample_dims)
    return np.asarray(full.values).reshape(-1)


def check_training_values(prep: Prepared, X: np.ndarray, Y: np.ndarray, P: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Raise :class:`DataError` for an all-NaN column or subset of the training selection.

    ``X`` (sample, feature), ``Y`` (sample, target) and ``P`` (sample, predictor)
    are the stacked training matrices and ``labels`` the subset label of each
    sample. Returns the boolean mask of complete samples: every input and
    predictor finite, and at least one target finite.
    """
    split = prep.config.split
    where = f"the training selection (split.train = {split.train!r} along {split.dim!r})"
    columns = [("Target variable", "data.targets", prep.targets, Y), ("Input", "data.inputs", prep.features, X)]
    columns.append(("Predictor", "predictors", prep.predictors, P))
    for kind, key, names, matrix in columns:
        for name, finite in zip(names, np.isfinite(matrix).any(0), strict=True):
            if not finite:
                raise DataError(
                    f"{kind} {name!r} ({key}) is NaN at every sample of {where}; check its _FillValue and "
                    "mask in the files, or choose a split.train range where it has data."
                )

    valid = np.isfinite(X).all(1) & np.isfinite(Y).any(1) & np.isfinite(P).all(1)
    for label in regimes.subset_order(prep.subsets):
        if not valid[labels.astype(str) == label].any():
            raise DataError(
                f"Subset {str(label)!r} ({prep.config.subsets.method} along "
                f"{prep.config.subsets.dim or split.dim!r}) has no complete sample: every sample has a NaN input, "
                "target or predictor. Move split.train off the missing steps or change subsets.size."
            )
    return valid
