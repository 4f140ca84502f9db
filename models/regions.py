"""Visual regions for region-feature models (LXMERT, VisualBERT): features with their boxes.

A sample gives either precomputed regions — `region_features` (n, d) floats and `region_boxes` (n, 4)
as [x0, y0, x1, y1] normalised to [0, 1] — or an `image` that a checkpoint's `RegionGrid` cuts into
grid cells whose pixels are the features (what the built-in models use, so their image maps sit on the
cell grid where localisation metrics can read them).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from attn_audit.models.errors import SampleError
from attn_audit.models.images import decode_image

REGIONS_FILE = "regions.json"


@dataclass(frozen=True)
class Regions:
    features: np.ndarray  # float32 (n, d)
    boxes: np.ndarray  # float32 (n, 4), normalised x0, y0, x1, y1
    grid: tuple[int, int] | None  # (h, w) when the regions are the cells of a grid, in reading order


@dataclass(frozen=True)
class RegionGrid:
    """Cut a grayscale image resized to `size` into `grid` x `grid` cells; features = cell pixels in [0, 1],
    followed by the cell's box when `box_features` (for models such as VisualBERT that take no boxes)."""

    grid: int
    size: int
    box_features: bool = False

    @classmethod
    def from_folder(cls, folder: str | Path) -> RegionGrid | None:
        spec = Path(folder) / REGIONS_FILE
        return cls(**json.loads(spec.read_text())) if spec.is_file() else None

    def save(self, folder: str | Path) -> None:
        (Path(folder) / REGIONS_FILE).write_text(json.dumps(asdict(self)) + "\n")

    @property
    def feature_dim(self) -> int:
        return (self.size // self.grid) ** 2 + (4 if self.box_features else 0)

    def boxes(self) -> np.ndarray:
        edges = np.linspace(0.0, 1.0, self.grid + 1, dtype=np.float32)
        return np.array([[edges[c], edges[r], edges[c + 1], edges[r + 1]]
                         for r in range(self.grid) for c in range(self.grid)], dtype=np.float32)

    def cut(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (..., size, size) images → float32 (..., grid², feature_dim) region features, cells in reading
        order (vectorised, so training scripts build exactly what inference sees)."""
        cell = self.size // self.grid
        x = np.asarray(pixels, dtype=np.float32)[..., :cell * self.grid, :cell * self.grid] / 255.0
        lead = x.shape[:-2]
        x = x.reshape(*lead, self.grid, cell, self.grid, cell)
        x = np.moveaxis(x, -3, -2).reshape(*lead, self.grid * self.grid, cell * cell)
        if self.box_features:
            x = np.concatenate([x, np.broadcast_to(self.boxes(), (*lead, *self.boxes().shape))], -1)
        return np.ascontiguousarray(x, dtype=np.float32)

    def __call__(self, image, sid: str) -> Regions:
        img = decode_image(image, sid).convert("L")
        if img.size != (self.size, self.size):
            img = img.resize((self.size, self.size))
        return Regions(self.cut(np.asarray(img)), self.boxes(), (self.grid, self.grid))


def sample_regions(sample: dict, sid: str, grid: RegionGrid | None, feature_dim: int) -> Regions:
    """A sample's regions, checked: precomputed columns win over the image; counts and sizes must agree."""
    if "region_features" in sample:
        feats = np.asarray(sample["region_features"], dtype=np.float32)
        boxes = np.asarray(sample.get("region_boxes", np.zeros((0, 4))), dtype=np.float32)
        if feats.ndim != 2 or feats.shape[0] == 0:
            raise SampleError(sid, "input", f"region_features must be (n_regions ≥ 1, {feature_dim}), "
                              f"got shape {feats.shape}")
        if boxes.ndim != 2 or boxes.shape != (feats.shape[0], 4):
            raise SampleError(sid, "input", f"{feats.shape[0]} region features but region_boxes has shape "
                              f"{boxes.shape}; give one [x0, y0, x1, y1] box per region")
        regions = Regions(feats, boxes, None)
    elif "image" in sample and grid is not None:
        regions = grid(sample["image"], sid)
    else:
        how = "region_features + region_boxes" + (" or an 'image'" if grid is not None else
                                                  " (this checkpoint has no regions.json to cut an image)")
        raise SampleError(sid, "input", f"this vision-language model needs image features ({how}); "
                          f"the sample has {', '.join(sorted(sample)) or 'nothing'}")
    if regions.features.shape[1] != feature_dim:
        raise SampleError(sid, "input", f"region features have {regions.features.shape[1]} values each, "
                          f"the model takes {feature_dim}")
    if not (np.isfinite(regions.features).all() and np.isfinite(regions.boxes).all()):
        raise SampleError(sid, "input", "region features or boxes contain NaN or infinity")
    return regions


def pad_regions(regions: list[Regions]) -> dict[str, torch.Tensor]:
    """Right-padded (B, V, d) features, (B, V, 4) boxes and the (B, V) long mask (0 on padding)."""
    n = max(r.features.shape[0] for r in regions)
    feats = torch.zeros(len(regions), n, regions[0].features.shape[1])
    boxes = torch.zeros(len(regions), n, 4)
    mask = torch.zeros(len(regions), n, dtype=torch.long)
    for i, r in enumerate(regions):
        k = r.features.shape[0]
        feats[i, :k], boxes[i, :k], mask[i, :k] = torch.from_numpy(r.features), torch.from_numpy(r.boxes), 1
    return {"region_features": feats, "region_boxes": boxes, "region_mask": mask}
