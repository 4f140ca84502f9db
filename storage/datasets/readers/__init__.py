"""Readers for users' own data: image folders and jsonl / csv / parquet tables."""

from attn_audit.storage.datasets.readers.csv_file import CsvDataset
from attn_audit.storage.datasets.readers.imagefolder import ImageFolderDataset
from attn_audit.storage.datasets.readers.jsonl import JsonlDataset
from attn_audit.storage.datasets.readers.parquet import ParquetDataset

__all__ = ["CsvDataset", "ImageFolderDataset", "JsonlDataset", "ParquetDataset"]
