"""Checkpoints of finished units of work, so that a killed or failed run resumes where it stopped.

A checkpoint is a folder with ``manifest.json`` and one file per finished unit
under ``units/``. The manifest stores a SHA-256 hash of the run's key (its
configuration and the settings that change results), and a checkpoint with
another key is rejected. Each unit file stores the unit's name, a hash of the
unit's arguments and its result. A unit whose arguments changed, for example
because its training data changed, is computed again.

Unit files are written with :func:`condupdate._io.atomic_path`, so a process
killed while writing leaves the earlier file or none, never a partial one. The
results are stored with :func:`torch.save` and read back with
``torch.load(weights_only=True)``, so nothing in a checkpoint is unpickled as
arbitrary Python objects.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from condupdate._errors import ConfigError
from condupdate._io import atomic_path
from condupdate.emulators.training import TrainHistory

__all__ = ["Checkpoint", "hash_arguments", "hash_key"]

logger = logging.getLogger(__name__)

_MANIFEST = "manifest.json"
_FORMAT = 1  # version of the folder layout, stored in the manifest


def hash_key(key: Mapping[str, Any]) -> str:
    """Return the SHA-256 hex digest of a JSON-serialisable mapping, independent of key order."""
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def hash_arguments(function: Any, args: tuple) -> str:
    """Return a SHA-256 hex digest of a unit function and its arguments.

    Arrays and tensors are hashed by dtype, shape and bytes, modules by class,
    repr, trainable flags and state dict, and dataclasses field by field, leaving out a
    ``progress`` field because it only switches progress bars.

    Raises
    ------
    TypeError
        If an argument has a type whose hash would not be stable between processes.
    """
    digest = hashlib.sha256()
    _update(digest, f"{function.__module__}.{function.__qualname__}")
    _update(digest, args)
    return digest.hexdigest()


def _update(digest: Any, value: Any) -> None:
    # Each value is prefixed with its type, so that for example the list [1, 2]
    # and the tuple (1, 2), or the string "1" and the integer 1, hash differently.
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        digest.update(f"ndarray {array.dtype.str} {array.shape}".encode())
        digest.update(array.tobytes())
    elif isinstance(value, nn.Module):
        # The repr names the layers and activations, which the state dict leaves out.
        digest.update(f"module {type(value).__module__}.{type(value).__qualname__} {value!r}".encode())
        _update(digest, [(name, p.requires_grad) for name, p in value.named_parameters()])
        _update(digest, dict(value.state_dict()))
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.name != "progress"}
        digest.update(f"dataclass {type(value).__qualname__}".encode())
        _update(digest, fields)
    elif isinstance(value, Mapping):
        digest.update(f"mapping {len(value)}".encode())
        for key in sorted(value, key=repr):
            _update(digest, key)
            _update(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__} {len(value)}".encode())
        for item in value:
            _update(digest, item)
    elif value is None or isinstance(value, (bool, int, float, str, np.generic)):
        digest.update(f"{type(value).__name__} {value!r}".encode())
    elif hasattr(value, "__dict__") and type(value).__module__.startswith("condupdate."):
        # Plain condupdate objects such as parameter spaces: class and settings.
        digest.update(f"object {type(value).__module__}.{type(value).__qualname__}".encode())
        _update(digest, vars(value))
    else:
        raise TypeError(
            f"Cannot hash a unit argument of type {type(value).__name__}; pass arrays, tensors, modules, "
            "dataclasses, mappings, sequences or plain numbers and strings."
        )


def _encode(value: Any) -> Any:
    # Results contain numpy arrays and TrainHistory objects, which torch.load with
    # weights_only=True does not accept, so they are stored as tagged mappings.
    if isinstance(value, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(value))}
    if isinstance(value, TrainHistory):
        return {"__history__": dataclasses.asdict(value)}
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, tuple):
        return tuple(_encode(item) for item in value)
    if isinstance(value, list):
        return [_encode(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _encode(item) for key, item in value.items()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"__ndarray__"}:
        return value["__ndarray__"].numpy()
    if isinstance(value, dict) and set(value) == {"__history__"}:
        return TrainHistory(**value["__history__"])
    if isinstance(value, tuple):
        return tuple(_decode(item) for item in value)
    if isinstance(value, list):
        return [_decode(item) for item in value]
    if isinstance(value, dict):
        return {key: _decode(item) for key, item in value.items()}
    return value


def _file_name(name: str) -> str:
    # Unit names contain subset labels, which may contain any character. The file
    # name keeps the safe characters for readability and adds a hash of the whole
    # name, so two names that differ only in unsafe characters do not collide.
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:80] or "unit"
    return f"{readable}.{hashlib.sha256(name.encode()).hexdigest()[:12]}.pt"


class Checkpoint:
    """A folder of finished units of one run.

    Parameters
    ----------
    path : path
        The checkpoint folder. It is created on :meth:`open` and left in place
        until :meth:`remove`, so a rerun after a killed process finds it.
    key : mapping
        JSON-serialisable description of the run (configuration, versions and
        settings that change results). A folder written with another key is rejected.
    """

    def __init__(self, path: str | os.PathLike, key: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.key = dict(key)
        self.key_sha256 = hash_key(self.key)

    @property
    def units_dir(self) -> Path:
        return self.path / "units"

    def open(self) -> Checkpoint:
        """Create the folder, or check that an existing one was written with the same key.

        Raises
        ------
        ConfigError
            If the folder contains a checkpoint of another configuration.
        NotADirectoryError
            If the path is a file.
        """
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"Checkpoint path {str(self.path)!r} is a file; move it away or delete it.")
        manifest = self.path / _MANIFEST
        if manifest.is_file():
            self._check_manifest(manifest)
        elif self.path.is_dir() and any(self.path.iterdir()):
            raise ConfigError(
                f"Checkpoint folder {str(self.path)!r} is not empty but has no {_MANIFEST}, so it was not written "
                "by condupdate; move or delete it, or choose another --out."
            )
        self.units_dir.mkdir(parents=True, exist_ok=True)
        if not manifest.is_file():
            with atomic_path(manifest) as tmp:
                tmp.write_text(json.dumps({"format": _FORMAT, "key_sha256": self.key_sha256, "key": self.key}, indent=2, default=str))
        return self

    def _check_manifest(self, manifest: Path) -> None:
        try:
            stored = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(
                f"Checkpoint manifest {str(manifest)!r} cannot be read ({err}); delete the folder "
                f"{str(self.path)!r} to start the run over."
            ) from err
        if stored.get("key_sha256") == self.key_sha256:
            return
        old_key = stored.get("key", {})
        changed = sorted(k for k in set(old_key) | set(self.key) if old_key.get(k) != self.key.get(k))
        raise ConfigError(
            f"Checkpoint folder {str(self.path)!r} belongs to a run with another configuration "
            f"(sha256 {str(stored.get('key_sha256'))[:12]}, this run {self.key_sha256[:12]}; differing entries: "
            f"{', '.join(changed) or 'unknown'}). Rerun with the configuration that wrote it to resume, "
            "or delete the folder to start over."
        )

    def load(self, name: str, arguments_sha256: str) -> tuple[bool, Any]:
        """Return ``(True, result)`` for a finished unit with these arguments, else ``(False, None)``."""
        path = self.units_dir / _file_name(name)
        if not path.is_file():
            return False, None
        try:
            stored = torch.load(path, weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file means: compute the unit again
            logger.warning("checkpoint of unit %s in %s cannot be read (%s); computing it again", name, path, err)
            return False, None
        if stored.get("name") != name or stored.get("arguments_sha256") != arguments_sha256:
            logger.info("checkpoint of unit %s was made from other arguments; computing it again", name)
            return False, None
        return True, _decode(stored["result"])

    def save(self, name: str, arguments_sha256: str, result: Any) -> Path:
        """Write one finished unit atomically and return its file path."""
        path = self.units_dir / _file_name(name)
        # NOTE: the file is renamed into place without fsync, which survives a
        # killed process but not necessarily a power cut.
        with atomic_path(path) as tmp:
            torch.save({"name": name, "arguments_sha256": arguments_sha256, "result": _encode(result)}, tmp)
        return path

    def finished_units(self) -> list[str]:
        """Return the file names of the finished units (hidden temporary files excluded)."""
        if not self.units_dir.is_dir():
            return []
        return sorted(p.name for p in self.units_dir.iterdir() if p.suffix == ".pt" and not p.name.startswith("."))

    def remove(self) -> None:
        """Delete the checkpoint folder."""
        if self.path.is_dir():
            shutil.rmtree(self.path)
