"""Image sets named on the command line or in code: a folder, an .npz, an archive
(`ARCHIVE::FOLDER` for one folder inside it), a dataset split `NAME:SPLIT`, or an array.
The files themselves are read by `genlab.files.images`."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import torch

from genlab.errors import GenlabError
from genlab.files.dirs import data_dir
from genlab.files.images import (
    ARCHIVE_SUFFIXES,
    FileSource,
    ImageSource,
    TensorSource,
    is_archive,
    npz_source,
)

DATASET_SPEC = re.compile(r"^([A-Za-z][A-Za-z0-9_]*):([A-Za-z][A-Za-z0-9_]*)$")


def cacheable(spec: str) -> bool:
    """Whether statistics of this set are worth caching (archives and dataset splits)."""
    return is_archive(spec.split("::", 1)[0]) or bool(DATASET_SPEC.match(spec))


def open_images(spec, **dataset_options) -> ImageSource:
    """An :class:`ImageSource` for a folder, an .npz, an archive (``PATH::PREFIX``), a dataset
    split (``NAME:SPLIT``, via :func:`genlab.data.load_split` with ``dataset_options``), or an
    in-memory uint8 array / tensor. Raises :class:`GenlabError` with the reason otherwise."""
    if isinstance(spec, ImageSource):
        return spec
    if isinstance(spec, (torch.Tensor, np.ndarray)):
        return TensorSource(spec)
    text = os.path.expanduser(str(spec))
    if "::" in text:
        archive, prefix = text.split("::", 1)
        if not is_archive(archive):
            raise GenlabError(f"'{spec}': the PATH::PREFIX form is for archives "
                              f"({', '.join(ARCHIVE_SUFFIXES)}); {archive} is not one.")
        return FileSource(archive, prefix)
    path = Path(text)
    if path.is_dir() or (path.is_file() and is_archive(text)):
        return FileSource(path)
    if path.is_file():
        if text.lower().endswith(".npz"):
            return npz_source(path)
        raise GenlabError(f"{path} is not an image set: give a folder of images, an .npz file, "
                          f"an archive ({', '.join(ARCHIVE_SUFFIXES)}) or a dataset split such as "
                          "cifar10:train.")
    match = DATASET_SPEC.match(text)
    if match:
        return dataset_source(match.group(1), match.group(2), **dataset_options)
    raise GenlabError(f"'{spec}' does not exist. An image set is a folder of images, an .npz "
                      "file, an archive (optionally ARCHIVE::FOLDER inside it) or a dataset split "
                      "NAME:SPLIT such as cifar10:train.")


def dataset_source(name: str, split: str, **options) -> TensorSource:
    """A registered dataset's split, read by :func:`genlab.data.load_split`."""
    from genlab.data import load_split

    images = load_split(name, split, **options)
    tag = json.dumps(sorted((k, str(v)) for k, v in options.items() if k not in ("root",
                                                                                  "cache_dir")))
    root = Path(options.get("root") or data_dir()).resolve()
    return TensorSource(images, description=f"{name}:{split}", name=name, split=split,
                        fingerprint=f"dataset:{name}:{split}:{root}:{tag}")
