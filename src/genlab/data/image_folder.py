"""Your own images: a folder, or a .zip / .tar / .tar.gz archive of one, read in place.

Layout rules, applied after stepping into a single top-level folder (as archives often have):
- `train/` and `test/` sub-folders become those splits; otherwise every image is training data
  and the test split is a seeded hold-out (`data.test_size`).
- Inside a split, class sub-folders (`<class>/<image>`) give labels in sorted folder order;
  images directly inside it are unlabelled. Mixing the two is an error.
Images of any size and mode are centre-cropped to a square and resized to `image_size`.
Files whose extension is not an image's are skipped.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from genlab.data.arrays import UNLABELLED, DatasetArrays, decode_image
from genlab.errors import GenlabError

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


def _entries(path: Path) -> Iterator[tuple[PurePosixPath, Callable[[], bytes]]]:
    """Yield (relative path, reader of the bytes) for every file in the folder or archive."""
    if path.is_dir():
        for file in sorted(path.rglob("*")):
            if file.is_file():
                yield PurePosixPath(file.relative_to(path).as_posix()), file.read_bytes
    elif path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.is_dir():
                    data = archive.read(info)
                    yield PurePosixPath(info.filename), lambda data=data: data
    elif path.name.endswith(ARCHIVE_SUFFIXES):
        with tarfile.open(path) as archive:
            for member in archive:
                if member.isfile():
                    data = archive.extractfile(member).read()
                    yield PurePosixPath(member.name), lambda data=data: data
    else:
        raise GenlabError(f"data.path={path} is neither a folder nor a .zip/.tar/.tar.gz archive.")


def fingerprint(path: Path) -> str:
    """A short hash that changes when the images change (names, sizes, modification times)."""
    digest = hashlib.sha1(str(path.resolve()).encode())
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    for file in files:
        if file.is_file():
            stat = file.stat()
            digest.update(f"{file}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:12]


def _strip_common_folder(files: dict[PurePosixPath, Callable[[], bytes]]
                         ) -> dict[PurePosixPath, Callable[[], bytes]]:
    while files and all(len(p.parts) > 1 for p in files) and len({p.parts[0] for p in files}) == 1:
        files = {PurePosixPath(*p.parts[1:]): data for p, data in files.items()}
    return files


def _split_arrays(name: str, files: dict[PurePosixPath, Callable[[], bytes]], classes: list[str],
                  image_size: int, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not files:
        raise GenlabError(f"The {name} split of data.path holds no images.")
    images, labels = [], []
    for rel in sorted(files):
        try:
            images.append(decode_image(files[rel](), image_size, channels))
        except OSError as err:
            raise GenlabError(f"Cannot decode {rel} in data.path ({err}); remove or fix it."
                              ) from None
        labels.append(classes.index(rel.parts[0]) if classes else UNLABELLED)
    return torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.long)


def read_image_folder(root: Path, path: str, image_size: int = 32, channels: int = 3,
                      download: bool = False, verify: bool = True) -> DatasetArrays:
    source = Path(os.path.expanduser(path))
    if not source.exists():
        raise GenlabError(f"data.path={source} does not exist. Point it at a folder or archive "
                          "of images: data=image_folder data.path=/path/to/images")
    files, skipped = {}, 0
    for rel, read in _entries(source):
        if rel.suffix.lower() in IMAGE_SUFFIXES and not rel.name.startswith("."):
            files[rel] = read
        else:
            skipped += 1
    if skipped:
        log.warning("image_folder: skipped %d files that are not images in %s", skipped, source)
    files = _strip_common_folder(files)
    if not files:
        kinds = ", ".join(sorted(IMAGE_SUFFIXES))
        raise GenlabError(f"data.path={source} holds no images ({kinds}).")

    tops = {p.parts[0] for p in files if len(p.parts) > 1}
    if {"train", "test"} <= tops:
        groups = {s: {PurePosixPath(*p.parts[1:]): r for p, r in files.items() if p.parts[0] == s}
                  for s in ("train", "test")}
    else:
        groups = {"train": files}
    nested = {len(p.parts) > 1 for group in groups.values() for p in group}
    if nested == {True, False}:
        raise GenlabError(f"data.path={source} mixes images in class folders with loose images; "
                          "put every image in a class folder, or none.")
    classes = sorted({p.parts[0] for g in groups.values() for p in g}) if nested == {True} else []
    return DatasetArrays(
        {split: _split_arrays(split, group, classes, image_size, channels)
         for split, group in groups.items()},
        classes,
    )
