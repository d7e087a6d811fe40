"""Forgetful fine-tuning, the anomaly store, weight regressors and children."""

from condupdate.update.align import align_to, canonicalize_signs, flip_hidden_units, permute_hidden_units
from condupdate.update.anomalies import (
    anomalies_to_dataarray,
    anomaly_layout,
    load_anomalies,
    predictor_matrix,
    save_anomalies,
)
from condupdate.update.conditional import DEFAULT_FINETUNE, ConditionalUpdate
from condupdate.update.params import parameter_layout, parameter_vector, unflatten, with_parameters
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
from condupdate.update.spaces import AllParameters, LowRankAdapters, ParameterSpace, SelectedParameters, make_space

__all__ = [
    "AllParameters",
    "BayesianWeightRegressor",
    "CollinearityWarning",
    "GaussianProcessWeightRegressor",
    "LowRankAdapters",
    "PCAWeightRegressor",
    "ParameterSpace",
    "PolynomialWeightRegressor",
    "SelectedParameters",
    "SplineWeightRegressor",
    "mahalanobis_distance",
    "make_regressor",
    "make_space",
    "predictor_distance",
    "DEFAULT_FINETUNE",
    "REGRESSORS",
    "ConditionalUpdate",
    "WeightRegressor",
    "align_to",
    "canonicalize_signs",
    "flip_hidden_units",
    "permute_hidden_units",
    "anomalies_to_dataarray",
    "anomaly_layout",
    "load_anomalies",
    "parameter_layout",
    "parameter_vector",
    "predictor_matrix",
    "save_anomalies",
    "unflatten",
    "with_parameters",
]
