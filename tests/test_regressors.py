"""Tests of condupdate.update.regressors: the weight regressors, their factory and the distance helpers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis
from sklearn.linear_model import BayesianRidge, LinearRegression
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from condupdate._errors import ExtrapolationWarning
from condupdate.update.regressors import (
    REGRESSORS,
    BayesianWeightRegressor,
    CollinearityWarning,
    GaussianProcessWeightRegressor,
    PCAWeightRegressor,
    PolynomialWeightRegressor,
    SplineWeightRegressor,
    WeightRegressor,
    mahalanobis_distance,
    make_regressor,
    predictor_distance,
)

# Application predictors inside the unit square of the training predictors and up
# to about 300 training standard deviations outside it.
APPLICATION = np.array([[0.5, 0.5], [1.5, 0.2], [3.0, -1.0], [-2.0, 4.0], [100.0, -50.0]])


def _linear_problem(n_subsets: int, n_predictors: int, n_parameters: int, seed: int):
    """Return predictors (n_subsets, n_predictors), anomalies exactly linear in them, and the true map."""
    rng = np.random.default_rng(seed)
    predictors = rng.uniform(0.0, 1.0, (n_subsets, n_predictors))
    intercept = rng.standard_normal(n_parameters)
    slope = rng.standard_normal((n_predictors, n_parameters))
    return predictors, intercept + predictors @ slope, intercept, slope


def _curved_problem(n_subsets: int, n_parameters: int, noise: float, seed: int):
    """Return one evenly spaced predictor on [-1, 1] and anomalies with a linear and a quadratic part."""
    rng = np.random.default_rng(seed)
    predictors = np.linspace(-1.0, 1.0, n_subsets)[:, None]
    slope = rng.standard_normal(n_parameters)
    curvature = rng.standard_normal(n_parameters)
    truth = predictors * slope + predictors**2 * curvature
    return predictors, truth + noise * rng.standard_normal(truth.shape), slope, curvature


def _standardised(X_train: np.ndarray, X: np.ndarray) -> np.ndarray:
    return StandardScaler().fit(X_train).transform(X)


# Linear dependence ---------------------------------------------------------------------

# Absolute error allowed on anomalies of order 100 at the farthest application
# point: the penalised and Bayesian fits shrink the slope by about 1e-6.
LINEAR_CASES = [
    ("linear", {}, 1e-9),
    ("ridge", {}, 1e-3),
    ("bayesian_ridge", {}, 1e-3),
    ("spline", {}, 1e-9),
    ("gp", {}, 1e-9),
    ("pca", {"inner": "linear"}, 1e-9),
]


@pytest.mark.parametrize(("method", "params", "atol"), LINEAR_CASES, ids=[case[0] for case in LINEAR_CASES])
def test_regressor_extrapolates_linear_dependence(method, params, atol):
    predictors, anomalies, intercept, slope = _linear_problem(8, 2, 30, seed=0)

    regressor = make_regressor(method, **params).fit(predictors, anomalies)

    np.testing.assert_allclose(regressor.predict(predictors), anomalies, rtol=0, atol=atol)
    np.testing.assert_allclose(regressor.predict(APPLICATION), intercept + APPLICATION @ slope, rtol=0, atol=atol)


def test_spline_linear_at_any_penalty():
    predictors, anomalies, intercept, slope = _linear_problem(8, 2, 30, seed=1)

    regressor = SplineWeightRegressor(alphas=(1e3,)).fit(predictors, anomalies)

    np.testing.assert_allclose(regressor.predict(APPLICATION), intercept + APPLICATION @ slope, rtol=0, atol=1e-9)


@pytest.mark.parametrize("method", REGRESSORS)
def test_zero_anomalies_predict_exact_zero(method):
    predictors, _, _, _ = _linear_problem(6, 2, 10, seed=2)
    inside = np.array([[0.4, 0.6], [0.5, 0.5]])

    regressor = make_regressor(method).fit(predictors, np.zeros((6, 10)))

    assert np.all(regressor.predict(inside) == 0.0)


@pytest.mark.parametrize("method", REGRESSORS)
def test_regressor_records_training_range(method):
    predictors, anomalies, _, _ = _linear_problem(7, 2, 5, seed=3)

    regressor = make_regressor(method).fit(predictors, anomalies)

    np.testing.assert_array_equal(regressor.x_min_, predictors.min(axis=0))
    np.testing.assert_array_equal(regressor.x_max_, predictors.max(axis=0))
    np.testing.assert_allclose(regressor.x_std_, predictors.std(axis=0), rtol=1e-12)


@pytest.mark.parametrize("method", REGRESSORS)
def test_regressor_keeps_one_dimensional_target(method):
    predictors, anomalies, _, _ = _linear_problem(7, 1, 1, seed=4)
    inside = np.array([[0.3], [0.6]])

    regressor = make_regressor(method).fit(predictors, anomalies[:, 0])

    assert regressor.predict(inside).shape == (2,)


# Polynomial ----------------------------------------------------------------------------


# Two predictors on 0..4 and 10..20, not collinear.
POLYNOMIAL_PREDICTORS = np.array(
    [[0.0, 10.0], [1.0, 20.0], [2.0, 12.0], [3.0, 18.0], [4.0, 14.0], [0.5, 16.0], [3.5, 11.0]]
)


def test_polynomial_warns_outside_range():
    anomalies = np.column_stack([POLYNOMIAL_PREDICTORS[:, 0] ** 2, POLYNOMIAL_PREDICTORS[:, 1]])
    regressor = PolynomialWeightRegressor(degree=3).fit(POLYNOMIAL_PREDICTORS, anomalies)
    std = POLYNOMIAL_PREDICTORS.std(axis=0)
    # Beyond the range by 2 standard deviations in predictor 0 and by 1 (in its units) in predictor 1.
    application = np.array([[2.0, 15.0], [4.0 + 2.0 * std[0], 21.0]])
    message = rf"degree 3 .* 2 training standard deviations \(per predictor: 2, {1.0 / std[1]:.3g}\)"

    with pytest.warns(ExtrapolationWarning, match=message):
        regressor.predict(application)


def test_polynomial_silent_inside_range():
    anomalies = np.column_stack([POLYNOMIAL_PREDICTORS[:, 0] ** 2, POLYNOMIAL_PREDICTORS[:, 1]])
    regressor = PolynomialWeightRegressor(degree=2, alphas=None).fit(POLYNOMIAL_PREDICTORS, anomalies)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prediction = regressor.predict(np.array([[0.0, 10.0], [2.5, 17.0], [4.0, 20.0]]))

    np.testing.assert_allclose(prediction, [[0.0, 10.0], [6.25, 17.0], [16.0, 20.0]], atol=1e-9)


def test_polynomial_degree_one_does_not_warn():
    predictors, anomalies, intercept, slope = _linear_problem(6, 2, 4, seed=5)
    regressor = PolynomialWeightRegressor(degree=1, alphas=None).fit(predictors, anomalies)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prediction = regressor.predict(APPLICATION)

    np.testing.assert_allclose(prediction, intercept + APPLICATION @ slope, atol=1e-9)


def test_polynomial_rejects_zero_degree():
    predictors, anomalies, _, _ = _linear_problem(6, 1, 4, seed=5)
    regressor = PolynomialWeightRegressor(degree=0)

    with pytest.raises(ValueError, match="degree must be a positive integer, got 0"):
        regressor.fit(predictors, anomalies)


# Spline --------------------------------------------------------------------------------


def test_spline_bends_inside_range():
    predictors, anomalies, slope, curvature = _curved_problem(9, 20, noise=0.01, seed=0)
    between = np.linspace(-0.95, 0.95, 40)[:, None]
    truth = between * slope + between**2 * curvature

    spline = SplineWeightRegressor().fit(predictors, anomalies)
    linear = WeightRegressor(method="linear").fit(predictors, anomalies)

    spline_error = np.sqrt(np.mean((spline.predict(between) - truth) ** 2))
    linear_error = np.sqrt(np.mean((linear.predict(between) - truth) ** 2))
    assert spline_error < 0.1 * linear_error


def test_spline_straight_beyond_last_knot():
    predictors, anomalies, _, _ = _curved_problem(9, 20, noise=0.01, seed=0)
    above = np.linspace(1.5, 40.0, 12)[:, None]
    below = np.linspace(-40.0, -1.5, 12)[:, None]
    regressor = SplineWeightRegressor().fit(predictors, anomalies)

    for outside in (above, below):
        prediction = regressor.predict(outside)
        second_difference = np.diff(prediction, n=2, axis=0)
        assert np.abs(second_difference).max() < 1e-9 * np.abs(prediction).max()


def test_spline_curvature_nonzero_inside():
    predictors, anomalies, _, _ = _curved_problem(9, 20, noise=0.01, seed=0)
    inside = np.linspace(-1.0, 1.0, 12)[:, None]

    prediction = SplineWeightRegressor().fit(predictors, anomalies).predict(inside)

    assert np.abs(np.diff(prediction, n=2, axis=0)).max() > 1e-3


@pytest.mark.parametrize(("n_subsets", "n_knots"), [(2, 2), (3, 2), (4, 3), (6, 4), (12, 4)])
def test_spline_default_knots_follow_subsets(n_subsets, n_knots):
    predictors, anomalies, _, _ = _linear_problem(n_subsets, 1, 3, seed=6)

    regressor = SplineWeightRegressor().fit(predictors, anomalies)

    assert regressor.n_knots_ == n_knots
    assert regressor.coef_.shape == (3, n_knots + 2)
    np.testing.assert_allclose(regressor.predict(predictors), anomalies, atol=1e-9)


def test_spline_additive_basis_per_predictor():
    predictors, anomalies, _, _ = _linear_problem(10, 3, 4, seed=7)

    regressor = SplineWeightRegressor(n_knots=3).fit(predictors, anomalies)

    assert regressor.coef_.shape == (4, 3 * (3 + 2))


def test_spline_rejects_one_knot():
    predictors, anomalies, _, _ = _linear_problem(6, 1, 3, seed=6)
    regressor = SplineWeightRegressor(n_knots=1)

    with pytest.raises(ValueError, match="n_knots must be an integer of at least 2 or None, got 1"):
        regressor.fit(predictors, anomalies)


# Gaussian process ----------------------------------------------------------------------


def _gp_problem():
    rng = np.random.default_rng(8)
    predictors = np.sort(rng.uniform(-1.0, 1.0, (10, 1)), axis=0)
    anomalies = 2.0 * predictors + 0.5 * np.sin(3.0 * predictors) * rng.standard_normal(6)
    return predictors, anomalies + 0.02 * rng.standard_normal(anomalies.shape)


def test_gp_far_from_data_equals_trend():
    predictors, anomalies = _gp_problem()
    regressor = GaussianProcessWeightRegressor().fit(predictors, anomalies)
    far = np.array([[-80.0], [60.0], [90.0]])

    # Generalised least squares under the fitted kernel, in standardised predictors.
    Z = _standardised(predictors, predictors)
    H = np.column_stack([np.ones(len(Z)), Z])
    K = regressor.gp_.kernel_(Z) + regressor.gp_.alpha * np.eye(len(Z))
    K_inv_H = np.linalg.solve(K, H)
    beta = np.linalg.solve(H.T @ K_inv_H, K_inv_H.T @ anomalies)
    Z_far = _standardised(predictors, far)
    trend = np.column_stack([np.ones(len(far)), Z_far]) @ beta

    np.testing.assert_allclose(regressor.predict(far), trend, rtol=1e-8, atol=1e-10)


def test_gp_std_matches_vague_trend_prior():
    predictors, anomalies = _gp_problem()
    regressor = GaussianProcessWeightRegressor().fit(predictors, anomalies)
    points = np.array([[-3.0], [0.1], [0.9], [4.0]])

    _, std = regressor.predict(points, return_std=True)

    # A zero-mean process with kernel K + b H H^T, H = [1, z], approaches a flat
    # prior on the trend coefficients as b grows.
    b = 1e5
    Z, Z_points = _standardised(predictors, predictors), _standardised(predictors, points)
    H, H_points = np.column_stack([np.ones(len(Z)), Z]), np.column_stack([np.ones(len(Z_points)), Z_points])
    signal = regressor.gp_.kernel_.k1
    K = regressor.gp_.kernel_(Z) + regressor.gp_.alpha * np.eye(len(Z)) + b * H @ H.T
    K_cross = signal(Z_points, Z) + b * H_points @ H.T
    prior = signal.diag(Z_points) + b * np.sum(H_points**2, axis=1)
    variance = prior - np.sum(K_cross * np.linalg.solve(K, K_cross.T).T, axis=1)
    np.testing.assert_allclose(std, np.sqrt(variance)[:, None] * regressor.residual_scale_, rtol=1e-4)


def test_gp_bends_inside_range():
    predictors, anomalies = _gp_problem()
    between = (predictors[1:] + predictors[:-1]) / 2.0

    regressor = GaussianProcessWeightRegressor().fit(predictors, anomalies)
    line = LinearRegression().fit(predictors, anomalies)

    residual = anomalies - line.predict(predictors)
    kernel_part = regressor.predict(between) - line.predict(between)
    assert np.abs(kernel_part).max() > 0.2 * np.abs(residual).max()


def test_gp_std_grows_away_from_data():
    predictors, anomalies = _gp_problem()
    regressor = GaussianProcessWeightRegressor().fit(predictors, anomalies)
    distances = np.array([0.0, 0.5, 2.0, 10.0, 100.0])
    points = predictors.max() + distances[:, None]

    _, std = regressor.predict(points, return_std=True)

    assert np.all(np.diff(std, axis=0) > 0.0)
    # The trend uncertainty keeps the growth going, about linearly, far away.
    np.testing.assert_allclose(std[-1] / std[-2], 100.0 / 10.0, rtol=0.15)


def test_gp_noise_adds_white_kernel_variance():
    predictors, anomalies = _gp_problem()
    regressor = GaussianProcessWeightRegressor().fit(predictors, anomalies)
    points = np.array([[0.0], [3.0]])

    _, latent = regressor.predict(points, return_std=True)
    _, total = regressor.predict(points, return_std=True, include_noise=True)

    noise_variance = regressor.gp_.kernel_.k2.noise_level * regressor.residual_scale_**2
    np.testing.assert_allclose(total**2, latent**2 + noise_variance, rtol=1e-10)


# Bayesian ridge ------------------------------------------------------------------------


def _bayesian_problem():
    rng = np.random.default_rng(9)
    predictors = rng.uniform(0.0, 3.0, (9, 2))
    # Parameters of very different size, as network weights are.
    scale = np.array([1e-4, 1.0, 30.0, 0.05])
    anomalies = (1.0 + predictors @ rng.standard_normal((2, 4)) + 0.3 * rng.standard_normal((9, 4))) * scale
    return predictors, anomalies


def test_bayesian_ridge_matches_sklearn_per_parameter():
    predictors, anomalies = _bayesian_problem()
    regressor = BayesianWeightRegressor(tol=1e-12, max_iter=2000).fit(predictors, anomalies)
    points = np.array([[1.0, 1.0], [4.0, -1.0], [20.0, 5.0]])
    mean, std = regressor.predict(points, return_std=True, include_noise=True)

    Z, Z_points = _standardised(predictors, predictors), _standardised(predictors, points)
    for j in range(anomalies.shape[1]):
        # The regressor standardises each parameter before the evidence maximisation.
        y_mean, y_std = anomalies[:, j].mean(), anomalies[:, j].std()
        reference = BayesianRidge(tol=1e-14, max_iter=10000).fit(Z, (anomalies[:, j] - y_mean) / y_std)
        reference_mean, reference_std = reference.predict(Z_points, return_std=True)

        np.testing.assert_allclose(regressor.coef_[j], reference.coef_ * y_std, rtol=1e-7, err_msg=f"{j}")
        np.testing.assert_allclose(regressor.alpha_[j], reference.alpha_, rtol=1e-6, err_msg=f"{j}")
        np.testing.assert_allclose(regressor.lambda_[j], reference.lambda_, rtol=1e-6, err_msg=f"{j}")
        np.testing.assert_allclose(mean[:, j], y_mean + y_std * reference_mean, rtol=1e-7, err_msg=f"{j}")
        np.testing.assert_allclose(std[:, j], y_std * reference_std, rtol=1e-7, err_msg=f"{j}")


def test_bayesian_ridge_matches_sklearn_underdetermined():
    rng = np.random.default_rng(10)
    predictors = rng.standard_normal((4, 6))
    anomalies = rng.standard_normal(4)
    points = rng.standard_normal((3, 6))
    with pytest.warns(CollinearityWarning):
        regressor = BayesianWeightRegressor(tol=1e-12, max_iter=2000).fit(predictors, anomalies)

    _, std = regressor.predict(points, return_std=True, include_noise=True)

    y_mean, y_std = anomalies.mean(), anomalies.std()
    reference = BayesianRidge(tol=1e-14, max_iter=10000).fit(
        _standardised(predictors, predictors), (anomalies - y_mean) / y_std
    )
    _, reference_std = reference.predict(_standardised(predictors, points), return_std=True)
    np.testing.assert_allclose(std, y_std * reference_std, rtol=1e-6)


def test_bayesian_ridge_std_grows_with_distance():
    predictors, anomalies = _bayesian_problem()
    regressor = BayesianWeightRegressor().fit(predictors, anomalies)
    centre = predictors.mean(axis=0)
    points = centre + np.array([0.0, 1.0, 3.0, 10.0, 100.0])[:, None] * np.array([1.0, -0.5])

    _, std = regressor.predict(points, return_std=True)

    assert np.all(np.diff(std, axis=0) > 0.0)


def test_bayesian_ridge_mean_same_with_std():
    predictors, anomalies = _bayesian_problem()
    regressor = BayesianWeightRegressor().fit(predictors, anomalies)

    mean, _ = regressor.predict(APPLICATION, return_std=True)

    np.testing.assert_array_equal(mean, regressor.predict(APPLICATION))


# Posterior samples ---------------------------------------------------------------------

SAMPLERS = {
    "bayesian_ridge": lambda: BayesianWeightRegressor(),
    "gp": lambda: GaussianProcessWeightRegressor(),
    "pca_bayesian_ridge": lambda: PCAWeightRegressor(inner="bayesian_ridge", n_components=None),
    "pca_gp": lambda: PCAWeightRegressor(inner="gp", n_components=2),
}


@pytest.mark.parametrize("name", SAMPLERS)
def test_sample_shape_and_seed(name):
    predictors, anomalies = _bayesian_problem()
    regressor = SAMPLERS[name]().fit(predictors, anomalies)

    first = regressor.sample(APPLICATION, 5, random_state=1)
    again = regressor.sample(APPLICATION, 5, random_state=1)
    other = regressor.sample(APPLICATION, 5, random_state=2)

    assert first.shape == (5, len(APPLICATION), anomalies.shape[1])
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("include_noise", [False, True], ids=["mean-function", "with-noise"])
@pytest.mark.parametrize("name", SAMPLERS)
def test_sample_moments_match_predict(name, include_noise):
    predictors, anomalies = _bayesian_problem()
    regressor = SAMPLERS[name]().fit(predictors, anomalies)
    points = np.array([[1.0, 1.0], [2.5, 0.5], [6.0, -2.0]])
    n_samples = 4000

    draws = regressor.sample(points, n_samples, random_state=0, include_noise=include_noise)
    mean, std = regressor.predict(points, return_std=True, include_noise=include_noise)

    # Five standard errors of the sample mean, and 10 % on the standard deviation.
    assert np.all(np.abs(draws.mean(axis=0) - mean) < 5.0 * std / np.sqrt(n_samples))
    np.testing.assert_allclose(draws.std(axis=0), std, rtol=0.1)


def test_sample_keeps_one_dimensional_target():
    predictors, anomalies = _bayesian_problem()
    regressor = BayesianWeightRegressor().fit(predictors, anomalies[:, 1])

    draws = regressor.sample(APPLICATION, 3, random_state=0)
    _, std = regressor.predict(APPLICATION, return_std=True)

    assert draws.shape == (3, len(APPLICATION))
    assert std.shape == (len(APPLICATION),)


def test_sample_rejects_zero_samples():
    predictors, anomalies = _bayesian_problem()
    regressor = BayesianWeightRegressor().fit(predictors, anomalies)

    with pytest.raises(ValueError, match="n_samples must be a positive integer, got 0"):
        regressor.sample(APPLICATION, 0)


# PCA -----------------------------------------------------------------------------------


def _low_rank_problem(noise: float, seed: int):
    """Return predictors (12, 4), anomalies along one direction plus isotropic noise, and the noise-free map.

    A linear fit on 4 predictors spreads the noise over 4 directions of the
    parameter space; one principal component keeps the signal direction only.
    """
    rng = np.random.default_rng(seed)
    predictors = rng.uniform(0.0, 1.0, (12, 4))
    loading = rng.standard_normal(4)
    direction = rng.standard_normal(200)
    direction /= np.linalg.norm(direction)

    def truth(X):
        return 3.0 * np.outer(X @ loading, direction)  # (n, n_parameters)

    anomalies = truth(predictors) + noise * rng.standard_normal((12, 200))
    return predictors, anomalies, truth


def test_pca_chooses_components_by_variance():
    rng = np.random.default_rng(11)
    predictors = rng.uniform(0.0, 1.0, (10, 1))
    scores = rng.standard_normal((10, 3)) * np.array([10.0, 1.0, 0.1])
    anomalies = (scores - scores.mean(axis=0)) @ np.linalg.qr(rng.standard_normal((50, 3)))[0].T
    singular_values = np.linalg.svd(anomalies - anomalies.mean(axis=0), compute_uv=False)
    share = np.cumsum(singular_values**2) / np.sum(singular_values**2)

    for variance in (0.5, 0.95, 0.999999):
        regressor = PCAWeightRegressor(inner="linear", n_components=variance).fit(predictors, anomalies)
        assert regressor.n_components_ == np.searchsorted(share, variance) + 1, variance
    assert PCAWeightRegressor(inner="linear", n_components=2).fit(predictors, anomalies).n_components_ == 2


def test_pca_with_all_components_equals_inner():
    predictors, anomalies, _, _ = _linear_problem(8, 2, 30, seed=12)
    anomalies = anomalies + 0.1 * np.random.default_rng(12).standard_normal(anomalies.shape)

    wrapped = PCAWeightRegressor(inner="ridge", n_components=None).fit(predictors, anomalies)
    direct = WeightRegressor(method="ridge").fit(predictors, anomalies)

    assert wrapped.n_components_ == 8
    assert wrapped.regressor_.alpha_ == direct.alpha_
    np.testing.assert_allclose(wrapped.predict(APPLICATION), direct.predict(APPLICATION), rtol=1e-9, atol=1e-9)


def test_pca_removes_noise_directions():
    predictors, anomalies, truth = _low_rank_problem(noise=0.02, seed=0)
    application = np.random.default_rng(1).uniform(-1.0, 2.0, (20, 4))

    wrapped = PCAWeightRegressor(inner="linear", n_components=1).fit(predictors, anomalies)
    direct = WeightRegressor(method="linear").fit(predictors, anomalies)

    wrapped_error = np.sqrt(np.mean((wrapped.predict(application) - truth(application)) ** 2))
    direct_error = np.sqrt(np.mean((direct.predict(application) - truth(application)) ** 2))
    assert wrapped_error < 0.6 * direct_error


def test_pca_std_sums_component_variances():
    predictors, anomalies, _ = _low_rank_problem(noise=0.05, seed=14)
    regressor = PCAWeightRegressor(inner="bayesian_ridge", n_components=3).fit(predictors, anomalies)
    points = np.array([[0.5, 0.5, 0.5, 0.5], [4.0, 0.0, 1.0, -2.0]])

    _, std = regressor.predict(points, return_std=True)

    _, score_std = regressor.regressor_.predict(points, return_std=True)
    components = regressor.pca_.components_  # (3, n_parameters)
    for j in (0, 17, 199):
        expected = np.sqrt(sum((score_std[:, k] * components[k, j]) ** 2 for k in range(3)))
        np.testing.assert_allclose(std[:, j], expected, rtol=1e-12, err_msg=f"{j}")


def test_pca_rejects_std_from_linear_inner():
    predictors, anomalies, _ = _low_rank_problem(noise=0.05, seed=14)
    regressor = PCAWeightRegressor(inner="ridge").fit(predictors, anomalies)

    with pytest.raises(ValueError, match="inner regressor 'ridge' gives no standard deviation"):
        regressor.predict(predictors, return_std=True)


@pytest.mark.parametrize(("inner", "can_sample"), [("bayesian_ridge", True), ("gp", True), ("spline", False)])
def test_pca_sample_follows_inner(inner, can_sample):
    assert hasattr(PCAWeightRegressor(inner=inner), "sample") is can_sample


def test_pca_rejects_sample_from_spline_inner():
    predictors, anomalies, _ = _low_rank_problem(noise=0.05, seed=14)
    regressor = PCAWeightRegressor(inner="spline").fit(predictors, anomalies)

    with pytest.raises(AttributeError, match="has no attribute 'sample'") as error:
        regressor.sample(predictors, 2)

    assert "inner regressor 'spline' cannot draw samples" in str(error.value.__cause__)


def test_pca_rejects_nested_pca():
    predictors, anomalies, _ = _low_rank_problem(noise=0.05, seed=14)
    regressor = PCAWeightRegressor(inner="pca")

    with pytest.raises(ValueError, match=r"Unknown weight regressor inner 'pca'; choose one of \['linear'"):
        regressor.fit(predictors, anomalies)


# Collinearity --------------------------------------------------------------------------


@pytest.mark.parametrize("method", REGRESSORS)
def test_collinear_predictors_warn(method):
    rng = np.random.default_rng(15)
    first = rng.uniform(0.0, 1.0, 10)
    predictors = np.column_stack([first, first + 0.01 * rng.standard_normal(10)])
    anomalies = rng.standard_normal((10, 3))
    expected = np.linalg.cond(_standardised(predictors, predictors))

    with pytest.warns(CollinearityWarning, match=f"condition number of the standardised predictor matrix is {expected:.3g}") as record:
        make_regressor(method).fit(predictors, anomalies)

    assert len([w for w in record if w.category is CollinearityWarning]) == 1
    assert expected > 30.0


def test_fewer_subsets_than_predictors_warn():
    rng = np.random.default_rng(16)
    regressor = WeightRegressor(method="ridge")
    predictors, anomalies = rng.standard_normal((3, 3)), rng.standard_normal((3, 2))

    with pytest.warns(CollinearityWarning, match="condition number of the standardised predictor matrix is inf"):
        regressor.fit(predictors, anomalies)


def test_independent_predictors_do_not_warn():
    predictors, anomalies, _, _ = _linear_problem(10, 3, 4, seed=17)

    with warnings.catch_warnings():
        warnings.simplefilter("error", CollinearityWarning)
        WeightRegressor(method="linear").fit(predictors, anomalies)


def test_warnings_point_to_caller():
    rng = np.random.default_rng(21)
    first = rng.uniform(0.0, 1.0, 10)
    predictors = np.column_stack([first, first + 1e-3 * rng.standard_normal(10)])
    regressor = PCAWeightRegressor(inner="polynomial")

    with pytest.warns(CollinearityWarning) as fit_record:
        regressor.fit(predictors, rng.standard_normal((10, 3)))
    with pytest.warns(ExtrapolationWarning) as predict_record:
        regressor.regressor_.predict(np.array([[5.0, 5.0]]))

    assert fit_record[0].filename == __file__
    assert predict_record[0].filename == __file__


# Distance helpers ----------------------------------------------------------------------


def test_predictor_distance_closed_form():
    X_train = np.array([[0.0, 10.0], [1.0, 10.0], [2.0, 30.0], [3.0, 30.0]])  # std sqrt(1.25) and 10
    X = np.array([[1.5, 20.0], [5.0, 20.0], [-1.0, 50.0], [3.0, 0.0]])

    distance = predictor_distance(X, X_train)

    expected = np.array([[0.0, 0.0], [2.0 / np.sqrt(1.25), 0.0], [1.0 / np.sqrt(1.25), 2.0], [0.0, 1.0]])
    np.testing.assert_allclose(distance, expected, rtol=1e-12)


def test_distance_constant_predictor_infinite():
    X_train = np.array([[0.0, 5.0], [1.0, 5.0], [2.0, 5.0]])

    distance = predictor_distance(np.array([[1.0, 5.0], [1.0, 5.5]]), X_train)

    np.testing.assert_array_equal(distance, [[0.0, 0.0], [0.0, np.inf]])


def test_mahalanobis_one_predictor_equals_standard_score():
    rng = np.random.default_rng(18)
    X_train = rng.normal(2.0, 3.0, (20, 1))
    X = np.array([[-4.0], [2.0], [9.0]])

    distance = mahalanobis_distance(X, X_train)

    np.testing.assert_allclose(distance, np.abs(X[:, 0] - X_train.mean()) / X_train.std(), rtol=1e-12)


def test_mahalanobis_matches_scipy():
    rng = np.random.default_rng(19)
    X_train = rng.standard_normal((15, 3)) @ np.array([[1.0, 0.5, 0.0], [0.0, 2.0, 0.3], [0.0, 0.0, 0.7]])
    X = rng.standard_normal((4, 3)) * 3.0
    precision = np.linalg.inv(np.cov(X_train, rowvar=False, bias=True))

    distance = mahalanobis_distance(X, X_train)

    expected = [mahalanobis(x, X_train.mean(axis=0), precision) for x in X]
    np.testing.assert_allclose(distance, expected, rtol=1e-10)


def test_mahalanobis_singular_covariance():
    first = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    X_train = np.column_stack([first, 2.0 * first])  # exactly collinear
    along = np.array([[7.0, 14.0], [2.0, 4.0]])

    distance = mahalanobis_distance(along, X_train)

    # On the training line the distance is the one-predictor standard score.
    np.testing.assert_allclose(distance, np.abs(along[:, 0] - first.mean()) / first.std(), rtol=1e-10)


def test_distance_rejects_other_predictor_count():
    X_train = np.zeros((4, 2))

    with pytest.raises(ValueError, match="X has 3 predictors but X_train has 2"):
        predictor_distance(np.zeros((1, 3)), X_train)


# Factory -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("linear", WeightRegressor(method="linear")),
        ("ridge", WeightRegressor(method="ridge")),
        ("bayesian_ridge", BayesianWeightRegressor()),
        ("spline", SplineWeightRegressor()),
        ("gp", GaussianProcessWeightRegressor()),
        ("polynomial", PolynomialWeightRegressor()),
        ("pca", PCAWeightRegressor()),
    ],
)
def test_make_regressor_builds_each_name(method, expected):
    regressor = make_regressor(method)

    assert type(regressor) is type(expected)
    assert regressor.get_params() == expected.get_params()


def test_make_regressor_names_cover_regressors():
    assert set(REGRESSORS) == {"linear", "ridge", "bayesian_ridge", "spline", "gp", "polynomial", "pca"}


def test_make_regressor_passes_params():
    regressor = make_regressor("polynomial", degree=3, alphas=None)

    assert regressor.get_params() == {"degree": 3, "alphas": None}


def test_make_regressor_rejects_unknown_method():
    with pytest.raises(ValueError, match=r"Unknown weight regressor method 'cubic'; choose one of \['linear', 'ridge'"):
        make_regressor("cubic")


def test_make_regressor_rejects_unknown_param():
    with pytest.raises(ValueError, match=r"Unknown parameter 'n_knots' for weight regressor 'gp'; allowed parameters are \["):
        make_regressor("gp", n_knots=4)


def test_make_regressor_rejects_alphas_for_linear():
    with pytest.raises(ValueError, match=r"Unknown parameter 'alphas' for weight regressor 'linear'; allowed parameters are \[\]"):
        make_regressor("linear", alphas=(1.0,))


def test_make_regressor_forwards_pca_inner_params():
    predictors, anomalies, _ = _low_rank_problem(noise=0.05, seed=20)

    regressor = make_regressor("pca", inner="spline", n_knots=3, n_components=2)
    regressor.fit(predictors, anomalies)

    assert regressor.inner_params == {"n_knots": 3}
    assert regressor.regressor_.n_knots_ == 3
    assert regressor.n_components_ == 2


def test_make_regressor_rejects_pca_inner_param():
    with pytest.raises(ValueError, match=r"Unknown parameter 'degree' for weight regressor 'pca'; allowed parameters are \["):
        make_regressor("pca", inner="spline", degree=2)


def test_weight_regressor_points_to_factory():
    predictors, anomalies, _, _ = _linear_problem(4, 1, 3, seed=0)
    regressor = WeightRegressor(method="spline")

    with pytest.raises(ValueError, match=r"Unknown weight regressor method 'spline'; WeightRegressor offers \['linear', 'ridge'\], and make_regressor"):
        regressor.fit(predictors, anomalies)


# scikit-learn estimator contract -------------------------------------------------------


# Every check applies and passes, so none is listed in expected_failed_checks.
# The polynomial regressor warns by design when a check predicts on rows outside
# its training range, for example a held-out split. That warning is tested above.
@pytest.mark.filterwarnings("ignore::condupdate._errors.ExtrapolationWarning")
@parametrize_with_checks([make_regressor(method) for method in REGRESSORS])
def test_regressor_sklearn_contract(estimator, check):
    check(estimator)

