"""`imagefolder:PATH`: images in class sub-folders (label = folder name), or loose images (no labels)."""

from __future__ import annotations

import warnings
from pathlib import Path

from attn_audit.storage.datasets.base import Dataset, content_fingerprint
from attn_audit.storage.datasets.errors import DatasetError, SampleError

IMAGE_SUFFIXES = {".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"}


class ImageFolderDataset(Dataset):
    """PATH/<class>/**/<image> gives label "<class>" (a string: it is matched against the model's label
    names, not its class indices); label_names are the class folders, sorted. A folder with no
    sub-folders is read as unlabelled images. Ids are paths relative to PATH, in sorted order.

    Hidden files and folders (".name") are skipped; other files that are not images are skipped with a
    warning that names them. Links to folders are followed; a link that loops back is a DatasetError. Images
    are not decoded here (a corrupt image is the model's per-sample error), but each file must still exist
    when its sample is read.
    """

    modalities = ("image",)

    def __init__(self, path: str | Path):
        self.root = Path(path).expanduser().resolve()
        if not self.root.is_dir():
            raise DatasetError(f"imagefolder: no such folder: {self.root}")
        self.ref = f"imagefolder:{self.root}"
        self.name = self.root.name
        self._fingerprint: str | None = None
        classes = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not _hidden(p.name))
        files = _visible_files(self.root)
        loose = [f for f in files if f.parent == self.root and f.suffix.lower() in IMAGE_SUFFIXES]
        if classes and loose:
            raise DatasetError(f"{self.root} has both class folders {classes[:5]} and loose images "
                               f"{[f.name for f in loose[:5]]}; move the images into class folders")
        images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
        _warn_skipped(self.root, [f for f in files if f.suffix.lower() not in IMAGE_SUFFIXES])
        if not images:
            raise DatasetError(f"{self.root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self.label_names = classes or None
        self._ids = [f.relative_to(self.root).as_posix() for f in images]

    def __len__(self) -> int:
        return len(self._ids)

    def __reduce__(self):
        return type(self), (self.root,)

    def _sample_id(self, i: int) -> str:
        return self._ids[i]

    def _sample(self, i: int) -> dict:
        sample_id = self._ids[i]
        path = self.root / sample_id
        if not path.is_file():
            raise SampleError(sample_id, f"{self.name} image {i} (id {sample_id!r}): file not found: {path}")
        sample = {"id": sample_id, "image": str(path)}
        if self.label_names:
            sample["label"] = sample_id.split("/", 1)[0]
        return sample

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = content_fingerprint(self)
        return self._fingerprint


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _visible_files(root: Path) -> list[Path]:
    """Every file under root, sorted, hidden ones and those in hidden folders left out. Links to folders are
    followed; a link to a folder it is inside of (a loop: the same images without end) is a DatasetError."""
    files: list[Path] = []

    def visit(folder: Path, inside: frozenset[Path]) -> None:
        for entry in folder.iterdir():
            if _hidden(entry.name):
                continue
            if entry.is_dir():
                target = entry.resolve()
                if target in inside:
                    raise DatasetError(f"imagefolder {root}: {entry.relative_to(root).as_posix()} links to "
                                       f"{target}, a folder it is inside of (a loop); remove or replace the link")
                visit(entry, inside | {target})
            elif entry.is_file():
                files.append(entry)

    visit(root, frozenset({root}))
    return sorted(files)


def _warn_skipped(root: Path, skipped: list[Path]) -> None:
    if skipped:
        names = [p.relative_to(root).as_posix() for p in skipped]
        warnings.warn(f"imagefolder {root}: skipped {len(names)} files that are not images "
                      f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})", stacklevel=3)
