"""Per-feature standardisation whose statistics come from the training selection only."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from sklearn.exceptions import NotFittedError

__all__ = ["Normalizer"]


class Normalizer:
    """Standardise each column to zero mean and unit variance, ignoring NaN cells.

    Fit it on the training selection only and keep it with the model: the same
    statistics must be applied to the application data, or the child sees inputs
    scaled with information from the regime it is meant to extrapolate to.

    Parameters
    ----------
    dim : str, default "sample"
        Dimension that the statistics are taken over.
    feature_dim : str, default "feature"
        Column dimension; one mean and one scale per label.

    Attributes
    ----------
    mean_ : numpy.ndarray, shape (n_columns,)
    scale_ : numpy.ndarray, shape (n_columns,)
        Standard deviation (ddof=0), replaced by 1 where a column does not vary, so
        a constant column maps to 0 instead of dividing by zero.
    names_ : list of str
        Column labels seen in ``fit``.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> X = xr.DataArray(np.array([[1.0, 10.0], [3.0, np.nan]]), dims=("sample", "feature"),
    ...                  coords={"feature": ["a", "b"]})
    >>> Normalizer().fit(X).mean_
    array([ 2., 10.])
    """

    def __init__(self, dim: str = "sample", feature_dim: str = "feature") -> None:
        self.dim = dim
        self.feature_dim = feature_dim

    def fit(self, X: xr.DataArray) -> Normalizer:
        """Compute column means and scales over ``dim``, skipping NaN cells.

        Works on dask-backed input through dask reductions; only the two small
        vectors of statistics are computed.
        """
        # Statistics in float64: a float32 sum over millions of cells loses digits.
        X = X.astype("float64")
        reductions = [X.mean(self.dim, skipna=True), X.std(self.dim, skipna=True), X.min(self.dim, skipna=True)]
        stats = xr.concat(reductions, "stat").compute()
        mean, std, minimum = (np.asarray(row, dtype="float64") for row in stats.values)
        self._set_statistics([str(n) for n in X[self.feature_dim].values], mean, std, minimum)
        return self

    @classmethod
    def from_statistics(
        cls,
        names: list[str],
        mean: np.ndarray,
        std: np.ndarray,
        minimum: np.ndarray,
        dim: str = "sample",
        feature_dim: str = "feature",
    ) -> Normalizer:
        """Build a fitted normaliser from column statistics computed elsewhere.

        ``mean``, ``std`` (ddof=0) and ``minimum`` are per-column reductions over
        the training samples, for example dask reductions over fields that were
        never stacked (see :func:`condupdate.data.stream.fit_normalizers`). Columns
        that do not vary are handled as in :meth:`fit`.
        """
        norm = cls(dim=dim, feature_dim=feature_dim)
        norm._set_statistics(
            [str(n) for n in names],
            np.asarray(mean, dtype="float64"),
            np.asarray(std, dtype="float64"),
            np.asarray(minimum, dtype="float64"),
        )
        return norm

    def _set_statistics(self, names: list[str], mean: np.ndarray, std: np.ndarray, minimum: np.ndarray) -> None:
        # A constant column still shows a rounding-level spread (about 1e-14 of its
        # value), so any spread below 1e-10 of the mean counts as none. Its exact
        # value (the minimum) replaces the rounded mean, so it maps to exactly 0.
        constant = ~np.isfinite(std) | (std <= 1e-10 * np.abs(mean))
        mean = np.where(constant & np.isfinite(minimum), minimum, mean)
        std = np.where(constant, 1.0, std)
        self.mean_ = mean
        self.scale_ = std
        self.names_ = names

    def _check_fitted(self, X: Any) -> None:
        if not hasattr(self, "mean_"):
            raise NotFittedError("This Normalizer is not fitted yet; call fit() on the training selection first.")
        if isinstance(X, xr.DataArray):
            names = [str(n) for n in X[self.feature_dim].values]
            if names != self.names_:
                raise ValueError(f"Columns {names} differ from the columns {self.names_} the normaliser was fitted on.")
        elif np.shape(X)[-1] != len(self.mean_):
            raise ValueError(f"Expected {len(self.mean_)} columns, got array of shape {np.shape(X)}.")

    def _stats(self, X: Any) -> tuple[Any, Any]:
        if isinstance(X, xr.DataArray):
            coords = {self.feature_dim: X[self.feature_dim].values}
            return (
                xr.DataArray(self.mean_, dims=self.feature_dim, coords=coords),
                xr.DataArray(self.scale_, dims=self.feature_dim, coords=coords),
            )
        dtype = np.asarray(X).dtype if np.issubdtype(np.asarray(X).dtype, np.floating) else np.float64
        return self.mean_.astype(dtype), self.scale_.astype(dtype)

    def transform(self, X: Any) -> Any:
        """Standardise ``X`` (DataArray or array with columns last); NaN stays NaN."""
        self._check_fitted(X)
        mean, scale = self._stats(X)
        return (X - mean) / scale

    def inverse_transform(self, Z: Any) -> Any:
        """Map standardised values back to physical units; NaN stays NaN."""
        self._check_fitted(Z)
        mean, scale = self._stats(Z)
        return Z * scale + mean

    def to_dict(self) -> dict[str, Any]:
        """Return the fitted statistics as plain lists, for saving with a model."""
        self._check_fitted(np.zeros((1, len(getattr(self, "mean_", [])))))
        return {"names": self.names_, "mean": self.mean_.tolist(), "scale": self.scale_.tolist()}

    @classmethod
    def from_dict(cls, state: dict[str, Any], dim: str = "sample", feature_dim: str = "feature") -> Normalizer:
        """Rebuild a fitted normaliser from :meth:`to_dict` output."""
        norm = cls(dim=dim, feature_dim=feature_dim)
        norm.names_ = list(state["names"])
        norm.mean_ = np.asarray(state["mean"], dtype="float64")
        norm.scale_ = np.asarray(state["scale"], dtype="float64")
        return norm
