"""Open climate fields lazily, stack them to samples or stream them in blocks, and normalise with training statistics."""

from condupdate.data.io import open_dataset, select
from condupdate.data.normalize import Normalizer
from condupdate.data.samples import stack_samples, unstack_samples, valid_samples
from condupdate.data.stream import ChunkedSampler, fit_normalizers, open_chunked, train_stream
from condupdate.data.time import decimal_year

__all__ = [
    "ChunkedSampler",
    "Normalizer",
    "decimal_year",
    "fit_normalizers",
    "open_chunked",
    "open_dataset",
    "select",
    "stack_samples",
    "train_stream",
    "unstack_samples",
    "valid_samples",
]
