"""condupdate: adapt neural climate emulators to out-of-distribution regimes with conditional weight updates."""

from condupdate._errors import CondupdateWarning, ConfigError, DataError, ExtrapolationWarning
from condupdate.update import ConditionalUpdate, WeightRegressor

__version__ = "0.1.0"

__all__ = [
    "ConditionalUpdate",
    "CondupdateWarning",
    "ConfigError",
    "DataError",
    "ExtrapolationWarning",
    "WeightRegressor",
    "__version__",
]
