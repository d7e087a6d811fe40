"""Open climate fields lazily, stack them to samples and normalise with training statistics."""

from condupdate.data.io import open_dataset, select
from condupdate.data.normalize import Normalizer
from condupdate.data.samples import stack_samples, unstack_samples, valid_samples
from condupdate.data.time import decimal_year

__all__ = [
    "Normalizer",
    "decimal_year",
    "open_dataset",
    "select",
    "stack_samples",
    "unstack_samples",
    "valid_samples",
]
