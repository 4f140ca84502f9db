"""Data references → datasets: `builtin:NAME[?k=v&...]`, `imagefolder:PATH`, `jsonl:PATH`, `csv:PATH`,
`parquet:PATH`. Paths are taken verbatim (no `?` parameters), so any file name works."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl

from attn_audit.storage.datasets.base import Dataset
from attn_audit.storage.datasets.bbc_news import BbcNews
from attn_audit.storage.datasets.errors import DatasetError
from attn_audit.storage.datasets.fashion import FashionCanvas, FashionCaption, FashionDetect, FashionVqa
from attn_audit.storage.datasets.kv_retrieval import KvRetrieval
from attn_audit.storage.datasets.readers import CsvDataset, ImageFolderDataset, JsonlDataset, ParquetDataset

BUILTINS: dict[str, type[Dataset]] = {
    cls.name: cls for cls in (FashionCanvas, FashionVqa, FashionCaption, FashionDetect, BbcNews, KvRetrieval)}
FILE_SCHEMES: dict[str, Callable[[str], Dataset]] = {
    "imagefolder": ImageFolderDataset, "jsonl": JsonlDataset, "csv": CsvDataset, "parquet": ParquetDataset}
INTEGER_PARAMS = {"n", "seed"}


def open_dataset(ref: str) -> Dataset:
    """The dataset a reference names; DatasetError (listing what is supported) for anything else."""
    scheme, sep, body = ref.partition(":")
    if not sep or not body:
        raise DatasetError(f"bad data reference {ref!r}: {_supported()}")
    if scheme == "builtin":
        return _open_builtin(body)
    if scheme in FILE_SCHEMES:
        return FILE_SCHEMES[scheme](body)
    raise DatasetError(f"unknown data reference scheme {scheme!r} in {ref!r}: {_supported()}")


def _open_builtin(body: str) -> Dataset:
    name, _, query = body.partition("?")
    if name not in BUILTINS:
        raise DatasetError(f"unknown built-in dataset {name!r}; built-in datasets: {', '.join(BUILTINS)}")
    cls = BUILTINS[name]
    params: dict[str, str | int] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in cls.params:
            raise DatasetError(f"builtin:{name} takes parameters {list(cls.params)}, not {key!r}")
        params[key] = _integer(name, key, value) if key in INTEGER_PARAMS else value
    return cls(**params)


def _integer(name: str, key: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DatasetError(f"builtin:{name}: {key} must be an integer, got {value!r}") from None


def _supported() -> str:
    return ("use builtin:NAME[?split=test&n=...&seed=...] (NAME: " + ", ".join(BUILTINS) + "), "
            + ", ".join(f"{scheme}:PATH" for scheme in FILE_SCHEMES))
