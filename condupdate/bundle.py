"""The adapted emulator: everything needed to predict from an xarray Dataset, saved and loaded safely."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from condupdate._errors import DataError
from condupdate._io import new_sibling_dir, swap_directory
from condupdate.data import Normalizer, stack_samples
from condupdate.emulators import MLP
from condupdate.emulators.mlp import gaussian_parts
from condupdate.jobs.config import RunConfig
from condupdate.jobs.prepare import build_inputs
from condupdate.update import ConditionalUpdate, load_anomalies, save_anomalies
from condupdate.update.spaces import make_space

__all__ = ["AdaptedEmulator", "save", "load", "fingerprint"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_PACKAGES = ("condupdate", "torch", "numpy", "xarray", "scikit-learn", "skops")


def fingerprint(*arrays: np.ndarray) -> str:
    """Return a SHA-256 digest of arrays' shapes, dtypes and bytes, identifying training data."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class AdaptedEmulator:
    """A parent emulator with its conditional weight update, ready to predict from xarray.

    It contains the configuration that describes inputs and predictors, the
    training climatology, the normalisers fitted on the training selection, the
    parent, the anomaly store and the fitted weight regressor. Build one with
    :func:`condupdate.run` or load one with :func:`load`.

    Parameters
    ----------
    config : RunConfig
    update : ConditionalUpdate
        Fitted (``fit_regressor`` done); its parent must be an :class:`~condupdate.emulators.MLP`
        for the model to be saved.
    input_normalizer, target_normalizer : Normalizer
    climatology : xarray.Dataset
        The ``training_mean`` inputs.
    variables : dict
        Attributes (``units`` among them) of every input and target variable, by name.
    training_fingerprint : str
        :func:`fingerprint` of the training inputs and targets.
    """

    def __init__(
        self,
        config: RunConfig,
        update: ConditionalUpdate,
        input_normalizer: Normalizer,
        target_normalizer: Normalizer,
        climatology: xr.Dataset,
        variables: dict[str, dict[str, Any]],
        training_fingerprint: str = "",
    ) -> None:
        self.config = config
        self.update = update
        self.input_normalizer = input_normalizer
        self.target_normalizer = target_normalizer
        self.climatology = climatology
        self.variables = variables
        self.training_fingerprint = training_fingerprint

    @property
    def features(self) -> list[str]:
        return [spec.name for spec in self.config.data.inputs if spec.feature]

    @property
    def targets(self) -> list[str]:
        return list(self.config.data.targets)

    @property
    def predictors(self) -> list[str]:
        return [spec.name for spec in self.config.predictors]

    @property
    def gaussian(self) -> bool:
        """Whether the network predicts a mean and a standard deviation per target."""
        return getattr(self.update.parent, "head", "mean") == "gaussian"

    def check_inputs(self, ds: xr.Dataset) -> None:
        """Raise :class:`DataError` if ``ds`` lacks an input variable or has other units than training."""
        needed = sorted({spec.variable for spec in self.config.data.inputs if spec.variable and spec.transform != "training_mean"})
        missing = [name for name in needed if name not in ds.data_vars]
        if missing:
            raise DataError(
                f"Variables {missing} needed by this emulator are missing; the data contain {sorted(map(str, ds.data_vars))}."
            )
        for name in needed:
            expected = self.variables.get(name, {}).get("units")
            got = ds[name].attrs.get("units")
            if expected is not None and got is not None and got != expected:
                raise DataError(
                    f"Variable {name!r} has units {got!r}, but the emulator was trained with {expected!r}; "
                    "convert the data first."
                )

    def predict(
        self,
        ds: xr.Dataset,
        method: str = "child",
        ensemble: str | None = None,
        n_samples: int = 10,
        random_state: int | None = 0,
        batch_size: int = 4096,
    ) -> xr.Dataset:
        """Predict the targets from the inputs of ``ds``; targets in ``ds`` are never read.

        Parameters
        ----------
        ds : xarray.Dataset
            Holds the input variables on the sample dims of the configuration.
        method : {"child", "parent"}
            The adapted child (per-sample predictors) or the unadapted parent.
        ensemble : {None, "members", "posterior"}
            With ``"members"`` one child per fine-tuning member, with
            ``"posterior"`` ``n_samples`` children drawn from the regressor's
            posterior; the result then gains a ``member`` dim.

        Returns
        -------
        xarray.Dataset
            One variable per target on the sample dims of ``ds`` with the target's
            attributes; NaN where an input or predictor is missing. With a
            Gaussian head (``emulator.head: gaussian``) each target ``NAME`` also
            gets ``NAME_std``, the predicted standard deviation in the target's units.
        """
        if method not in ("child", "parent"):
            raise ValueError(f"method must be 'child' or 'parent', got {method!r}.")
        self.check_inputs(ds)
        sample_dims = self.config.data.sample_dims
        inputs = build_inputs(ds, self.config, self.climatology)
        X_da = stack_samples(inputs, self.features, sample_dims)
        X = np.asarray(X_da.values, dtype="float64")
        P = np.asarray(stack_samples(inputs, [f"predictor:{n}" for n in self.predictors], sample_dims).values, dtype="float64")
        ok = np.isfinite(X).all(1) & np.isfinite(P).all(1)
        Xn = self.input_normalizer.transform(X[ok]).astype(np.float32)

        if method == "parent":
            with torch.no_grad():
                outputs = self.update.parent(torch.as_tensor(Xn)).numpy()[None]
        elif ensemble is None:
            outputs = self.update.predict(Xn, P[ok], batch_size=batch_size)[None]
        else:
            outputs = self.update.predict_ensemble(
                Xn, P[ok], source=ensemble, n_samples=n_samples, random_state=random_state, batch_size=batch_size
            )
        std = None
        if self.gaussian:
            # (member, sample, 2 * target) -> means and standard deviations; a
            # standard deviation scales with the target's scale and ignores its offset.
            outputs, std = gaussian_parts(outputs, len(self.targets))
            std = std.astype("float64") * self.target_normalizer.scale_
        outputs = self.target_normalizer.inverse_transform(outputs.astype("float64"))  # (member, sample, target)

        def to_field(values: np.ndarray) -> xr.DataArray:
            # (member, sample with finite inputs) -> (member, *sample_dims), NaN elsewhere
            full = np.full((values.shape[0], ok.size), np.nan)
            full[:, ok] = values
            flat = xr.DataArray(full, dims=("member", "sample"), coords={"sample": X_da["sample"]})
            field = flat.unstack("sample").transpose("member", *sample_dims)
            return field.assign_coords({d: ds[d] for d in sample_dims if d in ds.coords})

        result = xr.Dataset()
        for j, target in enumerate(self.targets):
            attrs = self.variables.get(target, {})
            result[target] = to_field(outputs[:, :, j]).assign_attrs(attrs)
            if std is not None:
                std_attrs = {k: attrs[k] for k in ("units",) if k in attrs}
                std_attrs["long_name"] = f"predicted standard deviation of {attrs.get('long_name', target)}"
                result[f"{target}_std"] = to_field(std[:, :, j]).assign_attrs(std_attrs)
        if method == "parent" or ensemble is None:
            result = result.isel(member=0, drop=True)
        else:
            result = result.assign_coords(member=np.arange(result.sizes["member"]))
        return result

    # Saving ---------------------------------------------------------------
    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the emulator to the folder ``path``; see :func:`save`."""
        return save(self, path, overwrite=overwrite)


def _versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def save(emulator: AdaptedEmulator, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Save an adapted emulator to the folder ``path``, atomically.

    The folder contains ``weights.pt`` (parent weights and ``theta0``, readable with
    ``torch.load(..., weights_only=True)``), ``anomalies.nc``, ``climatology.nc``,
    ``regressor.skops`` (the fitted regressors in skops' format, which loads only
    types the loader trusts and runs no pickled code) and ``metadata.json``
    (configuration, normalisers, variable attributes, seeds, package versions and
    the training-data fingerprint). The bundle is written to a temporary folder
    beside ``path`` and renamed into place, so a failed write never replaces a
    good bundle.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is false.
    TypeError
        If the parent is not a :class:`~condupdate.emulators.MLP`.
    """
    import skops.io

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"Model folder {str(path)!r} already exists; pass overwrite=True to replace it.")
    update = emulator.update
    if not isinstance(update.parent, MLP):
        raise TypeError(
            f"Only MLP parents can be saved as a bundle, got {type(update.parent).__name__}; "
            "save its state_dict and the anomalies yourself."
        )

    tmp = new_sibling_dir(path)
    try:
        torch.save(
            {
                "parent": {k: v.detach().cpu() for k, v in update.parent.state_dict().items()},
                "theta0": update.theta0_.detach().cpu(),
                "updated": torch.as_tensor(update.updated_),
            },
            tmp / "weights.pt",
        )
        save_anomalies(update.anomalies_, tmp / "anomalies.nc")
        emulator.climatology.to_netcdf(tmp / "climatology.nc")
        skops.io.dump({"regressor": update.regressor_, "members": list(update.member_regressors_)}, tmp / "regressor.skops")
        meta = {
            "format_version": FORMAT_VERSION,
            "config": emulator.config.model_dump(mode="json"),
            "emulator": update.parent.config,
            "input_normalizer": emulator.input_normalizer.to_dict(),
            "target_normalizer": emulator.target_normalizer.to_dict(),
            "variables": emulator.variables,
            "training_fingerprint": emulator.training_fingerprint,
            "train_predictors": update.train_predictors_.tolist(),
            "versions": _versions(),
        }
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=1, default=str))

        swap_directory(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path


def load(path: str | os.PathLike) -> AdaptedEmulator:
    """Load an emulator saved by :func:`save`, on the CPU whatever device it was saved from.

    Raises
    ------
    FileNotFoundError
        If ``path`` or one of its files is missing.
    ValueError
        If the bundle's format version is newer than this condupdate reads, or the
        regressor file holds types outside scikit-learn, numpy, scipy and condupdate.
    """
    import skops.io

    from condupdate.emulators import TrainConfig

    path = Path(path)
    for name in ("metadata.json", "weights.pt", "anomalies.nc", "climatology.nc", "regressor.skops"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"Model file {str(path / name)!r} not found; is {str(path)!r} a condupdate model folder?")
    meta = json.loads((path / "metadata.json").read_text())
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"Model {str(path)!r} has format version {meta['format_version']}; this condupdate reads up to "
            f"{FORMAT_VERSION}. Upgrade condupdate."
        )
    config = RunConfig.model_validate(meta["config"])
    weights = torch.load(path / "weights.pt", map_location="cpu", weights_only=True)

    untrusted = skops.io.get_untrusted_types(file=path / "regressor.skops")
    allowed_prefixes = ("sklearn.", "numpy.", "scipy.", "condupdate.", "builtins.")
    rejected = [t for t in untrusted if not t.startswith(allowed_prefixes)]
    if rejected:
        raise ValueError(f"Regressor file {str(path / 'regressor.skops')!r} contains untrusted types {rejected}; it was not loaded. Load only bundles written by condupdate.")
    regressors = skops.io.load(path / "regressor.skops", trusted=untrusted)

    parent = MLP(**meta["emulator"])
    parent.load_state_dict(weights["parent"])
    parent.eval()
    update_spec = config.update
    update = ConditionalUpdate(
        parent,
        regressor=regressors["regressor"],
        finetune=TrainConfig(**config.finetune.model_dump()),
        space=make_space(update_spec.parameters, n_layers=update_spec.n_layers, rank=update_spec.rank, seed=config.finetune.seed),
        members=update_spec.members,
        snr_threshold=update_spec.snr_threshold,
    )
    if not torch.equal(update.theta0_, weights["theta0"]):
        raise ValueError(f"Model {str(path)!r} is inconsistent: its parameter space does not rebuild the saved theta0.")
    update.set_anomalies(load_anomalies(path / "anomalies.nc"))
    update.regressor_ = regressors["regressor"]
    update.member_regressors_ = regressors["members"]
    update.updated_ = weights["updated"].numpy().astype(bool)
    update.train_predictors_ = np.asarray(meta["train_predictors"], dtype="float64")

    with xr.open_dataset(path / "climatology.nc") as clim:
        climatology = clim.load()
    return AdaptedEmulator(
        config,
        update,
        Normalizer.from_dict(meta["input_normalizer"]),
        Normalizer.from_dict(meta["target_normalizer"]),
        climatology,
        meta["variables"],
        meta["training_fingerprint"],
    )
