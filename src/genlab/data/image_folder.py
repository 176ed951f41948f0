"""Your own images: a folder, an archive of one, or an .npz of uint8 images, read in place by
the one file reader (`genlab.files.images`, which lists the formats).

Layout rules for folders and archives, applied after stepping into a single top-level folder
(as archives often have):
- `train/` and `test/` sub-folders become those splits; otherwise every image is training data
  and the test split is a seeded hold-out (`data.test_size`).
- Inside a split, class sub-folders (`<class>/<image>`) give labels in sorted folder order;
  images directly inside it are unlabelled. Mixing the two is an error.
An .npz is one training split; its optional `labels` array names the classes 0..K-1.
Images of any size and mode are centre-cropped to a square and resized to `image_size`.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image

from genlab.data.arrays import UNLABELLED, DatasetArrays, decode_image
from genlab.errors import GenlabError
from genlab.files.images import (
    IMAGE_SUFFIXES,
    is_image_name,
    iter_files,
    load_npz,
    warn_skipped,
)


def _layout(source: Path, names: list[str]) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """For each image name: (split, class folder or ''), and the sorted class names."""
    paths = {name: PurePosixPath(name) for name in names}
    while (paths and all(len(p.parts) > 1 for p in paths.values())
           and len({p.parts[0] for p in paths.values()}) == 1):  # step into one top folder
        paths = {name: PurePosixPath(*p.parts[1:]) for name, p in paths.items()}
    tops = {p.parts[0] for p in paths.values() if len(p.parts) > 1}
    if {"train", "test"} <= tops:
        paths = {name: p for name, p in paths.items() if p.parts[0] in ("train", "test")}
        within = {name: (p.parts[0], PurePosixPath(*p.parts[1:])) for name, p in paths.items()}
    else:
        within = {name: ("train", p) for name, p in paths.items()}
    nested = {len(p.parts) > 1 for _, p in within.values()}
    if nested == {True, False}:
        raise GenlabError(f"data.path={source} mixes images in class folders with loose images; "
                          "put every image in a class folder, or none.")
    layout = {name: (split, p.parts[0] if len(p.parts) > 1 else "")
              for name, (split, p) in within.items()}
    classes = sorted({c for _, c in layout.values()}) if nested == {True} else []
    return layout, classes


def _read_npz(path: Path, image_size: int, channels: int) -> DatasetArrays:
    images, labels = load_npz(path)
    decoded = np.stack([decode_image(Image.fromarray(_hwc(image)), image_size, channels)
                        for image in images])
    classes = [str(i) for i in range(int(labels.max()) + 1)] if labels is not None else []
    if labels is None:
        labels = torch.full((len(images),), UNLABELLED, dtype=torch.long)
    return DatasetArrays({"train": (torch.from_numpy(decoded), labels)}, classes)


def _hwc(image: torch.Tensor) -> np.ndarray:
    array = image.permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[-1] == 1 else array


def read_image_folder(root: Path, path: str, image_size: int = 32, channels: int = 3,
                      download: bool = False, verify: bool = True) -> DatasetArrays:
    source = Path(os.path.expanduser(path))
    if not source.exists():
        raise GenlabError(f"data.path={source} does not exist. Point it at a folder, an archive "
                          "or an .npz of images: data=image_folder data.path=/path/to/images")
    if source.is_file() and source.name.lower().endswith(".npz"):
        return _read_npz(source, image_size, channels)
    names, skipped = [], []
    for name, _ in iter_files(source, keep=lambda name: False):  # names only: the layout
        (names if is_image_name(name) else skipped).append(name)
    warn_skipped(f"data.path={source}", skipped)
    if not names:
        raise GenlabError(f"data.path={source} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    layout, classes = _layout(source, names)
    decoded: dict[str, dict[str, tuple[np.ndarray, int]]] = {}
    for name, data in iter_files(source, keep=layout.__contains__):  # decode while streaming
        if data is None:
            continue
        split, folder = layout[name]
        try:
            image = decode_image(data, image_size, channels)
        except (OSError, ValueError, SyntaxError) as err:
            raise GenlabError(f"Cannot decode {name} in data.path={source} ({err}); remove or "
                              "fix it.") from None
        decoded.setdefault(split, {})[name] = (image, classes.index(folder) if classes
                                               else UNLABELLED)
    splits = {}
    for split, items in decoded.items():
        ordered = [items[name] for name in sorted(items)]
        splits[split] = (torch.from_numpy(np.stack([image for image, _ in ordered])),
                         torch.tensor([label for _, label in ordered], dtype=torch.long))
    return DatasetArrays(splits, classes)
