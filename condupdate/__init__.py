"""condupdate: adapt neural climate emulators to out-of-distribution regimes with conditional weight updates."""

from condupdate._errors import CondupdateWarning, ConfigError, DataError, ExtrapolationWarning
from condupdate.bundle import AdaptedEmulator, load, save
from condupdate.jobs.config import RunConfig, load_config, parse_config
from condupdate.jobs.run import RunResult, run
from condupdate.update import ConditionalUpdate, WeightRegressor

__version__ = "0.1.0"

__all__ = [
    "AdaptedEmulator",
    "ConditionalUpdate",
    "CondupdateWarning",
    "ConfigError",
    "DataError",
    "ExtrapolationWarning",
    "RunConfig",
    "RunResult",
    "WeightRegressor",
    "__version__",
    "load",
    "load_config",
    "parse_config",
    "run",
    "save",
]
