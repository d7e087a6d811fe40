"""Tests of condupdate.update: parameter vectors, the anomaly store, weight regressors and children."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr
from sklearn.utils.estimator_checks import parametrize_with_checks

from condupdate.datasets.synthetic import linear_weights_problem
from condupdate.emulators import MLP, TrainConfig, train
from condupdate.update import (
    ConditionalUpdate,
    WeightRegressor,
    anomalies_to_dataarray,
    anomaly_layout,
    load_anomalies,
    parameter_layout,
    parameter_vector,
    predictor_matrix,
    save_anomalies,
    unflatten,
    with_parameters,
)

SUBSETS = ["1860-1899", "1900-1939", "1940-1979", "1980-2019"]
# Global-mean surface temperature anomaly of each subset [K].
GMST = np.array([[-0.3], [-0.2], [0.0], [0.6]])


def _small_parent(n_outputs: int = 2) -> MLP:
    """Return an untrained seeded tanh MLP with 3 inputs and 2 hidden layers of 5 units."""
    return MLP(3, n_outputs, width=5, depth=2, seed=0)


def _anomaly_store(parent: torch.nn.Module, predictors: np.ndarray, names: list[str], seed: int) -> xr.DataArray:
    """Return a seeded anomaly store of random anomalies (standard deviation 0.1), one row per predictor row."""
    n_parameters = parameter_vector(parent).numel()
    rng = np.random.default_rng(seed)
    anomalies = 0.1 * rng.standard_normal((len(predictors), n_parameters))
    labels = [f"subset_{k}" for k in range(len(predictors))]
    return anomalies_to_dataarray(anomalies, labels, predictors, names, parameter_layout(parent))


def _rmse(model: torch.nn.Module, X: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        prediction = model(torch.as_tensor(X)).numpy()
    return float(np.sqrt(np.mean((prediction - y) ** 2)))


def _pooled(subsets: list[tuple[str, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Return the samples of all subsets stacked, the parent's training set."""
    return np.concatenate([X for _, X, _ in subsets]), np.concatenate([y for _, _, y in subsets])


# params ---------------------------------------------------------------------------


def test_parameter_vector_follows_named_order():
    parent = _small_parent()
    expected = torch.cat([p.detach().reshape(-1) for _, p in parent.named_parameters()])

    vector = parameter_vector(parent)

    assert torch.equal(vector, expected)
    assert not vector.requires_grad


def test_parameter_layout_names_and_shapes():
    parent = MLP(3, 2, width=5, depth=1, seed=0)

    layout = parameter_layout(parent)

    assert layout == [
        ("layers.0.weight", (5, 3)),
        ("layers.0.bias", (5,)),
        ("layers.2.weight", (2, 5)),
        ("layers.2.bias", (2,)),
    ]


def test_unflatten_round_trip():
    parent = _small_parent()

    tensors = unflatten(parameter_vector(parent), parameter_layout(parent))

    assert list(tensors) == [name for name, _ in parent.named_parameters()]
    for name, parameter in parent.named_parameters():
        assert torch.equal(tensors[name], parameter.detach()), name


def test_unflatten_keeps_leading_dims():
    parent = _small_parent()
    layout = parameter_layout(parent)
    stacked = torch.stack([parameter_vector(parent), 2 * parameter_vector(parent)])  # (2, n_parameters)

    tensors = unflatten(stacked, layout)

    for name, shape in layout:
        assert tensors[name].shape == (2, *shape), name
    assert torch.equal(tensors["layers.0.weight"][1], 2 * parent.layers[0].weight.detach())


def test_unflatten_rejects_wrong_length():
    parent = _small_parent()
    vector = torch.zeros(parameter_vector(parent).numel() + 1)
    layout = parameter_layout(parent)

    with pytest.raises(ValueError, match="the layout needs"):
        unflatten(vector, layout)


def test_with_parameters_round_trip():
    parent = _small_parent()
    vector = torch.arange(parameter_vector(parent).numel(), dtype=torch.float32)

    copy = with_parameters(parent, vector)

    assert torch.equal(parameter_vector(copy), vector)
    assert not copy.training


def test_with_parameters_leaves_module_unchanged():
    parent = _small_parent()
    before = parameter_vector(parent)

    with_parameters(parent, torch.zeros_like(before))

    assert torch.equal(parameter_vector(parent), before)


def test_with_parameters_rejects_wrong_length():
    parent = _small_parent()
    vector = torch.zeros(parameter_vector(parent).numel() - 1)

    with pytest.raises(ValueError, match="Parameter vector has"):
        with_parameters(parent, vector)


# Anomaly store ----------------------------------------------------------------------


def test_anomaly_store_labels():
    parent = _small_parent()
    layout = parameter_layout(parent)
    n_parameters = parameter_vector(parent).numel()
    anomalies = np.arange(len(SUBSETS) * n_parameters, dtype=float).reshape(len(SUBSETS), n_parameters)

    store = anomalies_to_dataarray(anomalies, SUBSETS, GMST, ["gmst"], layout)

    assert store.dims == ("subset", "parameter")
    assert store.name == "anomaly"
    assert list(store["subset"].values) == SUBSETS
    np.testing.assert_array_equal(store["parameter"].values, np.arange(n_parameters))
    np.testing.assert_array_equal(store["gmst"].values, GMST[:, 0])
    assert store["gmst"].dims == ("subset",)
    assert store["tensor"].dims == ("parameter",)
    assert store["tensor"].values[0] == "layers.0.weight"
    assert store["tensor"].values[-1] == "layers.4.bias"
    assert (store["tensor"].values == "layers.0.bias").sum() == 5
    np.testing.assert_array_equal(store.values, anomalies)


def test_anomaly_store_attrs():
    parent = _small_parent()
    layout = parameter_layout(parent)
    anomalies = np.zeros((len(SUBSETS), parameter_vector(parent).numel()))

    store = anomalies_to_dataarray(anomalies, SUBSETS, GMST, ["gmst"], layout)

    assert store.attrs["units"] == "1"
    assert json.loads(store.attrs["predictors"]) == ["gmst"]
    assert json.loads(store.attrs["tensor_names"]) == [name for name, _ in layout]
    assert json.loads(store.attrs["tensor_shapes"]) == [list(shape) for _, shape in layout]


def test_predictor_matrix_recovers_predictors():
    parent = _small_parent()
    predictors = np.array([[0.1, 200.0], [0.4, 500.0], [0.2, 1000.0]])

    store = _anomaly_store(parent, predictors, ["gmst", "depth"], seed=0)

    np.testing.assert_array_equal(predictor_matrix(store), predictors)


def test_anomaly_layout_recovers_layout():
    parent = _small_parent()

    store = _anomaly_store(parent, GMST, ["gmst"], seed=0)

    assert anomaly_layout(store) == parameter_layout(parent)


def test_anomaly_store_netcdf_round_trip(tmp_path):
    parent = _small_parent()
    store = _anomaly_store(parent, np.array([[0.1, 200.0], [0.4, 500.0], [0.2, 1000.0]]), ["gmst", "depth"], seed=0)

    path = save_anomalies(store, tmp_path / "anomalies.nc")
    loaded = load_anomalies(path)

    xr.testing.assert_identical(loaded, store)
    assert anomaly_layout(loaded) == parameter_layout(parent)
    np.testing.assert_array_equal(predictor_matrix(loaded), predictor_matrix(store))


class _FailingStore:
    """Stand-in for an anomaly DataArray whose netCDF writer fails half-way through."""

    def to_netcdf(self, path, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")


def test_save_anomalies_failure_keeps_old_file(tmp_path):
    store = _anomaly_store(_small_parent(), GMST, ["gmst"], seed=0)
    path = save_anomalies(store, tmp_path / "anomalies.nc")
    before = path.read_bytes()

    with pytest.raises(OSError, match="disk full"):
        save_anomalies(_FailingStore(), path)

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anomalies.nc"]


def test_save_anomalies_failure_leaves_no_file(tmp_path):
    with pytest.raises(OSError, match="disk full"):
        save_anomalies(_FailingStore(), tmp_path / "anomalies.nc")

    assert list(tmp_path.iterdir()) == []


# WeightRegressor --------------------------------------------------------------------


def _linear_anomalies(n_subsets: int, n_predictors: int, n_parameters: int, seed: int):
    """Return predictors (n_subsets, n_predictors), anomalies exactly linear in them, and the true map."""
    rng = np.random.default_rng(seed)
    predictors = rng.uniform(0.0, 1.0, (n_subsets, n_predictors))
    intercept = rng.standard_normal(n_parameters)
    slope = rng.standard_normal((n_predictors, n_parameters))
    return predictors, intercept + predictors @ slope, intercept, slope


def test_linear_regressor_reproduces_linear_dependence():
    predictors, anomalies, intercept, slope = _linear_anomalies(6, 2, 40, seed=0)
    # Inside and well outside the unit square of the training predictors.
    application = np.array([[0.5, 0.5], [3.0, -1.0], [-2.0, 4.0]])

    regressor = WeightRegressor(method="linear").fit(predictors, anomalies)

    np.testing.assert_allclose(regressor.predict(predictors), anomalies, rtol=0, atol=1e-10)
    np.testing.assert_allclose(regressor.predict(application), intercept + application @ slope, rtol=0, atol=1e-10)


def test_ridge_regressor_reproduces_linear_dependence():
    predictors, anomalies, intercept, slope = _linear_anomalies(6, 2, 40, seed=0)
    application = np.array([[0.5, 0.5], [3.0, -1.0], [-2.0, 4.0]])

    regressor = WeightRegressor(method="ridge").fit(predictors, anomalies)

    assert regressor.alpha_ == pytest.approx(1e-6)
    np.testing.assert_allclose(regressor.predict(application), intercept + application @ slope, rtol=0, atol=1e-4)


@pytest.mark.parametrize("method", ["linear", "ridge"])
def test_regressor_fits_all_parameters_at_once(method):
    predictors, anomalies, _, _ = _linear_anomalies(8, 3, 25, seed=1)

    regressor = WeightRegressor(method=method).fit(predictors, anomalies)

    assert regressor.n_features_in_ == 3
    assert regressor.pipeline_[-1].coef_.shape == (25, 3)
    assert regressor.predict(predictors[:2]).shape == (2, 25)


def test_linear_regressor_has_no_alpha():
    predictors, anomalies, _, _ = _linear_anomalies(4, 1, 3, seed=0)

    regressor = WeightRegressor(method="linear").fit(predictors, anomalies)

    assert regressor.alpha_ is None


def test_regressor_rejects_one_subset():
    regressor = WeightRegressor(method="linear")

    with pytest.raises(ValueError, match=r"at least 2 subsets \(one sample each\), got 1 sample"):
        regressor.fit(np.array([[0.3]]), np.array([[1.0, 2.0]]))


def test_regressor_rejects_unknown_method():
    predictors, anomalies, _, _ = _linear_anomalies(4, 1, 3, seed=0)
    regressor = WeightRegressor(method="quartic_magic")

    with pytest.raises(ValueError, match="Unknown weight regressor method 'quartic_magic'"):
        regressor.fit(predictors, anomalies)


@parametrize_with_checks([WeightRegressor(method="linear"), WeightRegressor(method="ridge")])
def test_regressor_sklearn_contract(estimator, check):
    check(estimator)


# ConditionalUpdate: exact parent ------------------------------------------------------


@pytest.mark.parametrize("method", ["linear", "ridge"])
def test_zero_anomaly_child_equals_parent(method):
    parent = _small_parent()
    zeros = np.zeros((len(SUBSETS), parameter_vector(parent).numel()))
    store = anomalies_to_dataarray(zeros, SUBSETS, GMST, ["gmst"], parameter_layout(parent))
    update = ConditionalUpdate(parent, WeightRegressor(method=method)).set_anomalies(store).fit_regressor()
    X = torch.randn(17, 3, generator=torch.Generator().manual_seed(0))

    child = update.child(2.5)

    assert torch.equal(parameter_vector(child), parameter_vector(parent))
    with torch.no_grad():
        assert torch.equal(child(X), parent(X))


# One shared predictor warmer than every training subset, or one predictor per sample.
@pytest.mark.parametrize("predictors", [np.full(17, 2.5), np.linspace(-1.0, 2.5, 17)], ids=["shared", "per-sample"])
@pytest.mark.parametrize("method", ["linear", "ridge"])
def test_zero_anomaly_predict_equals_parent(method, predictors):
    parent = _small_parent()
    zeros = np.zeros((len(SUBSETS), parameter_vector(parent).numel()))
    store = anomalies_to_dataarray(zeros, SUBSETS, GMST, ["gmst"], parameter_layout(parent))
    update = ConditionalUpdate(parent, WeightRegressor(method=method)).set_anomalies(store).fit_regressor()
    X = np.random.default_rng(0).standard_normal((17, 3)).astype(np.float32)
    with torch.no_grad():
        expected = parent(torch.as_tensor(X)).numpy()

    prediction = update.predict(X, predictors)

    np.testing.assert_array_equal(prediction, expected)


# ConditionalUpdate: known truth ---------------------------------------------------------


def test_linear_child_recovers_true_weights():
    problem = linear_weights_problem()
    X, y = _pooled(problem.subsets)
    parent = MLP(3, 1, depth=0, seed=0)
    train(parent, X, y, TrainConfig(epochs=100, learning_rate=1e-2, batch_size=64, patience=10))
    finetune = TrainConfig(epochs=200, learning_rate=1e-2, batch_size=64, patience=10)
    update = ConditionalUpdate(parent, WeightRegressor(method="linear"), finetune)
    # p = 3 lies 2 training ranges beyond the largest training predictor, 1.
    X_test, y_test = problem.sample(3.0, 500, seed=99)

    update.fit(problem.subsets, problem.predictors)
    child = update.child(3.0)

    np.testing.assert_allclose(child.layers[0].weight.detach().numpy()[0], problem.weights(3.0), rtol=0, atol=1e-3)
    assert abs(child.layers[0].bias.item()) < 1e-3
    assert _rmse(child, X_test, y_test) < 0.01 * _rmse(parent, X_test, y_test)


def test_tanh_child_beats_parent_outside_range():
    problem = linear_weights_problem(samples_per_subset=100)
    X, y = _pooled(problem.subsets)
    # Settings chosen by trial: a parent trained for many full-batch epochs, then
    # short full-batch fine-tuning without early stopping. With torch 2.13 on CPU,
    # six pairs of problem and init seeds (0 to 3) gave child-to-parent RMSE
    # ratios of 0.10 to 0.24 at p = 3. An early-stopped parent or longer
    # fine-tuning at a larger learning rate gave ratios above 1 in some trials.
    parent = MLP(3, 1, width=256, depth=1, activation="tanh", seed=0)
    train(parent, X, y, TrainConfig(epochs=300, learning_rate=3e-3, batch_size=len(X), validation_fraction=0.0, patience=0))
    finetune = TrainConfig(epochs=100, learning_rate=3e-4, batch_size=100, validation_fraction=0.0, patience=0)
    update = ConditionalUpdate(parent, WeightRegressor(method="linear"), finetune)
    X_test, y_test = problem.sample(3.0, 500, seed=99)

    update.fit(problem.subsets, problem.predictors)

    assert _rmse(update.child(3.0), X_test, y_test) < 0.3 * _rmse(parent, X_test, y_test)


# ConditionalUpdate: per-sample children ------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 4, 7, 4096])
@pytest.mark.parametrize("n_predictors", [1, 2])
def test_predict_matches_child_per_sample(batch_size, n_predictors):
    parent = _small_parent()
    rng = np.random.default_rng(n_predictors)
    train_predictors = rng.uniform(0.0, 1.0, (5, n_predictors))
    store = _anomaly_store(parent, train_predictors, [f"r{j}" for j in range(n_predictors)], seed=3)
    update = ConditionalUpdate(parent, WeightRegressor(method="linear")).set_anomalies(store).fit_regressor()
    X = rng.standard_normal((13, 3)).astype(np.float32)
    # Inside and outside the training range, with repeated rows so that samples share a child.
    predictors = rng.uniform(-1.0, 2.0, (13, n_predictors))
    predictors[5] = predictors[2]
    predictors[9] = predictors[2]

    prediction = torch.as_tensor(update.predict(X, predictors, batch_size=batch_size))

    assert prediction.shape == (13, 2)
    for i in range(len(X)):
        with torch.no_grad():
            expected = update.child(predictors[i])(torch.as_tensor(X[i : i + 1]))[0]
        assert torch.allclose(prediction[i], expected, rtol=1e-5, atol=1e-6), i


def test_predict_accepts_flat_predictors():
    parent = _small_parent()
    store = _anomaly_store(parent, GMST, ["gmst"], seed=3)
    update = ConditionalUpdate(parent, WeightRegressor(method="linear")).set_anomalies(store).fit_regressor()
    X = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    predictors = np.linspace(-0.5, 1.5, 6)

    flat = update.predict(X, predictors)
    column = update.predict(X, predictors[:, None])

    np.testing.assert_array_equal(flat, column)


def test_predict_empty_input_returns_empty():
    parent = _small_parent()
    store = _anomaly_store(parent, GMST, ["gmst"], seed=3)
    update = ConditionalUpdate(parent, WeightRegressor(method="linear")).set_anomalies(store).fit_regressor()

    prediction = update.predict(np.zeros((0, 3), dtype=np.float32), np.zeros(0))

    assert prediction.shape == (0, 2)


# ConditionalUpdate: forgetful fine-tuning ----------------------------------------------------


def _short_finetune() -> TrainConfig:
    return TrainConfig(epochs=3, learning_rate=1e-2, batch_size=16, patience=0, seed=0)


def test_anomalies_independent_of_subset_order():
    problem = linear_weights_problem(n_subsets=4, samples_per_subset=40)
    parent = MLP(3, 1, width=8, depth=1, seed=0)
    forward = ConditionalUpdate(parent, WeightRegressor(method="linear"), _short_finetune())
    backward = ConditionalUpdate(parent, WeightRegressor(method="linear"), _short_finetune())

    forward.fit_anomalies(problem.subsets, problem.predictors, ["p"])
    backward.fit_anomalies(problem.subsets[::-1], problem.predictors[::-1], ["p"])

    for label, _, _ in problem.subsets:
        a = forward.anomalies_.sel(subset=label)
        b = backward.anomalies_.sel(subset=label)
        assert np.array_equal(a.values, b.values), label
        assert a["p"].item() == b["p"].item(), label


def test_anomalies_are_nonzero_per_subset():
    problem = linear_weights_problem(n_subsets=3, samples_per_subset=40)
    parent = MLP(3, 1, width=8, depth=1, seed=0)
    update = ConditionalUpdate(parent, WeightRegressor(method="linear"), _short_finetune())

    update.fit_anomalies(problem.subsets, problem.predictors, ["p"])

    assert update.anomalies_.dims == ("subset", "parameter")
    assert list(update.anomalies_["subset"].values) == [label for label, _, _ in problem.subsets]
    assert set(update.histories_) == {label for label, _, _ in problem.subsets}
    for label, _, _ in problem.subsets:
        assert np.abs(update.anomalies_.sel(subset=label).values).max() > 0, label


def test_fit_leaves_parent_unchanged():
    problem = linear_weights_problem(n_subsets=3, samples_per_subset=40)
    parent = MLP(3, 1, width=8, depth=1, seed=0)
    before = {name: tensor.clone() for name, tensor in parent.state_dict().items()}
    update = ConditionalUpdate(parent, WeightRegressor(method="linear"), _short_finetune())

    update.fit(problem.subsets, problem.predictors, ["p"])

    assert parent.training
    for name, tensor in parent.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert torch.equal(update.theta0_, parameter_vector(parent))


# ConditionalUpdate: input checks ---------------------------------------------------------------


def test_fit_anomalies_rejects_wrong_name_count():
    problem = linear_weights_problem(n_subsets=3, samples_per_subset=20)
    update = ConditionalUpdate(MLP(3, 1, depth=0, seed=0), finetune=_short_finetune())

    with pytest.raises(ValueError, match="Got 2 predictor names for 1 predictor columns"):
        update.fit_anomalies(problem.subsets, problem.predictors, ["p", "q"])


def test_set_anomalies_rejects_other_network():
    store = _anomaly_store(MLP(3, 2, width=4, depth=1, seed=0), GMST, ["gmst"], seed=0)
    update = ConditionalUpdate(_small_parent())

    with pytest.raises(ValueError, match="Anomaly store has 26 parameters"):
        update.set_anomalies(store)


def test_fit_regressor_requires_anomalies():
    update = ConditionalUpdate(_small_parent())

    with pytest.raises(RuntimeError, match="No anomalies yet"):
        update.fit_regressor()


def test_child_requires_fitted_regressor():
    update = ConditionalUpdate(_small_parent())

    with pytest.raises(RuntimeError, match="weight regressor is not fitted"):
        update.child(0.5)
