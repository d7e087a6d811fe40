"""Skill metrics, extrapolation distance and the pattern-scaling baseline.

Every public function takes and returns xarray objects and stays lazy when the
inputs are dask-backed. Area weighting uses the cosine of latitude, and missing
cells (NaN) are left out of every mean unless ``skipna=False``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from condupdate._errors import DataError
from condupdate._io import atomic_path

__all__ = [
    "PatternScaling",
    "bias",
    "crps_ensemble",
    "crps_gaussian",
    "ensemble_skill_table",
    "gaussian_spread_skill_ratio",
    "extrapolation_distance",
    "spread_skill_ratio",
    "latitude_weights",
    "mae",
    "rmse",
    "skill_table",
    "write_skill_csv",
]

# Coordinate names tried first, in this order, when looking for latitude.
_LATITUDE_NAMES = ("latitude", "lat", "nav_lat")
# Spellings of "degrees north" that the CF conventions accept for latitude units.
_LATITUDE_UNITS = ("degrees_north", "degree_north", "degree_N", "degrees_N", "degreeN", "degreesN")
# Name of the dim that lists several predictors side by side.
_PREDICTOR_DIM = "predictor"
_SKILL_COLUMNS = ("rmse", "mae", "bias")
_SKILL_LONG_NAMES = {
    "rmse": "root-mean-square error",
    "mae": "mean absolute error",
    "bias": "mean error (prediction minus truth)",
    "crps": "continuous ranked probability score",
}
_RATIO_ATTRS = {"units": "1", "long_name": "spread-skill ratio"}


# --------------------------------------------------------------------------- #
# Area weights
# --------------------------------------------------------------------------- #


def latitude_weights(obj: xr.DataArray | xr.Dataset, lat: str | None = None) -> xr.DataArray:
    """Compute cos(latitude) area weights for a regular or curvilinear grid.

    Parameters
    ----------
    obj : xarray.DataArray or xarray.Dataset
        Field whose latitude coordinate gives the weights.
    lat : str, optional
        Name of the latitude coordinate [degrees_north]. When omitted, the first
        coordinate named ``latitude``, ``lat`` or ``nav_lat`` is used, and failing
        those a coordinate whose ``standard_name`` is ``latitude`` or whose
        ``units`` are ``degrees_north`` (or another CF spelling of it).

    Returns
    -------
    xarray.DataArray
        Weights [1] on the dims and coords of the latitude coordinate, named
        ``latitude_weights``. Values lie in [0, 1], and are exactly 0 at the poles.

    Raises
    ------
    DataError
        If no latitude coordinate is found, or if ``lat`` is not a coordinate of
        ``obj``, or if in-memory latitudes lie outside [-90, 90].

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> field = xr.DataArray(np.zeros((3, 2)), dims=("lat", "lon"),
    ...                      coords={"lat": [-60.0, 0.0, 60.0], "lon": [0.0, 180.0]})
    >>> latitude_weights(field).round(3).values
    array([0.5, 1. , 0.5])
    """
    name = _find_latitude(obj) if lat is None else lat
    if name not in obj.coords:
        raise DataError(
            f"lat={name!r} is not a coordinate of the input, which has coordinates "
            f"{sorted(map(str, obj.coords))}. Pass the name of the latitude coordinate."
        )
    latitude = obj.coords[name]

    # Only in-memory values are checked, because checking a dask-backed
    # coordinate would compute it.
    if not _is_dask(latitude) and bool((np.abs(latitude) > 90.0).any()):
        raise DataError(
            f"Latitude coordinate {name!r} has values outside [-90, 90] degrees "
            f"(range {float(latitude.min())} to {float(latitude.max())}). "
            "Give latitudes in degrees north."
        )

    # In floating point cos(90°) is about 6e-17, and latitudes a rounding error
    # beyond ±90 give tiny negative values, so weights there are set to 0.
    weights = np.cos(np.deg2rad(latitude)).where(np.abs(latitude) < 90.0, 0.0)
    weights = weights.rename("latitude_weights")
    weights.attrs = {"units": "1", "long_name": "cosine of latitude"}
    return weights


def _find_latitude(obj: xr.DataArray | xr.Dataset) -> Hashable:
    for name in _LATITUDE_NAMES:
        if name in obj.coords:
            return name

    by_attrs = [
        name
        for name, coord in obj.coords.items()
        if coord.attrs.get("standard_name") == "latitude" or coord.attrs.get("units") in _LATITUDE_UNITS
    ]
    if len(by_attrs) == 1:
        return by_attrs[0]
    if len(by_attrs) > 1:
        raise DataError(
            f"Several coordinates look like latitude: {sorted(map(str, by_attrs))}. "
            "Pass the one to use as lat=."
        )
    raise DataError(
        f"No latitude coordinate found among coordinates {sorted(map(str, obj.coords))}. "
        "Name it 'lat' or 'latitude', set its standard_name to 'latitude' or its units "
        "to 'degrees_north', or pass its name as lat=."
    )


# --------------------------------------------------------------------------- #
# Error metrics
# --------------------------------------------------------------------------- #


def rmse(
    prediction: xr.DataArray,
    truth: xr.DataArray,
    dim: str | Iterable[Hashable] | None = None,
    weights: xr.DataArray | None = None,
    skipna: bool = True,
) -> xr.DataArray:
    """Compute the root-mean-square error of ``prediction`` against ``truth``.

    Parameters
    ----------
    prediction, truth : xarray.DataArray
        Predicted and true fields in the same units, for example (time, lat, lon)
        [K]. Both must carry identical coordinates on shared dims. A mismatch
        raises DataError rather than aligning to the intersection.
    dim : str or sequence of str, optional
        Dims to reduce. By default all dims are reduced.
    weights : xarray.DataArray, optional
        Non-negative weights without NaN on a subset of the fields' dims, such as
        :func:`latitude_weights` on lat.
    skipna : bool, default True
        Leave out cells where the prediction or the truth is NaN. The weighted
        mean is then normalised by the sum of weights of the valid cells only.
        With ``False`` any NaN makes the result NaN.

    Returns
    -------
    xarray.DataArray
        RMSE on the dims not reduced, named ``rmse``, with the ``units`` of
        ``truth`` and a ``long_name``. Lazy when an input is dask-backed.

    Examples
    --------
    >>> import xarray as xr
    >>> truth = xr.DataArray([1.0, 2.0, 3.0], dims="time", attrs={"units": "K"})
    >>> float(rmse(truth + 2.0, truth))
    2.0
    """
    error = _error(prediction, truth, dim, weights)
    result = np.sqrt(_mean(error**2, dim, weights, skipna))
    return _label(result, "rmse", truth)


def mae(
    prediction: xr.DataArray,
    truth: xr.DataArray,
    dim: str | Iterable[Hashable] | None = None,
    weights: xr.DataArray | None = None,
    skipna: bool = True,
) -> xr.DataArray:
    """Compute the mean absolute error of ``prediction`` against ``truth``.

    Parameters and missing-value handling are those of :func:`rmse`.

    Returns
    -------
    xarray.DataArray
        MAE on the dims not reduced, named ``mae``, with the ``units`` of ``truth``.

    Examples
    --------
    >>> import xarray as xr
    >>> truth = xr.DataArray([1.0, 2.0, 3.0], dims="time")
    >>> float(mae(truth + xr.DataArray([1.0, -1.0, 4.0], dims="time"), truth))
    2.0
    """
    error = _error(prediction, truth, dim, weights)
    result = _mean(abs(error), dim, weights, skipna)
    return _label(result, "mae", truth)


def bias(
    prediction: xr.DataArray,
    truth: xr.DataArray,
    dim: str | Iterable[Hashable] | None = None,
    weights: xr.DataArray | None = None,
    skipna: bool = True,
) -> xr.DataArray:
    """Compute the mean error ``prediction - truth``, positive where predictions are too high.

    Parameters and missing-value handling are those of :func:`rmse`.

    Returns
    -------
    xarray.DataArray
        Bias on the dims not reduced, named ``bias``, with the ``units`` of ``truth``.

    Examples
    --------
    >>> import xarray as xr
    >>> truth = xr.DataArray([1.0, 2.0, 3.0], dims="time")
    >>> float(bias(truth + xr.DataArray([1.0, -1.0, 3.0], dims="time"), truth))
    1.0
    """
    error = _error(prediction, truth, dim, weights)
    result = _mean(error, dim, weights, skipna)
    return _label(result, "bias", truth)


def _error(
    prediction: xr.DataArray,
    truth: xr.DataArray,
    dim: str | Iterable[Hashable] | None,
    weights: xr.DataArray | None,
) -> xr.DataArray:
    """Validate the metric arguments and return ``prediction - truth``."""
    for argument, value in (("prediction", prediction), ("truth", truth)):
        if not isinstance(value, xr.DataArray):
            raise TypeError(f"{argument} must be an xarray.DataArray, got {type(value).__name__}.")

    # An outer subtraction would silently keep only the overlap of two differing
    # grids or periods, so coordinates must match exactly.
    try:
        prediction, truth = xr.align(prediction, truth, join="exact")
    except ValueError as err:
        raise DataError(
            f"prediction and truth have different coordinates ({err}). "
            "Select or interpolate them onto the same grid and period first."
        ) from err
    error = prediction - truth

    present = set(error.dims)
    missing = [name for name in _dims_list(dim) if name not in present]
    if missing:
        raise DataError(f"dim {missing} not found in the fields, which have dims {list(error.dims)}.")
    if weights is not None:
        if not isinstance(weights, xr.DataArray):
            raise TypeError(f"weights must be an xarray.DataArray, got {type(weights).__name__}.")
        extra = [name for name in weights.dims if name not in present]
        if extra:
            raise DataError(
                f"weights have dims {extra} that the fields lack (fields: {list(error.dims)}). "
                "Give weights on a subset of the fields' dims."
            )
    return error


def _mean(
    values: xr.DataArray,
    dim: str | Iterable[Hashable] | None,
    weights: xr.DataArray | None,
    skipna: bool,
) -> xr.DataArray:
    if weights is None:
        return values.mean(dim=dim, skipna=skipna)
    # DataArrayWeighted.mean divides by the summed weights of the non-NaN cells
    # only, so missing cells do not pull the mean towards zero.
    return values.weighted(weights).mean(dim=dim, skipna=skipna)


def _label(result: xr.DataArray, name: str, truth: xr.DataArray) -> xr.DataArray:
    result = result.rename(name)
    result.attrs = {"long_name": _SKILL_LONG_NAMES[name]}
    if "units" in truth.attrs:
        result.attrs["units"] = truth.attrs["units"]
    return result


def _dims_list(dim: str | Iterable[Hashable] | None) -> list[Hashable]:
    if dim is None:
        return []
    if isinstance(dim, str):
        return [dim]
    return list(dim)


def _is_dask(obj: xr.DataArray) -> bool:
    return obj.chunks is not None


# --------------------------------------------------------------------------- #
# Extrapolation distance
# --------------------------------------------------------------------------- #


def extrapolation_distance(
    predictor: xr.DataArray,
    train_predictor: xr.DataArray,
    dim: str | None = None,
) -> xr.DataArray:
    """Measure how far each predictor value lies outside the training range.

    The distance is the gap between a value and the nearest end of the training
    range [min, max], divided by the training standard deviation. It is 0 inside
    the range and positive beyond either end.

    Parameters
    ----------
    predictor : xarray.DataArray
        Predictor of the application samples, any dims, in the units of
        ``train_predictor``. A dim named ``predictor`` lists several predictors.
    train_predictor : xarray.DataArray
        Predictor of the training subsets or samples. With a ``predictor`` dim,
        its labels must match those of ``predictor`` and each predictor gets its
        own range and spread.
    dim : str, optional
        Dim of ``train_predictor`` over which min, max and standard deviation are
        taken. By default all its dims except ``predictor``.

    Returns
    -------
    xarray.DataArray
        Distance [1] on the dims of ``predictor`` (broadcast against any dims of
        ``train_predictor`` that are not reduced), with attrs ``units`` and
        ``long_name``. NaN where the predictor is NaN. Lazy under dask.

    Raises
    ------
    DataError
        If a training predictor does not vary (zero or undefined sample standard
        deviation). For a dask-backed ``train_predictor`` this is raised when the
        result is computed.

    Examples
    --------
    >>> import xarray as xr
    >>> train = xr.DataArray([0.0, 1.0, 2.0], dims="subset")  # sample std 1
    >>> extrapolation_distance(xr.DataArray([1.5, 4.0, -0.5], dims="time"), train).values
    array([0. , 2. , 0.5])
    """
    if dim is None:
        reduce_dims = [name for name in train_predictor.dims if name != _PREDICTOR_DIM]
    else:
        if dim not in train_predictor.dims:
            raise DataError(
                f"dim={dim!r} not found in train_predictor, which has dims {list(train_predictor.dims)}."
            )
        reduce_dims = [dim]
    if not reduce_dims:
        raise DataError(
            f"train_predictor has no dim to take the training range over (dims {list(train_predictor.dims)}). "
            "Give it one value per training subset or sample."
        )

    # Range and sample standard deviation (ddof=1) of the training predictor.
    low = train_predictor.min(reduce_dims)
    high = train_predictor.max(reduce_dims)
    spread = train_predictor.std(reduce_dims, ddof=1)
    if not _is_dask(spread):
        _check_spread(spread)

    try:
        predictor, low, high, spread = xr.align(predictor, low, high, spread, join="exact")
    except ValueError as err:
        raise DataError(
            f"predictor and train_predictor have different labels on shared dims ({err}). "
            "Give both the same predictor names."
        ) from err

    distance = xr.apply_ufunc(
        _distance_outside_range,
        predictor,
        low,
        high,
        spread,
        dask="parallelized",
        output_dtypes=[np.result_type(predictor.dtype, np.float64)],
    )
    distance = distance.rename("extrapolation_distance")
    distance.attrs = {"units": "1", "long_name": "extrapolation distance in training standard deviations"}
    return distance


def _check_spread(spread: xr.DataArray) -> None:
    # NaN counts as no spread: it means fewer than two training values.
    no_spread = ~(spread > 0)
    if not bool(no_spread.any()):
        return
    where = ""
    if _PREDICTOR_DIM in spread.dims:
        other_dims = [name for name in spread.dims if name != _PREDICTOR_DIM]
        labels = spread[_PREDICTOR_DIM].values[no_spread.any(other_dims).values]
        where = f" for predictor {labels.tolist()}"
    raise DataError(
        f"The training predictor does not vary{where}: its sample standard deviation is 0, "
        "or undefined because it has fewer than two values, so no distance in standard "
        "deviations exists. Use training subsets with at least two distinct predictor values."
    )


def _distance_outside_range(
    values: np.ndarray, low: np.ndarray, high: np.ndarray, spread: np.ndarray
) -> np.ndarray:
    """Return max(values - high, low - values, 0) / spread, elementwise."""
    if np.any(~(spread > 0)):
        # Reached only for dask-backed input, where the wrapper cannot check early.
        raise DataError(
            "The training predictor does not vary: its sample standard deviation is 0 or "
            "undefined. Use training subsets with at least two distinct predictor values."
        )
    above = np.maximum(values - high, 0.0)
    below = np.maximum(low - values, 0.0)
    return (above + below) / spread


# --------------------------------------------------------------------------- #
# Pattern scaling
# --------------------------------------------------------------------------- #


class PatternScaling(BaseEstimator):
    """Linear pattern scaling, a per-grid-point regression on one predictor.

    At each grid point x, ordinary least squares over the training period fits
    ``target(t, x) = intercept(x) + slope(x) * predictor(t)``, the standard
    statistical emulator of regional climate change.

    Reference: Tebaldi and Arblaster (2014), Pattern scaling: its
    strengths and limitations, and an update on the latest model simulations,
    Climatic Change 122, 459-471.

    Parameters
    ----------
    dim : str, default "time"
        Sample dim shared by target and predictor.

    Attributes
    ----------
    intercept_ : xarray.DataArray
        Intercept on the target's dims without ``dim``, in the target's units.
    slope_ : xarray.DataArray
        Slope on the same dims, in target units per predictor unit.

    Notes
    -----
    The fit uses the closed form slope = cov(predictor, target) / var(predictor)
    per grid point, with both moments taken over the times where that point is
    valid. A point with fewer than two valid times, or whose valid times share
    one predictor value, gets NaN coefficients.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> gmst = xr.DataArray(np.arange(4.0), dims="time")  # [K]
    >>> field = 1.0 + 2.0 * gmst.expand_dims(cell=2).transpose("time", "cell")
    >>> model = PatternScaling().fit(field, gmst)
    >>> model.slope_.values, model.intercept_.values
    (array([2., 2.]), array([1., 1.]))
    """

    def __init__(self, dim: str = "time") -> None:
        self.dim = dim

    def fit(self, target: xr.DataArray, predictor: xr.DataArray) -> PatternScaling:
        """Fit intercept and slope at every grid point.

        Parameters
        ----------
        target : xarray.DataArray
            Training field with ``dim`` and any grid dims, for example
            (time, lat, lon) [K]. NaN cells are left out per grid point.
        predictor : xarray.DataArray
            Training predictor with ``dim`` as its only dim, for example global
            mean temperature [K], with the same ``dim`` coordinate as ``target``.

        Returns
        -------
        PatternScaling
            The fitted estimator. Lazy when ``target`` is dask-backed.
        """
        self._validate_predictor(predictor, "predictor")
        if not isinstance(target, xr.DataArray):
            raise TypeError(f"target must be an xarray.DataArray, got {type(target).__name__}.")
        if self.dim not in target.dims:
            raise DataError(
                f"target has dims {list(target.dims)} but no dim {self.dim!r}. Set dim= to its sample dim."
            )
        if target.sizes[self.dim] != predictor.sizes[self.dim]:
            raise DataError(
                f"target has {target.sizes[self.dim]} steps along {self.dim!r} but predictor has "
                f"{predictor.sizes[self.dim]}. Give both the same training period."
            )
        try:
            target, predictor = xr.align(target, predictor, join="exact")
        except ValueError as err:
            raise DataError(
                f"target and predictor have different {self.dim!r} coordinates ({err}). "
                "Give both the same training period."
            ) from err
        if not _is_dask(predictor) and not bool(predictor.std() > 0):
            raise DataError(
                f"predictor does not vary over the training period (standard deviation "
                f"{float(predictor.std())}), so no slope can be fitted. Train on a period in "
                "which the predictor varies."
            )

        # Restrict predictor and target to the times where both are valid at each
        # grid point, so every point uses its own sample. Shape: (dim, grid...).
        valid = target.notnull() & predictor.notnull()
        x = predictor.where(valid)
        y = target.where(valid)

        # Centred moments (two-pass form, numerically safer than E[xy] - E[x]E[y]).
        x_mean = x.mean(self.dim)
        y_mean = y.mean(self.dim)
        covariance = ((x - x_mean) * (y - y_mean)).mean(self.dim)
        variance = ((x - x_mean) ** 2).mean(self.dim)

        # A zero variance leaves the slope undefined. Dividing by NaN there gives
        # NaN without the RuntimeWarning that 0/0 would raise.
        slope = covariance / variance.where(variance > 0)
        intercept = y_mean - slope * x_mean

        target_units = target.attrs.get("units")
        predictor_units = predictor.attrs.get("units")
        self.intercept_ = intercept.rename("intercept")
        self.intercept_.attrs = {"long_name": "pattern scaling intercept"}
        if target_units is not None:
            self.intercept_.attrs["units"] = target_units
        self.slope_ = slope.rename("slope")
        self.slope_.attrs = {"long_name": "pattern scaling slope"}
        if target_units is not None and predictor_units is not None:
            self.slope_.attrs["units"] = f"{target_units} ({predictor_units})-1"

        self._target_dims = target.dims
        self._target_attrs = dict(target.attrs)
        self._target_name = target.name
        return self

    def predict(self, predictor: xr.DataArray) -> xr.DataArray:
        """Predict the field ``intercept_ + slope_ * predictor``.

        Parameters
        ----------
        predictor : xarray.DataArray
            Predictor with ``dim`` as its only dim, in the training units.

        Returns
        -------
        xarray.DataArray
            Field with the dims of the training target in its order, the ``dim``
            coordinate of ``predictor`` and the training target's name and attrs.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If called before :meth:`fit`.
        """
        check_is_fitted(self, ["intercept_", "slope_"])
        self._validate_predictor(predictor, "predictor")

        prediction = self.intercept_ + self.slope_ * predictor
        prediction = prediction.transpose(*self._target_dims)
        prediction = prediction.rename(self._target_name)
        prediction.attrs = dict(self._target_attrs)
        return prediction

    def _validate_predictor(self, predictor: xr.DataArray, argument: str) -> None:
        if not isinstance(predictor, xr.DataArray):
            raise TypeError(f"{argument} must be an xarray.DataArray, got {type(predictor).__name__}.")
        if predictor.dims != (self.dim,):
            raise DataError(
                f"{argument} must have the single dim {self.dim!r}, got dims {list(predictor.dims)}. "
                "PatternScaling supports one scalar predictor per time step."
            )


# --------------------------------------------------------------------------- #
# Skill tables
# --------------------------------------------------------------------------- #


def skill_table(
    truth: xr.DataArray,
    predictions: Mapping[str, xr.DataArray],
    dim: str | Iterable[Hashable] | None = None,
    weights: xr.DataArray | None = None,
    std: Mapping[str, xr.DataArray] | None = None,
) -> xr.Dataset:
    """Compute RMSE, MAE and bias of several methods against one truth.

    Parameters
    ----------
    truth : xarray.DataArray
        True field, for example (time, lat, lon) [K].
    predictions : mapping of str to xarray.DataArray
        Prediction of each method (parent, child, baselines) on the coordinates
        of ``truth``.
    dim : str or sequence of str, optional
        Dims to reduce, all by default.
    weights : xarray.DataArray, optional
        Weights as in :func:`rmse`, for example :func:`latitude_weights`.
    std : mapping of str to xarray.DataArray, optional
        Predicted standard deviation of the methods that give one (a Gaussian
        head), in the units of ``truth``. The table then gains ``crps``
        (:func:`crps_gaussian`) and ``spread_skill_ratio``
        (:func:`gaussian_spread_skill_ratio`), NaN for the other methods.

    Returns
    -------
    xarray.Dataset
        Data variables ``rmse``, ``mae`` and ``bias`` (and ``crps``,
        ``spread_skill_ratio`` when ``std`` is given) on dim ``method``
        (coordinate: the mapping keys in order) plus any dims not reduced. Each
        has a ``long_name``, and all but the ratio have the ``units`` of ``truth``.

    Notes
    -----
    ``method`` is also a keyword of ``Dataset.sel``, so ``table.sel(method="child")``
    selects nothing. Select a row with ``table.sel({"method": "child"})``.

    For each method, cells where the truth or that method's prediction is NaN
    are left out. Methods with NaN in different cells are therefore scored on
    different cells.

    Examples
    --------
    >>> import xarray as xr
    >>> truth = xr.DataArray([0.0, 1.0], dims="time", attrs={"units": "K"})
    >>> table = skill_table(truth, {"parent": truth + 1.0, "child": truth})
    >>> table["rmse"].values
    array([1., 0.])
    """
    if not isinstance(predictions, Mapping):
        raise TypeError(
            f"predictions must be a mapping of method name to DataArray, got {type(predictions).__name__}."
        )
    if not predictions:
        raise ValueError("predictions is empty. Give at least one method name and its prediction.")
    std = dict(std or {})
    unknown = sorted(set(std) - set(predictions))
    if unknown:
        raise ValueError(f"std names methods {unknown} that are not in predictions {list(predictions)}.")

    columns: dict[str, list[xr.DataArray]] = {name: [] for name in _SKILL_COLUMNS}
    if std:
        columns.update(crps=[], spread_skill_ratio=[])
    for method, prediction in predictions.items():
        columns["rmse"].append(rmse(prediction, truth, dim=dim, weights=weights))
        columns["mae"].append(mae(prediction, truth, dim=dim, weights=weights))
        columns["bias"].append(bias(prediction, truth, dim=dim, weights=weights))
        if not std:
            continue
        if method in std:
            columns["crps"].append(crps_gaussian(prediction, std[method], truth, dim=dim, weights=weights))
            ratio = gaussian_spread_skill_ratio(prediction, std[method], truth, dim=dim, weights=weights)
            columns["spread_skill_ratio"].append(ratio)
        else:
            # NaN rows with the shape and labels of the method's other scores.
            missing = xr.full_like(columns["rmse"][-1], np.nan)
            columns["crps"].append(_label(missing.rename("crps"), "crps", truth))
            columns["spread_skill_ratio"].append(missing.rename("spread_skill_ratio").assign_attrs(_RATIO_ATTRS))

    methods = xr.DataArray(list(predictions), dims="method", name="method")
    table = xr.Dataset(
        {name: xr.concat(values, dim=methods, combine_attrs="override") for name, values in columns.items()}
    )
    return table


def _crps_kernel(truth: np.ndarray, ensemble: np.ndarray) -> np.ndarray:
    import properscoring

    # properscoring returns NaN-free scores only for finite input; mark missing cells.
    valid = np.isfinite(truth) & np.isfinite(ensemble).all(-1)
    out = np.full(truth.shape, np.nan)
    out[valid] = properscoring.crps_ensemble(truth[valid], ensemble[valid], axis=-1)
    return out


def crps_ensemble(
    ensemble: xr.DataArray,
    truth: xr.DataArray,
    dim: str | Iterable[Hashable] | None = None,
    weights: xr.DataArray | None = None,
    member_dim: str = "member",
) -> xr.DataArray:
    """Continuous ranked probability score of an ensemble, averaged over ``dim``.

    The score of each cell comes from ``properscoring.crps_ensemble`` (the
    empirical ensemble distribution); cells where the truth or any member is NaN
    are left out of the mean. For a one-member ensemble it equals the MAE.

    Parameters
    ----------
    ensemble : xarray.DataArray
        Predictions with a ``member_dim``, for example (member, time, lat, lon) [K].
    truth : xarray.DataArray
        The same field without ``member_dim``.
    dim, weights
        As in :func:`rmse`.

    Returns
    -------
    xarray.DataArray
        In the units of ``truth``.
    """
    if member_dim not in ensemble.dims:
        raise DataError(f"Ensemble has no {member_dim!r} dim; it has {list(ensemble.dims)}.")
    ensemble, truth = xr.align(ensemble, truth, join="exact")
    cell = xr.apply_ufunc(
        _crps_kernel,
        truth,
        ensemble,
        input_core_dims=[[], [member_dim]],
        dask="parallelized",
        output_dtypes=[float],
    )
    reduce = _dims_list(dim) if dim is not None else list(cell.dims)
    score = cell.weighted(weights.fillna(0)).mean(reduce, skipna=True) if weights is not None else cell.mean(reduce)
    return _label(score.rename("crps"), "crps", truth)


def spread_skill_ratio(
    ensemble: xr.DataArray,
    truth: xr.DataArray,
    dim: str | Iterable[Hashable] | None = None,
    weights: xr.DataArray | None = None,
    member_dim: str = "member",
) -> xr.DataArray:
    """Ensemble spread over the RMSE of the ensemble mean; 1 for a reliable ensemble.

    Spread is the square root of the mean ensemble variance (ddof=1), scaled by
    ``sqrt((M + 1) / M)`` for M members: when truth and members are drawn from one
    distribution of variance s^2, the ensemble mean misses the truth by
    ``s^2 (1 + 1/M)`` in mean square, so the scaled spread then equals the RMSE.
    Below 1 the ensemble is overconfident, above 1 underconfident.
    """
    if member_dim not in ensemble.dims:
        raise DataError(f"Ensemble has no {member_dim!r} dim; it has {list(ensemble.dims)}.")
    n_members = ensemble.sizes[member_dim]
    if n_members < 2:
        raise DataError(f"The spread-skill ratio needs at least 2 members, got {n_members}.")
    mean = ensemble.mean(member_dim)
    variance = ensemble.var(member_dim, ddof=1).where(truth.notnull())
    reduce = _dims_list(dim) if dim is not None else list(variance.dims)
    if weights is not None:
        mean_variance = variance.weighted(weights.fillna(0)).mean(reduce, skipna=True)
    else:
        mean_variance = variance.mean(reduce)
    spread = np.sqrt(mean_variance * (n_members + 1) / n_members)
    ratio = spread / rmse(mean, truth, dim=dim, weights=weights)
    return ratio.rename("spread_skill_ratio").assign_attrs(units="1", long_name="spread-skill ratio")


def _crps_gaussian_kernel(truth: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    import properscoring

    valid = np.isfinite(truth) & np.isfinite(mean) & np.isfinite(std)
    out = np.full(np.broadcast(truth, mean, std).shape, np.nan)
    truth, mean, std = np.broadcast_arrays(truth, mean, std)
    out[valid] = properscoring.crps_gaussian(truth[valid], mean[valid], std[valid])
    return out


def _align_std(std: xr.DataArray, *others: xr.DataArray) -> tuple[xr.DataArray, ...]:
    """Return ``std`` and ``others`` aligned exactly, or raise DataError when their coordinates differ."""
    try:
        return xr.align(std, *others, join="exact")
    except ValueError as err:
        raise DataError(f"std has other coordinates than the mean and truth ({err}); give it on their grid.") from err


def crps_gaussian(
    mean: xr.DataArray,
    std: xr.DataArray,
    truth: xr.DataArray,
    dim: str | Iterable[Hashable] | None = None,
    weights: xr.DataArray | None = None,
) -> xr.DataArray:
    """Continuous ranked probability score of a Gaussian forecast, averaged over ``dim``.

    The score of each cell is ``properscoring.crps_gaussian``, the closed form
    of Gneiting et al. (2005, Mon. Wea. Rev. 133, 1098-1118, eq. 5); cells where
    the truth, the mean or the standard deviation is NaN are left out of the
    mean. With ``std`` 0 it equals the absolute error.

    Parameters
    ----------
    mean, std : xarray.DataArray
        Predicted mean and standard deviation (>= 0), for example (time, lat, lon)
        [m s-1], on the coordinates of ``truth``.
    truth : xarray.DataArray
        True field in the same units.
    dim, weights
        As in :func:`rmse`.

    Returns
    -------
    xarray.DataArray
        Named ``crps``, in the units of ``truth``. Lazy when an input is dask-backed.

    Examples
    --------
    >>> import xarray as xr
    >>> truth = xr.DataArray([0.0, 0.0], dims="time")
    >>> round(float(crps_gaussian(truth, truth + 1.0, truth)), 4)   # (sqrt(2) - 1) / sqrt(pi)
    0.2337
    """
    error = _error(mean, truth, dim, weights)
    std, mean, truth = _align_std(std, mean, truth)
    if not _is_dask(std) and bool((std < 0).any()):
        raise DataError(f"std has negative values (minimum {float(std.min())}); a standard deviation is >= 0.")
    cell = xr.apply_ufunc(_crps_gaussian_kernel, truth, mean, std, dask="parallelized", output_dtypes=[float])
    score = _mean(cell.where(error.notnull()), dim, weights, skipna=True)
    return _label(score, "crps", truth)


def gaussian_spread_skill_ratio(
    mean: xr.DataArray,
    std: xr.DataArray,
    truth: xr.DataArray,
    dim: str | Iterable[Hashable] | None = None,
    weights: xr.DataArray | None = None,
) -> xr.DataArray:
    """Root of the mean predicted variance over the RMSE of the mean; 1 for a reliable forecast.

    Both means run over the cells where the truth, the mean and ``std`` are
    finite, with ``weights`` as in :func:`rmse`. Below 1 the forecast is
    overconfident, above 1 underconfident.

    Returns
    -------
    xarray.DataArray
        Named ``spread_skill_ratio``, units ``1``.
    """
    error = _error(mean, truth, dim, weights)
    std, error = _align_std(std, error)
    valid = error.notnull() & std.notnull()
    spread = np.sqrt(_mean((std**2).where(valid), dim, weights, skipna=True))
    skill = np.sqrt(_mean((error**2).where(valid), dim, weights, skipna=True))
    return (spread / skill).rename("spread_skill_ratio").assign_attrs(_RATIO_ATTRS)


def ensemble_skill_table(
    truth: xr.DataArray,
    ensembles: Mapping[str, xr.DataArray],
    dim: str | Iterable[Hashable] | None = None,
    weights: xr.DataArray | None = None,
    member_dim: str = "member",
) -> xr.Dataset:
    """RMSE of the ensemble mean, CRPS and spread-skill ratio of each ensemble, on dim ``method``."""
    rows = {"rmse": [], "crps": [], "spread_skill_ratio": []}
    for ensemble in ensembles.values():
        rows["rmse"].append(rmse(ensemble.mean(member_dim), truth, dim=dim, weights=weights))
        rows["crps"].append(crps_ensemble(ensemble, truth, dim=dim, weights=weights, member_dim=member_dim))
        rows["spread_skill_ratio"].append(spread_skill_ratio(ensemble, truth, dim=dim, weights=weights, member_dim=member_dim))
    methods = xr.DataArray(list(ensembles), dims="method", name="method")
    return xr.Dataset({k: xr.concat(v, dim=methods, combine_attrs="override") for k, v in rows.items()})


def write_skill_csv(table: xr.Dataset, path: str | os.PathLike, columns: Sequence[str] = _SKILL_COLUMNS) -> Path:
    """Write a skill table as CSV with columns ``method`` and ``columns`` (default ``rmse,mae,bias``).

    The file is written atomically, so an interrupted run leaves any earlier
    file in place. Lazy tables are computed here. Values have 6 significant
    digits, and NaN is written as ``nan``.

    Parameters
    ----------
    table : xarray.Dataset
        Output of :func:`skill_table` reduced to the single dim ``method``.
    path : str or os.PathLike
        Destination file.
    columns : sequence of str
        Data variables of ``table`` to write, in order.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    missing = [name for name in columns if name not in table.data_vars]
    if missing:
        raise DataError(f"table is missing the data variables {missing}. Build it with skill_table.")
    for name in columns:
        if table[name].dims != ("method",):
            raise DataError(
                f"table[{name!r}] has dims {list(table[name].dims)} but a CSV row needs one value per "
                "method. Reduce all other dims (dim=None in skill_table) before writing."
            )

    # One compute for all columns, so a lazy table evaluates the shared errors once.
    columns = list(columns)
    computed = table[columns].compute()
    values = {name: computed[name].values for name in columns}
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["method", *columns])
        for row, method in enumerate(computed["method"].values):
            writer.writerow([str(method), *(f"{values[name][row]:.6g}" for name in columns)])
    return path
