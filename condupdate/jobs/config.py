"""The run configuration: a YAML file validated key by key before any work starts."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from condupdate._errors import ConfigError

__all__ = [
    "RunConfig",
    "InputSpec",
    "PredictorSpec",
    "load_config",
    "parse_config",
    "resolve_path",
]

SAMPLE_PREFIX = "sample:"
DATASET_PREFIX = "dataset:"  # data of a loader in condupdate.datasets.LOADERS
# Names of condupdate.emulators.ACTIVATIONS, repeated here so that reading a
# configuration does not import torch (a test checks that the two agree).
ACTIVATION_NAMES = ("elu", "gelu", "relu", "sigmoid", "silu", "tanh")


# A variable name in Unicode NFC, the form netCDF stores names in, so that a name
# typed with combining accents matches the files and the outputs written.
_VariableName = Annotated[str, AfterValidator(lambda name: unicodedata.normalize("NFC", name))]


class _Strict(BaseModel):
    # Unknown keys are errors: a misspelt key would otherwise be ignored silently.
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """One input feature: a variable (optionally reduced) or a coordinate."""

    name: _VariableName
    variable: _VariableName | None = None  # data variable in the input files
    coordinate: str | None = None  # coordinate used as a feature, for example latitude
    transform: Literal["none", "domain_mean", "training_mean"] = "none"
    # domain_mean: cos-latitude weighted mean over the horizontal dims, one value per time step.
    # training_mean: mean over the split dimension within the training selection (a climatology).
    feature: bool = True  # false: computed for use as a predictor but not fed to the network

    @model_validator(mode="after")
    def _one_source(self) -> InputSpec:
        if (self.variable is None) == (self.coordinate is None):
            raise ValueError(f"input {self.name!r} needs exactly one of 'variable' or 'coordinate'")
        if self.coordinate is not None and self.transform != "none":
            raise ValueError(f"input {self.name!r}: a coordinate takes no transform, got {self.transform!r}")
        return self


class PredictorSpec(_Strict):
    """One predictor: an input feature, a coordinate, or an external series in a file."""

    input: _VariableName | None = None  # name of an entry of data.inputs
    coordinate: str | None = None  # coordinate such as time (as decimal year) or depth
    path: str | None = None  # netCDF file with an external series
    variable: _VariableName | None = None  # variable in 'path'
    dim: str | None = None  # dimension the external series is aligned on, by label

    @model_validator(mode="after")
    def _one_source(self) -> PredictorSpec:
        sources = [s for s in ("input", "coordinate", "path") if getattr(self, s) is not None]
        if len(sources) != 1:
            raise ValueError(f"a predictor needs exactly one of 'input', 'coordinate' or 'path', got {sources or 'none'}")
        if self.path is not None and (self.variable is None or self.dim is None):
            raise ValueError("an external predictor from 'path' also needs 'variable' and 'dim'")
        return self

    @property
    def name(self) -> str:
        return self.input or self.coordinate or f"{self.variable}"


class DataSpec(_Strict):
    paths: list[str] = []  # netCDF files or a zarr store; "sample:NAME" for iris-sample-data; "dataset:NAME" for condupdate.datasets; empty with run(dataset=...)
    engine: str | None = None  # xarray backend, for example netcdf4 or h5netcdf
    group: str | None = None  # netCDF4 or zarr group holding the variables, for example "forecast/surface"; the root group when unset
    targets: Annotated[list[_VariableName], Field(min_length=1)]  # variables the emulator predicts
    inputs: Annotated[list[InputSpec], Field(min_length=1)]
    sample_dims: Annotated[list[str], Field(min_length=1)]  # dims that index samples
    thin: dict[str, Annotated[int, Field(ge=1)]] = {}  # keep every n-th step along these dims
    # Megabytes (2**20 bytes): train the parent from blocks read within this
    # much memory (condupdate.data.stream); null loads the training selection.
    memory_budget_mb: Any = None

    @model_validator(mode="after")
    def _positive_budget(self) -> DataSpec:
        budget = self.memory_budget_mb
        if budget is None:
            return self
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0 or budget == float("inf"):
            raise ValueError(
                f"memory_budget_mb must be a finite number of megabytes above 0, got {budget!r}; "
                "set for example memory_budget_mb: 256, or remove the key to load the training selection into memory"
            )
        return self


class SplitSpec(_Strict):
    dim: str  # dimension of the training/application split
    train: list[Any]  # [start, stop] inclusive range, or a list of labels with 'labels: true'
    apply: list[Any]
    labels: bool = False  # treat train/apply as label lists instead of ranges


class SubsetSpec(_Strict):
    method: Literal["window", "quantile", "label"] = "window"
    dim: str | None = None  # for window and label; default the split dim
    size: Annotated[int, Field(ge=1)] = 10  # window length in steps along dim
    bins: Annotated[int, Field(ge=2)] = 10  # number of quantile bins of the first predictor


class EmulatorSpec(_Strict):
    width: Annotated[int, Field(ge=1)] = 64
    depth: Annotated[int, Field(ge=0)] = 2
    activation: str = "tanh"
    # mean: one prediction per target. gaussian: a mean and a standard deviation per
    # target, trained with the Gaussian negative log-likelihood and scored with CRPS.
    head: Literal["mean", "gaussian"] = "mean"

    @model_validator(mode="after")
    def _known_activation(self) -> EmulatorSpec:
        if self.activation not in ACTIVATION_NAMES:
            raise ValueError(f"activation {self.activation!r} is not one of {list(ACTIVATION_NAMES)}")
        return self


class TrainingSpec(_Strict):
    epochs: Annotated[int, Field(ge=1)] = 50
    batch_size: Annotated[int, Field(ge=1)] = 1024
    learning_rate: Annotated[float, Field(gt=0)] = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    validation_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.1
    patience: Annotated[int, Field(ge=0)] = 5
    seed: int = 0


class FinetuneSpec(TrainingSpec):
    epochs: Annotated[int, Field(ge=1)] = 20
    learning_rate: Annotated[float, Field(gt=0)] = 3e-4


class RegressorSpec(_Strict):
    method: str = "ridge"  # one of condupdate.update.REGRESSORS
    params: dict[str, Any] = {}  # keyword arguments of that regressor, e.g. {degree: 2} for polynomial

    @model_validator(mode="after")
    def _known_regressor(self) -> RegressorSpec:
        from condupdate.update.regressors import make_regressor

        make_regressor(self.method, **self.params)
        return self


class CandidateSpec(_Strict):
    """One candidate of update.select: which parameters move and which regressor extrapolates them."""

    parameters: Literal["none", "all", "biases", "last_layers", "lora"]  # none: the parent itself
    n_layers: Annotated[int, Field(ge=1)] | None = None  # last_layers only; default update.n_layers
    rank: Annotated[int, Field(ge=1)] | None = None  # lora only; default update.rank
    regressor: str | None = None  # one of condupdate.update.REGRESSORS; default regressor.method
    regressor_params: dict[str, Any] = {}  # keyword arguments of that regressor

    @model_validator(mode="after")
    def _consistent(self) -> CandidateSpec:
        if self.n_layers is not None and self.parameters != "last_layers":
            raise ValueError(f"n_layers applies to parameters 'last_layers' only, got parameters {self.parameters!r}")
        if self.rank is not None and self.parameters != "lora":
            raise ValueError(f"rank applies to parameters 'lora' only, got parameters {self.parameters!r}")
        if self.parameters == "none" and (self.regressor is not None or self.regressor_params):
            raise ValueError("candidate 'none' is the parent and takes no regressor, so remove regressor and regressor_params")
        if self.regressor_params and self.regressor is None:
            raise ValueError("regressor_params needs regressor: name the regressor these keywords belong to")
        if self.regressor is not None:
            from condupdate.update.regressors import make_regressor

            make_regressor(self.regressor, **self.regressor_params)
        return self


class SelectSpec(_Strict):
    """Choice of the update on training data: candidates scored on the subsets nearest the application predictors."""

    candidates: Annotated[list[CandidateSpec], Field(min_length=1)]  # 'none' (the parent) is always added
    holdout: Annotated[int, Field(ge=1)] = 2  # subsets held out at the application end of the predictor range
    # retrain: a parent trained without the held-out subsets (honest, one more parent training).
    # reuse: the run's parent, which has seen the held-out subsets (cheaper, favours 'none').
    parent: Literal["retrain", "reuse"] = "retrain"

    @model_validator(mode="after")
    def _distinct(self) -> SelectSpec:
        seen = [c.model_dump() for c in self.candidates]
        repeated = [c for k, c in enumerate(seen) if c in seen[:k]]
        if repeated:
            raise ValueError(f"update.select.candidates repeats {repeated}; list each candidate once")
        return self


class UpdateSpec(_Strict):
    parameters: Literal["all", "biases", "last_layers", "lora"] = "all"  # which parameters move
    n_layers: Annotated[int, Field(ge=1)] = 1  # last_layers: how many layers with parameters move
    rank: Annotated[int, Field(ge=1)] = 2  # lora: adapter rank
    members: Annotated[int, Field(ge=1)] = 1  # fine-tuning seeds per subset
    snr_threshold: Annotated[float, Field(ge=0)] | None = None  # update only parameters with this signal-to-noise or more
    ensemble: Literal["none", "members", "posterior"] = "none"  # child ensemble written beside the child
    n_samples: Annotated[int, Field(ge=2)] = 10  # posterior ensemble size
    engine: Literal["sequential", "batched"] = "sequential"  # batched: fine-tune all subsets at once with vmap
    # Choose parameters and regressor on the training subsets (condupdate.update.selection);
    # the chosen candidate replaces parameters, n_layers, rank and the regressor section.
    select: SelectSpec | None = None

    @model_validator(mode="after")
    def _needs_members(self) -> UpdateSpec:
        if self.select is not None and self.ensemble == "posterior":
            raise ValueError(
                "ensemble 'posterior' cannot be combined with update.select, because the candidate 'none' and "
                "regressors without posterior samples may be chosen; use ensemble 'members' or remove update.select"
            )
        if self.ensemble == "members" and self.members < 2:
            raise ValueError(f"ensemble 'members' needs members >= 2, got members={self.members}")
        if self.snr_threshold is not None and self.members < 2:
            raise ValueError(f"snr_threshold needs members >= 2 to measure noise, got members={self.members}")
        return self


class RunConfig(_Strict):
    """A whole run: data, split, subsets, predictors, emulator, training and regressor."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")] = "run"  # one folder name: letters, digits, . _ -
    data: DataSpec
    split: SplitSpec
    subsets: SubsetSpec = SubsetSpec()
    predictors: Annotated[list[PredictorSpec], Field(min_length=1)]
    emulator: EmulatorSpec = EmulatorSpec()
    training: TrainingSpec = TrainingSpec()
    finetune: FinetuneSpec = FinetuneSpec()
    regressor: RegressorSpec = Field(default_factory=RegressorSpec)
    update: UpdateSpec = UpdateSpec()

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfig:
        names = [spec.name for spec in self.data.inputs]
        if not any(spec.feature for spec in self.data.inputs):
            raise ValueError("data.inputs needs at least one entry with feature: true, the network's inputs")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"data.inputs names must be unique, got duplicates {duplicates}")
        for spec in self.predictors:
            if spec.input is not None and spec.input not in names:
                raise ValueError(f"predictor input {spec.input!r} is not among data.inputs {names}")
        if self.update.ensemble == "posterior":
            from condupdate.update.regressors import make_regressor

            if not hasattr(make_regressor(self.regressor.method, **self.regressor.params), "sample"):
                raise ValueError(
                    f"ensemble 'posterior' needs a regressor with posterior samples (bayesian_ridge, gp), "
                    f"got {self.regressor.method!r}"
                )
        if self.split.dim not in self.data.sample_dims:
            raise ValueError(f"split.dim {self.split.dim!r} must be one of data.sample_dims {self.data.sample_dims}")
        if not self.split.labels:
            for key in ("train", "apply"):
                value = getattr(self.split, key)
                if len(value) != 2:
                    raise ValueError(
                        f"split.{key} must be [start, stop], got {value!r}; set split.labels: true to give labels"
                    )
        return self


def _allowed_keys(loc: tuple) -> list[str]:
    # Follow the error location through the nested models to the one holding the key.
    model: type[BaseModel] = RunConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        args = getattr(annotation, "__args__", ()) or (annotation,)
        nested = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return list(model.model_fields)


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"Invalid configuration {source}:"]
    for item in err.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_keys(item["loc"]))
            lines.append(f"  {key}: unknown key (value {item.get('input')!r}); allowed keys here: {allowed}")
        elif item["type"] == "missing":
            lines.append(f"  {key}: missing required key")
        elif item["type"] == "value_error" or isinstance(item.get("input"), dict):
            # Checks across several keys: the message names the keys, and the input
            # would be a whole section of the file.
            lines.append(f"  {key}: {item['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"  {key}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def parse_config(raw: dict[str, Any], source: str = "(dict)") -> RunConfig:
    """Validate a configuration mapping, raising :class:`ConfigError` with every bad key listed."""
    if not isinstance(raw, dict):
        raise ConfigError(f"Configuration {source} must be a mapping of keys, got {type(raw).__name__}.")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | os.PathLike) -> RunConfig:
    """Read and validate a YAML configuration file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Configuration file {str(path)!r} not found.")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"Configuration file {str(path)!r} is not valid YAML: {err}") from err
    config = parse_config(raw, source=repr(str(path)))
    data = config.data.model_copy(update={"paths": [_relative_to(path.parent, p) for p in config.data.paths]})
    predictors = [
        spec if spec.path is None else spec.model_copy(update={"path": _relative_to(path.parent, spec.path)})
        for spec in config.predictors
    ]
    return config.model_copy(update={"data": data, "predictors": predictors})


def _relative_to(folder: Path, path: str) -> str:
    # Relative paths in a config file are read relative to that file's folder.
    if path.startswith((SAMPLE_PREFIX, DATASET_PREFIX)) or Path(path).is_absolute():
        return path
    return str(folder / path)


def resolve_path(path: str) -> Path:
    """Resolve ``sample:NAME`` to a file of the ``iris-sample-data`` package; return other paths as they are."""
    if not path.startswith(SAMPLE_PREFIX):
        return Path(path)
    try:
        import iris_sample_data
    except ImportError as err:
        raise ConfigError(
            f"Path {path!r} needs the sample data package; install it with "
            "pip install 'condupdate[sample]' (or pip install iris-sample-data)."
        ) from err
    return Path(iris_sample_data.path) / path[len(SAMPLE_PREFIX) :]
