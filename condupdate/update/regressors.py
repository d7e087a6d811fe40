"""Weight regressors: scikit-learn estimators from predictors to weight anomalies.

Every regressor maps subset predictors ``X`` (n_subsets, n_predictors) to
anomalies ``Y`` (n_subsets, n_parameters) and fits all parameters in one call.
Predictors are standardised inside the estimator, and each fitted regressor
records the range and spread of its training predictors (``x_min_``, ``x_max_``,
``x_std_``), so that the distance of an application predictor from the training
range can be reported with :func:`predictor_distance`.

| name | estimator | outside the training range |
|---|---|---|
| ``linear``, ``ridge`` | :class:`WeightRegressor` | continues the fitted line |
| ``bayesian_ridge`` | :class:`BayesianWeightRegressor` | line, standard deviation grows linearly |
| ``spline`` | :class:`SplineWeightRegressor` | straight continuation of the boundary slope |
| ``gp`` | :class:`GaussianProcessWeightRegressor` | returns to the linear trend |
| ``polynomial`` | :class:`PolynomialWeightRegressor` | diverges, so ``predict`` warns |
| ``pca`` | :class:`PCAWeightRegressor` | as its inner regressor |

Build any of them by name with :func:`make_regressor`.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.linalg import block_diag, cho_solve, solve_triangular
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.decomposition import PCA
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.linear_model import LinearRegression, RidgeCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import PolynomialFeatures, SplineTransformer, StandardScaler
from sklearn.utils import check_array, check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted, validate_data

from condupdate._errors import CondupdateWarning, ExtrapolationWarning

__all__ = [
    "REGRESSORS",
    "BayesianWeightRegressor",
    "CollinearityWarning",
    "GaussianProcessWeightRegressor",
    "PCAWeightRegressor",
    "PolynomialWeightRegressor",
    "SplineWeightRegressor",
    "WeightRegressor",
    "mahalanobis_distance",
    "make_regressor",
    "predictor_distance",
]

REGRESSORS = ("linear", "ridge", "bayesian_ridge", "spline", "gp", "polynomial", "pca")

# The methods that WeightRegressor itself implements.
_LINEAR_METHODS = ("linear", "ridge")

# Penalties tried by the ridge regressor, on standardised predictors; the smallest
# lets an exactly linear dependence through almost unchanged.
DEFAULT_ALPHAS = tuple(np.logspace(-6, 3, 19))

# Condition number of the standardised predictor matrix above which fit warns.
# 30 is the usual rule-of-thumb threshold for strong collinearity in regression.
COLLINEARITY_LIMIT = 30.0

# Singular values below this fraction of the largest count as zero in the
# penalised spline solve, where per-predictor constants are not identifiable.
_RELATIVE_RANK_TOLERANCE = 1e-10


class CollinearityWarning(CondupdateWarning):
    """Two or more predictors are nearly collinear over the training subsets."""


# Extrapolation distance ---------------------------------------------------------------


def predictor_distance(X: np.ndarray, X_train: np.ndarray) -> np.ndarray:
    """Measure how far each predictor lies outside its training range.

    Parameters
    ----------
    X : array-like, shape (n, n_predictors)
        Application predictors, in the units of the training predictors.
    X_train : array-like, shape (n_subsets, n_predictors)
        Training predictors of the subsets.

    Returns
    -------
    numpy.ndarray, shape (n, n_predictors)
        Distance beyond the nearer end of the training range, in units of the
        training standard deviation (ddof=0) of that predictor [1]; 0 inside the
        range. A predictor that is constant over the training subsets has no
        spread, so any other value of it is at distance ``inf``.

    Examples
    --------
    >>> X_train = np.array([[0.0], [1.0], [2.0], [3.0]])
    >>> predictor_distance(np.array([[1.5], [5.0]]), X_train).round(3)
    array([[0.   ],
           [1.789]])
    """
    X, X_train = _check_predictor_pair(X, X_train)
    return _range_distance(X, X_train.min(axis=0), X_train.max(axis=0), X_train.std(axis=0))


def mahalanobis_distance(X: np.ndarray, X_train: np.ndarray) -> np.ndarray:
    """Measure the Mahalanobis distance of predictors from the training predictors.

    The distance is taken to the mean of the training predictors, with their
    covariance (ddof=0, so with one predictor it equals ``|x - mean| / std``).

    Parameters
    ----------
    X : array-like, shape (n, n_predictors)
        Application predictors, in the units of the training predictors.
    X_train : array-like, shape (n_subsets, n_predictors)
        Training predictors of the subsets.

    Returns
    -------
    numpy.ndarray, shape (n,)
        Mahalanobis distance [1].

    Examples
    --------
    >>> X_train = np.array([[0.0], [1.0], [2.0], [3.0]])
    >>> mahalanobis_distance(np.array([[1.5], [5.0]]), X_train).round(3)
    array([0.  , 3.13])
    """
    X, X_train = _check_predictor_pair(X, X_train)

    mean = X_train.mean(axis=0)
    covariance = np.atleast_2d(np.cov(X_train, rowvar=False, bias=True))  # (n_predictors, n_predictors)
    # NOTE: a singular covariance (constant or exactly collinear predictors, or
    # fewer subsets than predictors) is inverted with the Moore-Penrose
    # pseudo-inverse, so offsets along directions without training variance add
    # no distance. predictor_distance returns inf for a constant predictor, but
    # no function here flags a point that breaks an exact collinearity.
    precision = np.linalg.pinv(covariance, hermitian=True)

    offset = X - mean
    squared = np.einsum("ni,ij,nj->n", offset, precision, offset)
    return np.sqrt(np.maximum(squared, 0.0))


def _check_predictor_pair(X: np.ndarray, X_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X_train = check_array(X_train, dtype=np.float64, input_name="X_train")
    X = check_array(X, dtype=np.float64, ensure_min_samples=0, input_name="X")
    if X.shape[1] != X_train.shape[1]:
        raise ValueError(
            f"X has {X.shape[1]} predictors but X_train has {X_train.shape[1]}; "
            "pass the application predictors in the same columns as the training predictors."
        )
    return X, X_train


def _range_distance(X: np.ndarray, x_min: np.ndarray, x_max: np.ndarray, x_std: np.ndarray) -> np.ndarray:
    beyond = np.maximum(x_min - X, 0.0) + np.maximum(X - x_max, 0.0)  # (n, n_predictors)
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = beyond / x_std
    return np.where(beyond > 0.0, distance, 0.0)


def _condition_number(X: np.ndarray) -> float:
    """Return the condition number of the standardised non-constant predictors of ``X``."""
    std = X.std(axis=0)
    varying = std > 0.0
    if varying.sum() < 2:
        return 1.0
    Z = (X[:, varying] - X[:, varying].mean(axis=0)) / std[varying]
    # Centring removes one degree of freedom, so n_subsets <= n_predictors is singular.
    if Z.shape[0] <= Z.shape[1]:
        return np.inf
    singular_values = np.linalg.svd(Z, compute_uv=False)
    if singular_values[-1] == 0.0:
        return np.inf
    return float(singular_values[0] / singular_values[-1])


def _warn_if_collinear(X: np.ndarray, stacklevel: int) -> None:
    condition_number = _condition_number(X)
    if condition_number <= COLLINEARITY_LIMIT:
        return
    n_subsets, n_predictors = X.shape
    warnings.warn(
        f"The {n_predictors} predictors are nearly collinear over the {n_subsets} subsets: the condition "
        f"number of the standardised predictor matrix is {condition_number:.3g}, above {COLLINEARITY_LIMIT:g}. "
        "The regressor cannot separate their effects, and extrapolation along the poorly sampled direction "
        "is unreliable; drop or combine predictors, or add subsets that vary them independently.",
        CollinearityWarning,
        stacklevel=stacklevel,
    )


def _safe_scale(std: np.ndarray) -> np.ndarray:
    """Replace zero standard deviations by 1, as StandardScaler does."""
    return np.where(std > 0.0, std, 1.0)


def _check_n_samples(n_samples: int) -> None:
    if not isinstance(n_samples, (int, np.integer)) or isinstance(n_samples, bool) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")


def _symmetric_square_root(covariance: np.ndarray) -> np.ndarray:
    """Return ``F`` with ``F @ F.T == covariance``, clipping negative rounding eigenvalues to 0."""
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    return eigenvectors * np.sqrt(np.maximum(eigenvalues, 0.0))


# Shared estimator machinery ----------------------------------------------------------


class _BaseWeightRegressor(RegressorMixin, BaseEstimator):
    """Validation, training-predictor statistics and tags shared by the weight regressors."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _validate_training_data(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Validate ``X`` and ``y``, store predictor statistics and warn on collinearity, then return 2-D ``Y``."""
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64)
        if X.shape[0] < 2:
            raise ValueError(
                f"A weight regressor needs at least 2 subsets (one sample each), got {X.shape[0]} sample; "
                "use more or smaller subsets."
            )

        self._y_1d = y.ndim == 1
        self.x_mean_ = X.mean(axis=0)
        self.x_std_ = X.std(axis=0)
        self.x_min_ = X.min(axis=0)
        self.x_max_ = X.max(axis=0)
        # stacklevel 4: this helper, the caller's fit, then the user's call of fit.
        _warn_if_collinear(X, stacklevel=4)
        return X, np.asarray(y, dtype=np.float64).reshape(len(y), -1)

    def _validate_predict_data(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "x_std_")
        return validate_data(self, X, reset=False, dtype=np.float64)

    def _standardise(self, X: np.ndarray) -> np.ndarray:
        return (X - self.x_mean_) / _safe_scale(self.x_std_)

    def _format(self, values: np.ndarray) -> np.ndarray:
        """Drop the parameter axis when the regressor was fitted on a 1-D ``y``."""
        return values[..., 0] if self._y_1d else values


# Linear and ridge ---------------------------------------------------------------------


class WeightRegressor(_BaseWeightRegressor):
    """Regress weight anomalies on predictors with one multi-output linear fit.

    All parameters are fitted at once: ``Y`` has one column per network
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
        over subsets (``RidgeCV`` with its generalised cross-validation, which is
        exact leave-one-out for ridge). :func:`make_regressor` builds the other
        regressors of this module.
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
    x_min_, x_max_, x_std_ : numpy.ndarray, shape (n_predictors,)
        Range and standard deviation (ddof=0) of the training predictors.

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
        if self.method not in _LINEAR_METHODS:
            raise ValueError(
                f"Unknown weight regressor method {self.method!r}; WeightRegressor offers "
                f"{list(_LINEAR_METHODS)}, and make_regressor builds any of {list(REGRESSORS)}."
            )
        X, Y = self._validate_training_data(X, y)

        if self.method == "linear":
            model = LinearRegression()
        else:
            model = RidgeCV(alphas=tuple(self.alphas))
        # A 1-D y keeps 1-D coefficients, as in scikit-learn's linear models.
        self.pipeline_: Pipeline = make_pipeline(StandardScaler(), model).fit(X, self._format(Y))
        self.alpha_ = float(model.alpha_) if self.method == "ridge" else None
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predict anomalies ``(n, n_parameters)`` (or ``(n,)`` if fitted on one column) at predictors ``X``."""
        check_is_fitted(self, "pipeline_")
        X = self._validate_predict_data(X)
        # RidgeCV returns 1-D predictions for a single-column y; restore the column.
        return self._format(self.pipeline_.predict(X).reshape(len(X), -1))


# Bayesian ridge -----------------------------------------------------------------------


class BayesianWeightRegressor(_BaseWeightRegressor):
    """Bayesian linear regression of weight anomalies, with posterior samples.

    Each parameter ``j`` has the model ``y_j = intercept_j + Z w_j + noise``, with
    ``Z`` the standardised predictors, noise precision ``alpha_j`` and a Gaussian
    prior of precision ``lambda_j`` on ``w_j``. As in scikit-learn's
    ``BayesianRidge``, the hyperparameters are chosen by evidence maximisation
    with MacKay's fixed-point updates under Gamma hyperpriors, as cited in the
    ``BayesianRidge`` documentation (D. J. C. MacKay, Bayesian Interpolation,
    1992), and the intercept is the
    mean anomaly, treated as known. One singular value decomposition of ``Z`` is
    shared by all parameters, so the updates of all parameters run as array
    operations without a loop over parameters. Each parameter gets its own
    hyperparameters, which makes the fit equal to ``BayesianRidge`` on each column.

    Anomalies are standardised per parameter before the evidence maximisation,
    so the Gamma hyperpriors do not depend on the unit or size of the weights.

    Parameters
    ----------
    max_iter : int, default 300
        Maximum number of fixed-point iterations.
    tol : float, default 1e-6
        Stop once no ``log(alpha)`` or ``log(lambda)`` changes by more than ``tol``
        in one iteration.
    alpha_1, alpha_2 : float, default 1e-6
        Shape and rate of the Gamma hyperprior on the noise precision.
    lambda_1, lambda_2 : float, default 1e-6
        Shape and rate of the Gamma hyperprior on the weight precision.

    Attributes
    ----------
    coef_ : numpy.ndarray, shape (n_parameters, n_predictors)
        Posterior mean slope per standardised predictor, in anomaly units.
    intercept_ : numpy.ndarray, shape (n_parameters,)
        Mean anomaly over the subsets.
    alpha_, lambda_ : numpy.ndarray, shape (n_parameters,)
        Noise and weight precisions, in units of the standardised anomalies.
    y_scale_ : numpy.ndarray, shape (n_parameters,)
        Standard deviation of each parameter's anomalies (1 where constant).
    eigenvalues_ : numpy.ndarray, shape (n_predictors,)
        Eigenvalues of ``Z.T @ Z``, zero-padded when there are fewer subsets than predictors.
    eigenvectors_ : numpy.ndarray, shape (n_predictors, n_predictors)
        The matching eigenvectors, one per row.
    n_iter_ : int
        Iterations run.
    x_min_, x_max_, x_std_ : numpy.ndarray, shape (n_predictors,)
        Range and standard deviation (ddof=0) of the training predictors.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = np.linspace(0.0, 1.0, 8)[:, None]
    >>> Y = 2.0 * X + 0.05 * rng.standard_normal((8, 3))
    >>> model = BayesianWeightRegressor().fit(X, Y)
    >>> mean, std = model.predict([[0.5], [3.0]], return_std=True)
    >>> bool(std[1, 0] > std[0, 0])
    True
    """

    def __init__(
        self,
        max_iter: int = 300,
        tol: float = 1e-6,
        alpha_1: float = 1e-6,
        alpha_2: float = 1e-6,
        lambda_1: float = 1e-6,
        lambda_2: float = 1e-6,
    ) -> None:
        self.max_iter = max_iter
        self.tol = tol
        self.alpha_1 = alpha_1
        self.alpha_2 = alpha_2
        self.lambda_1 = lambda_1
        self.lambda_2 = lambda_2

    def fit(self, X: np.ndarray, y: np.ndarray) -> BayesianWeightRegressor:
        """Fit on subset predictors ``X`` (n_subsets, n_predictors) and anomalies ``y`` (n_subsets, n_parameters)."""
        if not isinstance(self.max_iter, (int, np.integer)) or self.max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer, got {self.max_iter!r}.")
        X, Y = self._validate_training_data(X, y)

        Z = self._standardise(X)  # (n_subsets, n_predictors), zero column means
        self.intercept_ = Y.mean(axis=0)
        self.y_scale_ = _safe_scale(Y.std(axis=0))
        T = (Y - self.intercept_) / self.y_scale_  # (n_subsets, n_parameters)

        n_subsets, n_predictors = Z.shape
        # The full right singular vectors are needed for the posterior covariance
        # only when there are fewer subsets than predictors.
        U, S, Vh_full = np.linalg.svd(Z, full_matrices=n_subsets < n_predictors)
        rank = len(S)
        U = U[:, :rank]
        eigenvalues = S**2  # (rank,)
        projected = U.T @ T  # (rank, n_parameters)

        alpha, lambda_, self.n_iter_ = self._maximise_evidence(T, U, S, projected)
        c = self._rotated_coef(S, projected, alpha, lambda_)  # (rank, n_parameters)

        self.alpha_, self.lambda_ = alpha, lambda_
        self.coef_ = (Vh_full[:rank].T @ c).T * self.y_scale_[:, None]  # (n_parameters, n_predictors)
        self.eigenvalues_ = np.zeros(n_predictors)
        self.eigenvalues_[:rank] = eigenvalues
        self.eigenvectors_ = Vh_full
        return self

    @staticmethod
    def _rotated_coef(S, projected, alpha, lambda_) -> np.ndarray:
        """Posterior mean in the basis of the right singular vectors, ``(rank, n_parameters)``."""
        return S[:, None] * projected / (S[:, None] ** 2 + (lambda_ / alpha)[None, :])

    def _maximise_evidence(self, T, U, S, projected) -> tuple[np.ndarray, np.ndarray, int]:
        n_subsets, n_parameters = T.shape
        eigenvalues = (S**2)[:, None]  # (rank, 1)
        eps = np.finfo(np.float64).eps
        # The same start as BayesianRidge: noise precision from the variance of y.
        alpha = 1.0 / (T.var(axis=0) + eps)  # (n_parameters,)
        lambda_ = np.ones(n_parameters)
        active = np.ones(n_parameters, dtype=bool)

        for iteration in range(1, self.max_iter + 1):
            a, lam = alpha[active], lambda_[active]
            c = self._rotated_coef(S, projected[:, active], a, lam)
            sse = ((T[:, active] - U @ (S[:, None] * c)) ** 2).sum(axis=0)
            gamma = (a * eigenvalues / (lam + a * eigenvalues)).sum(axis=0)  # effective number of slopes
            new_lambda = (gamma + 2 * self.lambda_1) / ((c**2).sum(axis=0) + 2 * self.lambda_2)
            new_alpha = (n_subsets - gamma + 2 * self.alpha_1) / (sse + 2 * self.alpha_2)

            change = np.maximum(np.abs(np.log(new_alpha / a)), np.abs(np.log(new_lambda / lam)))
            alpha[active], lambda_[active] = new_alpha, new_lambda
            converged = change < self.tol
            active[np.flatnonzero(active)[converged]] = False
            if not active.any():
                break
        return alpha, lambda_, iteration

    def _posterior_inverse(self) -> np.ndarray:
        """Posterior variance of each rotated slope, ``(n_predictors, n_parameters)``, standardised units."""
        return 1.0 / (self.alpha_[None, :] * self.eigenvalues_[:, None] + self.lambda_[None, :])

    def predict(
        self, X: np.ndarray, return_std: bool = False, include_noise: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Predict the posterior mean anomaly, and optionally its standard deviation.

        Parameters
        ----------
        X : array-like, shape (n, n_predictors)
            Application predictors.
        return_std : bool, default False
            Also return the posterior predictive standard deviation.
        include_noise : bool, default False
            Add the fitted noise variance ``1 / alpha_`` (the spread of single
            fine-tuned anomalies about the mean function) to the variance of the
            mean function. ``BayesianRidge.predict(return_std=True)`` includes it.

        Returns
        -------
        mean : numpy.ndarray, shape (n, n_parameters)
        std : numpy.ndarray, shape (n, n_parameters)
            Only with ``return_std``; in anomaly units.
        """
        X = self._validate_predict_data(X)
        Z = self._standardise(X)
        mean = self.intercept_ + Z @ self.coef_.T
        if not return_std:
            return self._format(mean)

        rotated = Z @ self.eigenvectors_.T  # (n, n_predictors)
        variance = rotated**2 @ self._posterior_inverse()  # (n, n_parameters)
        if include_noise:
            variance = variance + 1.0 / self.alpha_
        return self._format(mean), self._format(np.sqrt(variance) * self.y_scale_)

    def sample(
        self,
        X: np.ndarray,
        n_samples: int = 1,
        random_state: int | np.random.RandomState | None = None,
        include_noise: bool = False,
    ) -> np.ndarray:
        """Draw anomalies from the posterior predictive distribution.

        Each draw takes one set of slopes from their posterior, so a draw is a
        straight line through all rows of ``X``.

        Parameters
        ----------
        X : array-like, shape (n, n_predictors)
            Application predictors.
        n_samples : int, default 1
            Number of draws.
        random_state : int, RandomState or None
            Seed of the draws.
        include_noise : bool, default False
            Add independent noise of variance ``1 / alpha_`` to each draw.

        Returns
        -------
        numpy.ndarray, shape (n_samples, n, n_parameters)
        """
        _check_n_samples(n_samples)
        X = self._validate_predict_data(X)
        rng = check_random_state(random_state)

        Z = self._standardise(X)
        mean = self.intercept_ + Z @ self.coef_.T  # (n, n_parameters)
        rotated = Z @ self.eigenvectors_.T  # (n, n_predictors)
        n_predictors, n_parameters = len(self.eigenvalues_), len(self.alpha_)
        slopes = rng.standard_normal((n_samples, n_predictors, n_parameters)) * np.sqrt(self._posterior_inverse())
        draws = mean + np.einsum("np,spm->snm", rotated, slopes) * self.y_scale_
        if include_noise:
            noise = rng.standard_normal(draws.shape) / np.sqrt(self.alpha_)
            draws = draws + noise * self.y_scale_
        return self._format(draws)


# Penalised spline ---------------------------------------------------------------------


def _second_difference(n_basis: int) -> np.ndarray:
    """Second-difference matrix ``(n_basis - 2, n_basis)`` of B-spline coefficients."""
    return np.diff(np.eye(n_basis), n=2, axis=0)


def _penalised_least_squares_loo(
    basis: np.ndarray, penalty: np.ndarray, Y: np.ndarray, alphas: Sequence[float]
) -> tuple[np.ndarray, float]:
    """Solve ``min |Y - basis c|^2 + alpha |penalty c|^2`` for the alpha of least leave-one-out error.

    ``basis`` (n, q) and ``Y`` (n, m) are centred because the intercept is not
    penalised, and its leverage ``1/n`` is added to the diagonal of the hat
    matrix. Leave-one-out residuals are ``e_i / (1 - H_ii)``. This is exact for
    penalised least squares when the penalty does not depend on the data.
    Returns the coefficients (q, m) and the chosen alpha.
    """
    n = len(basis)
    best_score, best_alpha, best_solve = np.inf, None, None
    for alpha in alphas:
        augmented = np.vstack([basis, np.sqrt(alpha) * penalty])  # (n + r, q)
        U, s, Vh = np.linalg.svd(augmented, full_matrices=False)
        kept = s > _RELATIVE_RANK_TOLERANCE * s[0]
        # The minimum-norm solution drops per-predictor constants, which the
        # intercept already carries. The (q, n) matrix maps Y to c.
        solve = (Vh[kept].T / s[kept]) @ U[:n, kept].T
        hat = basis @ solve  # (n, n), shared by all parameters
        denominator = 1.0 - (1.0 / n + np.diag(hat))
        if np.any(denominator < 1e-8):
            # A point with leverage 1 is interpolated: its leave-one-out error is undefined.
            continue
        residual = (Y - hat @ Y) / denominator[:, None]
        score = float(np.mean(residual**2))
        if score < best_score:
            best_score, best_alpha, best_solve = score, float(alpha), solve

    if best_solve is None:
        # Every penalty interpolates (for example 2 subsets): take the strongest,
        # which is closest to the straight line.
        best_alpha = float(max(alphas))
        augmented = np.vstack([basis, np.sqrt(best_alpha) * penalty])
        best_solve = np.linalg.pinv(augmented, rcond=_RELATIVE_RANK_TOLERANCE)[:, :n]
    return best_solve @ Y, best_alpha


class SplineWeightRegressor(_BaseWeightRegressor):
    """Penalised cubic spline of each predictor, straight outside the training range.

    Each standardised predictor gets a cubic B-spline basis
    (``SplineTransformer(degree=3, knots="uniform", extrapolation="linear")``)
    with knots spread evenly over its training range; with several predictors
    the model is additive. Beyond the outer knots every basis function continues
    along its tangent, so the fit is a straight line there, with the slope it
    has at the edge of the training range.

    The coefficients of all parameters are fitted at once by least squares with
    a ridge penalty on second differences of neighbouring B-spline coefficients
    (a P-spline). With evenly spaced knots the coefficients of a straight line
    have zero second differences, so an exactly linear dependence is fitted
    exactly at every penalty, and a strong penalty pulls the fit towards the
    straight line rather than towards zero. The penalty, shared by all
    parameters, is chosen from ``alphas`` by exact leave-one-out
    cross-validation over subsets.

    Parameters
    ----------
    n_knots : int or None, default None
        Knots per predictor, including both ends of the training range. None
        takes ``max(2, min(4, n_subsets - 1))``, so 5 or more subsets get 2
        interior knots and fewer subsets get fewer. With 2 knots the spline is
        one cubic over the whole range.
    alphas : sequence of float, default ``logspace(-6, 3, 19)``
        Second-difference penalties tried.

    Attributes
    ----------
    spline_ : sklearn.preprocessing.SplineTransformer
        The fitted basis, on standardised predictors.
    n_knots_ : int
        Knots used per predictor.
    alpha_ : float
        Penalty chosen.
    coef_ : numpy.ndarray, shape (n_parameters, n_basis)
        B-spline coefficients, for the basis centred by ``basis_mean_``.
    intercept_ : numpy.ndarray, shape (n_parameters,)
        Mean anomaly over the subsets.
    basis_mean_ : numpy.ndarray, shape (n_basis,)
        Mean of each basis function over the subsets.
    x_min_, x_max_, x_std_ : numpy.ndarray, shape (n_predictors,)
        Range and standard deviation (ddof=0) of the training predictors.

    Examples
    --------
    >>> X = np.linspace(0.0, 1.0, 8)[:, None]
    >>> Y = np.hstack([X**2, 3.0 * X])
    >>> model = SplineWeightRegressor().fit(X, Y)
    >>> model.predict([[3.0], [4.0], [5.0]]).round(4)[:, 1]
    array([ 9., 12., 15.])
    """

    def __init__(self, n_knots: int | None = None, alphas: Sequence[float] = DEFAULT_ALPHAS) -> None:
        self.n_knots = n_knots
        self.alphas = alphas

    def fit(self, X: np.ndarray, y: np.ndarray) -> SplineWeightRegressor:
        """Fit on subset predictors ``X`` (n_subsets, n_predictors) and anomalies ``y`` (n_subsets, n_parameters)."""
        if self.n_knots is not None and (not isinstance(self.n_knots, (int, np.integer)) or self.n_knots < 2):
            raise ValueError(f"n_knots must be an integer of at least 2 or None, got {self.n_knots!r}.")
        if len(self.alphas) == 0 or min(self.alphas) <= 0:
            raise ValueError(f"alphas must be a non-empty sequence of positive penalties, got {self.alphas!r}.")
        X, Y = self._validate_training_data(X, y)

        n_subsets, n_predictors = X.shape
        self.n_knots_ = int(self.n_knots) if self.n_knots is not None else max(2, min(4, n_subsets - 1))
        Z = self._standardise(X)
        self.spline_ = SplineTransformer(
            n_knots=self.n_knots_, degree=3, knots="uniform", extrapolation="linear"
        ).fit(Z)
        basis = self.spline_.transform(Z)  # (n_subsets, n_predictors * (n_knots + 2))
        self.basis_mean_ = basis.mean(axis=0)
        n_basis_per_predictor = basis.shape[1] // n_predictors
        penalty = block_diag(*[_second_difference(n_basis_per_predictor)] * n_predictors)

        self.intercept_ = Y.mean(axis=0)
        coef, self.alpha_ = _penalised_least_squares_loo(
            basis - self.basis_mean_, penalty, Y - self.intercept_, self.alphas
        )
        self.coef_ = coef.T  # (n_parameters, n_basis)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predict anomalies ``(n, n_parameters)`` (or ``(n,)`` if fitted on one column) at predictors ``X``."""
        X = self._validate_predict_data(X)
        basis = self.spline_.transform(self._standardise(X)) - self.basis_mean_
        return self._format(self.intercept_ + basis @ self.coef_.T)


# Gaussian process with a linear trend -------------------------------------------------


class GaussianProcessWeightRegressor(_BaseWeightRegressor):
    """Linear trend plus a Gaussian process, returning to the trend away from the data.

    The fit has two steps. First, an ordinary least-squares line is fitted to all
    parameters, and a ``GaussianProcessRegressor`` with kernel
    ``ConstantKernel * RBF + WhiteKernel`` is fitted to the residuals of all
    parameters at once. The residuals are divided by their per-parameter standard
    deviation first (what ``normalize_y=True`` does inside scikit-learn), so one
    set of kernel hyperparameters describes all parameters. Second, the trend is
    refitted by generalised least squares under the fitted kernel. This is the
    Gaussian process with an explicit linear mean and a flat prior on its
    coefficients, the limit of kernel ``K + b H H^T`` with trend basis ``H`` as
    ``b`` grows without bound. Its predictive variance includes the uncertainty of
    the trend, so the standard deviation keeps growing outside the training range
    instead of levelling off at the kernel's prior variance. Far from the data
    the RBF correlation vanishes and the mean equals the trend.

    Parameters
    ----------
    length_scale_bounds : tuple of float, default (0.1, 3.0)
        Bounds of the RBF length scale, in standard deviations of the
        predictors. Standardised training predictors span about 3 to 4 units.
        A longer length scale would describe curvature over the whole range,
        and that curvature should not be carried far beyond it.
    n_restarts_optimizer : int, default 2
        Extra starts of the kernel hyperparameter optimisation.
    random_state : int, RandomState or None, default 0
        Seed of those starts.

    Attributes
    ----------
    gp_ : sklearn.gaussian_process.GaussianProcessRegressor
        Fitted on the standardised residuals; its ``kernel_`` and ``L_`` are used for prediction.
    coef_ : numpy.ndarray, shape (n_parameters, n_predictors)
        Slopes of the trend per standardised predictor, in anomaly units.
    intercept_ : numpy.ndarray, shape (n_parameters,)
        Trend at the mean training predictor.
    dual_coef_ : numpy.ndarray, shape (n_subsets, n_parameters)
        ``K^-1 (Y - trend)``, the weights of the kernel part of the mean.
    residual_scale_ : numpy.ndarray, shape (n_parameters,)
        Standard deviation of each parameter's least-squares residuals (1 where zero).
    trend_covariance_ : numpy.ndarray, shape (1 + n_predictors, 1 + n_predictors)
        ``(H^T K^-1 H)^-1`` for the basis ``H = [1, Z]``; times ``residual_scale_**2``
        it is the covariance of each parameter's trend coefficients.
    x_min_, x_max_, x_std_ : numpy.ndarray, shape (n_predictors,)
        Range and standard deviation (ddof=0) of the training predictors.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = np.linspace(-1.0, 1.0, 10)[:, None]
    >>> Y = X + 0.2 * np.sin(3.0 * X) + 0.01 * rng.standard_normal((10, 2))
    >>> model = GaussianProcessWeightRegressor().fit(X, Y)
    >>> mean, std = model.predict([[0.0], [5.0]], return_std=True)
    >>> bool(std[1, 0] > std[0, 0])
    True
    """

    def __init__(
        self,
        length_scale_bounds: tuple[float, float] = (0.1, 3.0),
        n_restarts_optimizer: int = 2,
        random_state: int | np.random.RandomState | None = 0,
    ) -> None:
        self.length_scale_bounds = length_scale_bounds
        self.n_restarts_optimizer = n_restarts_optimizer
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> GaussianProcessWeightRegressor:
        """Fit on subset predictors ``X`` (n_subsets, n_predictors) and anomalies ``y`` (n_subsets, n_parameters)."""
        X, Y = self._validate_training_data(X, y)
        Z = self._standardise(X)
        H = self._trend_basis(Z)  # (n_subsets, 1 + n_predictors)

        # Step 1: least-squares trend, then kernel hyperparameters on the residuals.
        residuals = Y - LinearRegression().fit(Z, Y).predict(Z)  # (n_subsets, n_parameters)
        self.residual_scale_ = _safe_scale(residuals.std(axis=0))
        normalised = residuals / self.residual_scale_
        # Parameters whose anomalies are linear up to rounding would only add white
        # noise to the shared likelihood, so the hyperparameters come from the others.
        informative = residuals.std(axis=0) > 1e-8 * _safe_scale(Y.std(axis=0))
        kernel = ConstantKernel(1.0, (1e-4, 1e2)) * RBF(1.0, self.length_scale_bounds) + WhiteKernel(
            0.1, (1e-8, 1e1)
        )
        # NOTE: scikit-learn's likelihood gradient builds an array of
        # n_subsets * n_subsets * n_parameters floats; for large networks with many
        # subsets wrap this regressor in PCAWeightRegressor.
        self.gp_ = GaussianProcessRegressor(
            kernel,
            normalize_y=False,
            n_restarts_optimizer=self.n_restarts_optimizer,
            random_state=self.random_state,
        )
        if informative.any():
            self.gp_.fit(Z, normalised[:, informative])
        else:
            # Nothing to learn the kernel from: keep its starting hyperparameters.
            self.gp_.set_params(optimizer=None).fit(Z, np.zeros((len(Z), 1)))

        # Step 2: generalised least-squares trend under the kernel. A common
        # factor of K cancels in the estimate, so one K serves every parameter.
        K_inv_H = cho_solve((self.gp_.L_, True), H)  # (n_subsets, 1 + n_predictors)
        self.trend_covariance_ = np.linalg.pinv(H.T @ K_inv_H, hermitian=True)
        beta = self.trend_covariance_ @ (K_inv_H.T @ Y)  # (1 + n_predictors, n_parameters)
        self.intercept_, self.coef_ = beta[0], beta[1:].T
        self.dual_coef_ = cho_solve((self.gp_.L_, True), Y - H @ beta)
        return self

    @staticmethod
    def _trend_basis(Z: np.ndarray) -> np.ndarray:
        return np.column_stack([np.ones(len(Z)), Z])

    def _latent_covariance(self, Z: np.ndarray, K_cross: np.ndarray, full: bool) -> np.ndarray:
        """Covariance (or its diagonal) of the mean function at ``Z``, in units of ``residual_scale_**2``."""
        signal = self.gp_.kernel_.k1  # ConstantKernel * RBF, without the white noise
        V = solve_triangular(self.gp_.L_, K_cross.T, lower=True)  # (n_subsets, n)
        H = self._trend_basis(Z)
        # R = H* - K* K^-1 H is the part of the trend basis at Z that the data do
        # not fix through the kernel, one row per point.
        R = H - K_cross @ cho_solve((self.gp_.L_, True), self._trend_basis(self.gp_.X_train_))
        if full:
            return signal(Z) - V.T @ V + R @ self.trend_covariance_ @ R.T
        return signal.diag(Z) - (V**2).sum(axis=0) + np.einsum("ij,jk,ik->i", R, self.trend_covariance_, R)

    def _mean(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # (n, n_subsets). scikit-learn's WhiteKernel returns zeros for a cross-covariance.
        K_cross = self.gp_.kernel_(Z, self.gp_.X_train_)
        return self.intercept_ + Z @ self.coef_.T + K_cross @ self.dual_coef_, K_cross

    def predict(
        self, X: np.ndarray, return_std: bool = False, include_noise: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Predict the mean anomaly, and optionally its standard deviation.

        Parameters
        ----------
        X : array-like, shape (n, n_predictors)
            Application predictors.
        return_std : bool, default False
            Also return the predictive standard deviation of the mean function,
            including the uncertainty of the linear trend.
        include_noise : bool, default False
            Add the variance of the fitted ``WhiteKernel``, the spread of single
            fine-tuned anomalies about the mean function.

        Returns
        -------
        mean : numpy.ndarray, shape (n, n_parameters)
        std : numpy.ndarray, shape (n, n_parameters)
            Only with ``return_std``; in anomaly units.
        """
        X = self._validate_predict_data(X)
        Z = self._standardise(X)
        mean, K_cross = self._mean(Z)
        if not return_std:
            return self._format(mean)

        variance = self._latent_covariance(Z, K_cross, full=False)  # (n,)
        if include_noise:
            variance = variance + self.gp_.kernel_.k2.noise_level
        std = np.sqrt(np.maximum(variance, 0.0))[:, None] * self.residual_scale_
        return self._format(mean), self._format(std)

    def sample(
        self,
        X: np.ndarray,
        n_samples: int = 1,
        random_state: int | np.random.RandomState | None = None,
        include_noise: bool = False,
    ) -> np.ndarray:
        """Draw anomalies jointly over the rows of ``X`` from the predictive distribution.

        Parameters
        ----------
        X : array-like, shape (n, n_predictors)
            Application predictors.
        n_samples : int, default 1
            Number of draws.
        random_state : int, RandomState or None
            Seed of the draws.
        include_noise : bool, default False
            Add independent white noise of the fitted ``WhiteKernel`` variance.

        Returns
        -------
        numpy.ndarray, shape (n_samples, n, n_parameters)
        """
        _check_n_samples(n_samples)
        X = self._validate_predict_data(X)
        rng = check_random_state(random_state)

        Z = self._standardise(X)
        mean, K_cross = self._mean(Z)
        covariance = self._latent_covariance(Z, K_cross, full=True)  # (n, n), shared by all parameters
        if include_noise:
            covariance = covariance + self.gp_.kernel_.k2.noise_level * np.eye(len(Z))
        factor = _symmetric_square_root(covariance)
        standard = rng.standard_normal((n_samples, len(Z), len(self.residual_scale_)))
        draws = mean + np.einsum("ab,sbm->sam", factor, standard) * self.residual_scale_
        return self._format(draws)


# Polynomial ---------------------------------------------------------------------------


class PolynomialWeightRegressor(_BaseWeightRegressor):
    """Polynomial in the standardised predictors, warning whenever it extrapolates.

    A polynomial basis of degree 2 or more bends away without limit outside the
    training range, so ``predict`` warns with ``ExtrapolationWarning`` when any
    predictor lies outside it. Prefer ``spline`` or ``gp`` for extrapolation.

    Parameters
    ----------
    degree : int, default 2
        Polynomial degree, interaction terms included. Degree 1 is the linear
        model and does not warn.
    alphas : sequence of float or None, default ``logspace(-6, 3, 19)``
        Ridge penalties tried by leave-one-out cross-validation (``RidgeCV``);
        None fits ordinary least squares.

    Attributes
    ----------
    pipeline_ : sklearn.pipeline.Pipeline
        Scaler, polynomial features and linear model.
    alpha_ : float or None
        Penalty chosen; None for least squares.
    x_min_, x_max_, x_std_ : numpy.ndarray, shape (n_predictors,)
        Range and standard deviation (ddof=0) of the training predictors.
    """

    def __init__(self, degree: int = 2, alphas: Sequence[float] | None = DEFAULT_ALPHAS) -> None:
        self.degree = degree
        self.alphas = alphas

    def fit(self, X: np.ndarray, y: np.ndarray) -> PolynomialWeightRegressor:
        """Fit on subset predictors ``X`` (n_subsets, n_predictors) and anomalies ``y`` (n_subsets, n_parameters)."""
        if not isinstance(self.degree, (int, np.integer)) or isinstance(self.degree, bool) or self.degree < 1:
            raise ValueError(f"degree must be a positive integer, got {self.degree!r}.")
        X, Y = self._validate_training_data(X, y)

        model = LinearRegression() if self.alphas is None else RidgeCV(alphas=tuple(self.alphas))
        features = PolynomialFeatures(degree=self.degree, include_bias=False)
        self.pipeline_: Pipeline = make_pipeline(StandardScaler(), features, model).fit(X, Y)
        self.alpha_ = None if self.alphas is None else float(model.alpha_)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predict anomalies ``(n, n_parameters)``, warning when ``X`` leaves the training range."""
        X = self._validate_predict_data(X)
        distance = _range_distance(X, self.x_min_, self.x_max_, self.x_std_).max(axis=0, initial=0.0)
        if self.degree > 1 and np.any(distance > 0.0):
            per_predictor = ", ".join(f"{d:.3g}" for d in distance)
            warnings.warn(
                f"A polynomial weight regressor of degree {self.degree} is evaluated outside its training "
                f"range: the largest distance beyond it is {distance.max():.3g} training standard deviations "
                f"(per predictor: {per_predictor}). Polynomial bases diverge outside the data; use 'spline' "
                "or 'gp' to extrapolate.",
                ExtrapolationWarning,
                stacklevel=2,
            )
        return self._format(self.pipeline_.predict(X).reshape(len(X), -1))


# Principal components -----------------------------------------------------------------


def _inner_can_sample(regressor: PCAWeightRegressor) -> bool:
    """Check that the inner regressor of a PCA regressor has ``sample``, so ``hasattr`` reflects it."""
    inner_class = _FACTORIES[regressor.inner][0] if regressor.inner in _FACTORIES else None
    if not hasattr(inner_class, "sample"):
        raise AttributeError(
            f"The inner regressor {regressor.inner!r} cannot draw samples; "
            "use inner='bayesian_ridge' or inner='gp' for sample()."
        )
    return True


class PCAWeightRegressor(_BaseWeightRegressor):
    """Regress the leading principal components of the anomalies, then map back.

    ``sklearn.decomposition.PCA`` on the anomaly matrix ``Y`` (n_subsets,
    n_parameters) keeps the components that explain the requested share of the
    variance. The inner regressor maps predictors to the component scores, and
    ``predict`` returns ``inverse_transform`` of the predicted scores. Dropping
    the weak components removes anomaly directions that are mostly fine-tuning
    noise, and makes regressors with a cost per parameter (``gp``) cheap.

    Parameters
    ----------
    inner : str, default "ridge"
        Name of the regressor fitted to the scores, any of ``REGRESSORS`` except ``"pca"``.
    n_components : int, float or None, default 0.95
        As in ``sklearn.decomposition.PCA``: a number of components, a share of
        the variance in (0, 1), or None for all ``min(n_subsets, n_parameters)``.
    inner_params : dict or None, default None
        Parameters of the inner regressor.

    Attributes
    ----------
    pca_ : sklearn.decomposition.PCA
        Fitted on the anomalies.
    regressor_ : estimator
        The fitted inner regressor.
    n_components_ : int
        Components kept.
    x_min_, x_max_, x_std_ : numpy.ndarray, shape (n_predictors,)
        Range and standard deviation (ddof=0) of the training predictors.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(size=(8, 1))
    >>> Y = X @ rng.standard_normal((1, 50)) + 1e-3 * rng.standard_normal((8, 50))
    >>> PCAWeightRegressor(inner="linear").fit(X, Y).n_components_
    1
    """

    def __init__(
        self, inner: str = "ridge", n_components: int | float | None = 0.95, inner_params: dict | None = None
    ) -> None:
        self.inner = inner
        self.n_components = n_components
        self.inner_params = inner_params

    def fit(self, X: np.ndarray, y: np.ndarray) -> PCAWeightRegressor:
        """Fit on subset predictors ``X`` (n_subsets, n_predictors) and anomalies ``y`` (n_subsets, n_parameters)."""
        regressor = _make_inner(self.inner, dict(self.inner_params or {}))
        X, Y = self._validate_training_data(X, y)

        # Identical anomalies of every subset (for example all zero) have no variance,
        # so PCA keeps one arbitrary direction with zero scores and predicts the mean.
        with np.errstate(divide="ignore", invalid="ignore"):
            self.pca_ = PCA(n_components=self.n_components, svd_solver="full").fit(Y)
        self.n_components_ = int(self.pca_.n_components_)
        scores = self.pca_.transform(Y)  # (n_subsets, n_components)
        with warnings.catch_warnings():
            # fit has already warned about these predictors.
            warnings.simplefilter("ignore", CollinearityWarning)
            self.regressor_ = regressor.fit(X, scores)
        return self

    def _supports_std(self) -> bool:
        return "return_std" in inspect.signature(self.regressor_.predict).parameters

    def predict(
        self, X: np.ndarray, return_std: bool = False, include_noise: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Predict anomalies, and optionally their standard deviation, through the components.

        Parameters
        ----------
        X : array-like, shape (n, n_predictors)
            Application predictors.
        return_std : bool, default False
            Also return the standard deviation, for inner regressors that give
            one. Scores are treated as independent, so a parameter's variance is
            ``sum_k (std_k * component_kj)**2``.
        include_noise : bool, default False
            Passed to the inner regressor.

        Returns
        -------
        mean : numpy.ndarray, shape (n, n_parameters)
        std : numpy.ndarray, shape (n, n_parameters)
            Only with ``return_std``. NOTE: it leaves out the variance of the
            dropped components.
        """
        X = self._validate_predict_data(X)
        if not return_std:
            scores = self.regressor_.predict(X).reshape(len(X), self.n_components_)
            return self._format(self.pca_.inverse_transform(scores))

        if not self._supports_std():
            raise ValueError(
                f"The inner regressor {self.inner!r} gives no standard deviation; "
                "use inner='bayesian_ridge' or inner='gp' for return_std=True."
            )
        scores, score_std = self.regressor_.predict(X, return_std=True, include_noise=include_noise)
        std = np.sqrt(score_std**2 @ self.pca_.components_**2)  # (n, n_parameters)
        return self._format(self.pca_.inverse_transform(scores)), self._format(std)

    @available_if(_inner_can_sample)
    def sample(
        self,
        X: np.ndarray,
        n_samples: int = 1,
        random_state: int | np.random.RandomState | None = None,
        include_noise: bool = False,
    ) -> np.ndarray:
        """Draw anomalies by sampling component scores from the inner regressor.

        Only regressors whose inner regressor draws samples (``bayesian_ridge``,
        ``gp``) have this method.

        Parameters
        ----------
        X : array-like, shape (n, n_predictors)
            Application predictors.
        n_samples : int, default 1
            Number of draws.
        random_state : int, RandomState or None
            Seed of the draws.
        include_noise : bool, default False
            Passed to the inner regressor.

        Returns
        -------
        numpy.ndarray, shape (n_samples, n, n_parameters)
        """
        X = self._validate_predict_data(X)
        scores = self.regressor_.sample(X, n_samples, random_state=random_state, include_noise=include_noise)
        draws = scores @ self.pca_.components_ + self.pca_.mean_  # (n_samples, n, n_parameters)
        return self._format(draws)


# Factory ------------------------------------------------------------------------------

# Estimator class and fixed constructor parameters of each name in REGRESSORS.
_FACTORIES: dict[str, tuple[type[BaseEstimator], dict[str, Any]]] = {
    "linear": (WeightRegressor, {"method": "linear"}),
    "ridge": (WeightRegressor, {"method": "ridge"}),
    "bayesian_ridge": (BayesianWeightRegressor, {}),
    "spline": (SplineWeightRegressor, {}),
    "gp": (GaussianProcessWeightRegressor, {}),
    "polynomial": (PolynomialWeightRegressor, {}),
    "pca": (PCAWeightRegressor, {}),
}


def _allowed_params(method: str) -> list[str]:
    cls, fixed = _FACTORIES[method]
    names = set(cls().get_params(deep=False)) - set(fixed)
    if method == "linear":
        names.discard("alphas")  # least squares has no penalty
    return sorted(names)


def _check_method(method: str, allowed: Sequence[str], argument: str = "method") -> None:
    if not isinstance(method, str) or method not in allowed:
        raise ValueError(f"Unknown weight regressor {argument} {method!r}; choose one of {list(allowed)}.")


def _check_params(method: str, params: dict[str, Any], allowed: Sequence[str]) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"Unknown parameter {', '.join(map(repr, unknown))} for weight regressor {method!r}; "
            f"allowed parameters are {list(allowed)}."
        )


def _make_inner(inner: str, inner_params: dict[str, Any]) -> BaseEstimator:
    """Build the inner regressor of a PCA regressor, rejecting nested PCA."""
    _check_method(inner, [name for name in REGRESSORS if name != "pca"], argument="inner")
    return make_regressor(inner, **inner_params)


def make_regressor(method: str, **params: Any) -> BaseEstimator:
    """Build a weight regressor by name.

    Parameters
    ----------
    method : str
        One of ``REGRESSORS``: ``"linear"``, ``"ridge"``, ``"bayesian_ridge"``,
        ``"spline"``, ``"gp"``, ``"polynomial"`` or ``"pca"``.
    **params
        Constructor parameters of that regressor. For ``"pca"``, parameters
        other than ``inner``, ``n_components`` and ``inner_params`` go to the
        inner regressor.

    Returns
    -------
    sklearn.base.BaseEstimator
        An unfitted regressor.

    Raises
    ------
    ValueError
        For an unknown method or parameter; the message lists the allowed ones.

    Examples
    --------
    >>> make_regressor("spline", n_knots=3)
    SplineWeightRegressor(n_knots=3)
    >>> make_regressor("pca", inner="gp", n_components=2, n_restarts_optimizer=0)
    PCAWeightRegressor(inner='gp', inner_params={'n_restarts_optimizer': 0},
                       n_components=2)
    """
    _check_method(method, REGRESSORS)
    cls, fixed = _FACTORIES[method]

    if method == "pca":
        inner = params.pop("inner", "ridge")
        inner_params = {**(params.pop("inner_params", None) or {})}
        own = {name: params.pop(name) for name in list(params) if name in _allowed_params("pca")}
        inner_params.update(params)
        _check_method(inner, [name for name in REGRESSORS if name != "pca"], argument="inner")
        allowed_inner = _allowed_params(inner)
        _check_params(method, inner_params, _allowed_params("pca") + allowed_inner)
        return cls(inner=inner, inner_params=inner_params or None, **own)

    _check_params(method, params, _allowed_params(method))
    return cls(**fixed, **params)
