"""Readers for users' own data: image folders and jsonl / csv / parquet tables."""

from storage.datasets.readers.csv_file import CsvDataset
from storage.datasets.readers.imagefolder import ImageFolderDataset
from storage.datasets.readers.jsonl import JsonlDataset
from storage.datasets.readers.parquet import ParquetDataset

__all__ = ["CsvDataset", "ImageFolderDataset", "JsonlDataset", "ParquetDataset"]
