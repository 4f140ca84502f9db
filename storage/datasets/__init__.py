"""Input datasets: built-in generators and corpora, and readers for users' own data.

`open_dataset(ref)` turns a data reference into a `Dataset`: random access by position, stable sample
ids, and a content fingerprint. Samples are plain dicts (see `Dataset`). This package never imports torch.
"""

from attn_audit.storage.datasets.base import Dataset
from attn_audit.storage.datasets.bbc_news import BbcNews
from attn_audit.storage.datasets.coverage import patch_coverage, patch_coverage_fraction
from attn_audit.storage.datasets.errors import DatasetError, SampleError
from attn_audit.storage.datasets.fashion import (
    ANSWER_VOCAB,
    CELL_NAMES,
    CLASS_NAMES,
    CLASS_WORDS,
    FashionCanvas,
    FashionCaption,
    FashionDetect,
    FashionVqa,
    load_fashion_mnist,
)
from attn_audit.storage.datasets.readers import CsvDataset, ImageFolderDataset, JsonlDataset, ParquetDataset
from attn_audit.storage.datasets.refs import BUILTINS, open_dataset

__all__ = ["ANSWER_VOCAB", "BUILTINS", "CELL_NAMES", "CLASS_NAMES", "CLASS_WORDS", "BbcNews", "CsvDataset",
           "Dataset", "DatasetError", "FashionCanvas", "FashionCaption", "FashionDetect", "FashionVqa",
           "ImageFolderDataset", "JsonlDataset", "ParquetDataset", "SampleError", "load_fashion_mnist",
           "open_dataset", "patch_coverage", "patch_coverage_fraction"]
