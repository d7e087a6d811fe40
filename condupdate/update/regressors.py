"""Weight regressors: scikit-learn estimators from predictors to weight anomalies."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import LinearRegression, RidgeCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["WeightRegressor", "REGRESSORS"]

REGRESSORS = ("linear", "ridge")

# Penalties tried by the ridge regressor, on standardised predictors; the smallest
# lets an exactly linear dependence through almost unchanged.
DEFAULT_ALPHAS = tuple(np.logspace(-6, 3, 19))


class WeightRegressor(RegressorMixin, BaseEstimator):
    """Regress weight anomalies on predictors with one multi-output linear fit.

    All parameters are fitted at once: ``Y`` holds one column per network
    parameter, and scikit-learn solves the least-squares problems of all columns
    in one factorisation rather than in a Python loop. Predictors are standardised
    inside the estimator. Both methods are linear in the predictors, so outside the
    training range they continue the fitted trend instead of bending like a
    polynomial.

    Parameters
    ----------
    method : {"linear", "ridge"}, default "ridge"
        ``"linear"`` is ordinary least squares; ``"ridge"`` picks one penalty for
        all parameters from ``alphas`` by efficient leave-one-out cross-validation
        over subsets (``RidgeCV`` with its generalised cross-validation).
    alphas : sequence of float, default ``logspace(-6, 3, 19)``
        Ridge penalties tried, in units of the standardised predictors.

    Attributes
    ----------
    pipeline_ : sklearn.pipeline.Pipeline
        The fitted scaler and linear model.
    n_features_in_ : int
        Number of predictors.
    alpha_ : float or None
        Penalty chosen by ridge; None for ``"linear"``.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.arange(5.0)[:, None]
    >>> Y = 1.0 + 2.0 * p @ np.ones((1, 3))
    >>> WeightRegressor(method="linear").fit(p, Y).predict([[10.0]]).round(6)
    array([[21., 21., 21.]])
    """

    def __init__(self, method: str = "ridge", alphas: Sequence[float] = DEFAULT_ALPHAS) -> None:
        self.method = method
        self.alphas = alphas

    def fit(self, X: np.ndarray, y: np.ndarray) -> WeightRegressor:
        """Fit on subset predictors ``X`` (n_subsets, n_predictors) and anomalies ``y`` (n_subsets, n_parameters)."""
        if self.method not in REGRESSORS:
            raise ValueError(f"Unknown weight regressor method {self.method!r}; choose one of {list(REGRESSORS)}.")
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True)
        if X.shape[0] < 2:
            raise ValueError(
                f"A weight regressor needs at least 2 subsets (one sample each), got {X.shape[0]} sample; "
                "use more or smaller subsets."
            )

        if self.method == "linear":
            model = LinearRegression()
        else:
            model = RidgeCV(alphas=tuple(self.alphas))
        self.pipeline_: Pipeline = make_pipeline(StandardScaler(), model).fit(X, y)
        self.alpha_ = float(model.alpha_) if self.method == "ridge" else None
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predict anomalies ``(n, n_parameters)`` (or ``(n,)`` if fitted on one column) at predictors ``X``."""
        check_is_fitted(self, "pipeline_")
        X = validate_data(self, X, reset=False)
        return self.pipeline_.predict(X)
