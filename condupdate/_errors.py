"""Warning and exception classes shared by all condupdate modules."""

__all__ = ["CondupdateWarning", "ExtrapolationWarning", "SplitOverlapWarning", "ConfigError", "DataError"]


class CondupdateWarning(UserWarning):
    """Base class of every warning that condupdate emits."""


class ExtrapolationWarning(CondupdateWarning):
    """A model is evaluated outside the range of its training predictors."""


class SplitOverlapWarning(CondupdateWarning):
    """The training and application selections share samples."""


class ConfigError(ValueError):
    """A configuration key has an invalid value."""


class DataError(ValueError):
    """An input file, variable or coordinate cannot be used as given."""
