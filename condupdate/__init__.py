"""condupdate: adapt neural climate emulators to out-of-distribution regimes with conditional weight updates."""

from __future__ import annotations

import importlib
from typing import Any

from condupdate._errors import ConfigError, CondupdateWarning, DataError, ExtrapolationWarning, SplitOverlapWarning

__version__ = "0.1.0"

# Public names and the modules that define them. They are imported on first use,
# so that `condupdate --help` and reading a configuration do not load torch.
_LAZY = {
    "AdaptedEmulator": "condupdate.bundle",
    "load": "condupdate.bundle",
    "save": "condupdate.bundle",
    "RunConfig": "condupdate.jobs.config",
    "load_config": "condupdate.jobs.config",
    "parse_config": "condupdate.jobs.config",
    "RunResult": "condupdate.jobs.run",
    "run": "condupdate.jobs.run",
    "ConditionalUpdate": "condupdate.update",
    "WeightRegressor": "condupdate.update",
    "make_regressor": "condupdate.update",
}

__all__ = [
    "ConfigError",
    "CondupdateWarning",
    "DataError",
    "ExtrapolationWarning",
    "SplitOverlapWarning",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'condupdate' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
