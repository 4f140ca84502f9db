"""Validation of one row's cells into a sample; every problem becomes a RowProblem naming the column."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

# Columns with a meaning; other columns are ignored, except unknown "gt_*" columns, which are refused so
# that a misspelt ground-truth column cannot vanish unnoticed.
MODALITY_COLUMNS = ("image", "text")
# Precomputed visual regions for region-feature models (LXMERT, VisualBERT): (n, d) features, (n, 4) boxes.
REGION_COLUMNS = {"region_features": None, "region_boxes": 4}
GROUND_TRUTH_COLUMNS = {"gt_text_tokens": "text_tokens", "gt_image_mask": "image_mask"}


class RowProblem(Exception):
    """A problem in one row; the reader turns it into a SampleError with the row's location and id."""


def build_sample(record: dict, sample_id: str, columns: set[str], base_dir: Path) -> dict:
    """The sample for a row given as {column: value}; values are JSON-like (plus bytes from Parquet)."""
    sample: dict = {"id": sample_id}
    if "image" in columns:
        sample["image"] = image_value(record.get("image"), base_dir)
    if "text" in columns:
        sample["text"] = text_value(record.get("text"))
    if "label" in columns:
        sample["label"] = label_value(record.get("label"))
    for column, width in REGION_COLUMNS.items():
        if record.get(column) is not None:
            sample[column] = number_matrix(record[column], column, width)
    ground_truth = {}
    if record.get("gt_text_tokens") is not None:
        ground_truth["text_tokens"] = token_list(record["gt_text_tokens"])
    if record.get("gt_image_mask") is not None:
        ground_truth["image_mask"] = mask_value(record["gt_image_mask"], base_dir)
    if ground_truth:
        sample["ground_truth"] = ground_truth
    return sample


def id_value(value) -> str:
    """Ids are non-empty strings; integer ids are accepted and written in decimal."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if value is None:
        raise RowProblem("id is missing")
    if not isinstance(value, str):
        raise RowProblem(f"id must be a string, got {_describe(value)}")
    if not value.strip():
        raise RowProblem("id is empty")
    return value


def image_value(value, base_dir: Path) -> str | bytes:
    """A checked file path (relative paths are relative to the data file's folder) or encoded bytes.

    A Hugging Face `datasets` image struct {"bytes": ..., "path": ...} is accepted too. Not decoded here:
    a corrupt image is the model's per-sample error.
    """
    if isinstance(value, dict) and {"bytes", "path"} >= value.keys():
        value = value.get("bytes") if value.get("bytes") is not None else value.get("path")
    if value is None:
        raise RowProblem("image is missing")
    if isinstance(value, bytes | bytearray):
        if not value:
            raise RowProblem("image bytes are empty")
        return bytes(value)
    if not isinstance(value, str):
        raise RowProblem(f"image must be a file path (or bytes in Parquet), got {_describe(value)}")
    return str(_existing_file(value, base_dir, "image"))


def text_value(value) -> str:
    if value is None:
        raise RowProblem("text is missing")
    if not isinstance(value, str):
        raise RowProblem(f"text must be a string, got {_describe(value)}")
    if not value.strip():
        raise RowProblem("text is empty")
    return value


def label_value(value) -> int | str | None:
    if value is None or isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise RowProblem(f"label must be an integer or a string, got {_describe(value)}")


def number_matrix(value, column: str, width: int | None) -> np.ndarray:
    """float32 (n, d) from a list of equal-length lists of numbers (d = `width` when given)."""
    rows = value.tolist() if isinstance(value, np.ndarray) else value
    if not isinstance(rows, list) or not rows or not all(isinstance(r, list) and r for r in rows) \
            or len({len(r) for r in rows}) != 1 or (width is not None and len(rows[0]) != width) \
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for r in rows for v in r):
        shape = f"(n, {width})" if width else "(n, d)"
        raise RowProblem(f"{column} must be a non-empty {shape} list of lists of numbers, got {_describe(value)}")
    try:
        matrix = np.asarray(rows, dtype=np.float32)
    except OverflowError:  # an integer beyond any float: JSON has no limit on digits
        raise RowProblem(f"{column} holds an integer too large for float32") from None
    if not np.isfinite(matrix).all():
        raise RowProblem(f"{column} contains NaN or infinite values (or numbers beyond float32)")
    return matrix


def token_list(value) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0
                                              for t in value):
        raise RowProblem("gt_text_tokens must be a list of word positions (integers >= 0), "
                         f"got {_describe(value)}")
    return list(value)


def mask_value(value, base_dir: Path) -> np.ndarray:
    """bool (H, W) from a nested list of 0/1 (or booleans), a mask image file, or encoded image bytes.

    In a mask image, nonzero pixels are inside the mask.
    """
    if isinstance(value, list):
        mask = np.asarray(value, dtype=object)
        if mask.ndim != 2 or not all(v in (0, 1) and isinstance(v, int) for v in mask.flat):
            raise RowProblem("gt_image_mask as a list must be a rectangular (H, W) list of lists of 0/1")
        return mask.astype(bool)
    if isinstance(value, str):
        value = _existing_file(value, base_dir, "gt_image_mask")
    elif not isinstance(value, bytes | bytearray):
        raise RowProblem("gt_image_mask must be a list of lists, a file path or image bytes, "
                         f"got {_describe(value)}")
    try:
        with Image.open(value if isinstance(value, Path) else io.BytesIO(value)) as img:
            return np.asarray(img.convert("L")) > 0
    except Exception as err:  # decoders fed arbitrary bytes raise OSError, DecompressionBombError, SyntaxError...
        raise RowProblem(f"gt_image_mask cannot be decoded as an image ({type(err).__name__}): {err}") from None


def _existing_file(value: str, base_dir: Path, column: str) -> Path:
    if not value.strip():
        raise RowProblem(f"{column} path is empty")
    path = base_dir / value
    if not path.is_file():
        raise RowProblem(f"{column} file not found: {path}")
    return path


def _describe(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"
