"""The dataset registry: every name `data.name` accepts, and cached loading.

Each dataset is decoded once from its canonical files and cached as a uint8 tensor file under
the cache directory, keyed by the dataset, the folder it was read from, its options and (for your
own images) a fingerprint of the files, so later runs start in a second.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import torch

from genlab.checks import Range
from genlab.data.arrays import DatasetArrays
from genlab.data.celeba import ATTRIBUTES, read_celeba
from genlab.data.cifar10 import read_cifar10
from genlab.data.digits import read_digits
from genlab.data.image_folder import read_image_folder
from genlab.data.mnist import read_fashion_mnist, read_mnist
from genlab.data.svhn import read_svhn
from genlab.errors import GenlabError, check_choice
from genlab.files.atomic import atomic_write
from genlab.files.dirs import cache_dir as default_cache_dir
from genlab.files.dirs import check_writable
from genlab.files.dirs import data_dir as default_data_dir
from genlab.files.images import fingerprint

log = logging.getLogger(__name__)
CACHE_VERSION = 2  # 2: attributes stored


@dataclass(frozen=True)
class DatasetSpec:
    """How to read one dataset. `channels` is the native channel count; a `resizable` reader
    takes `image_size` and `channels`; one that `reads_files` takes the data folder and the
    download/verify switches; `options` are the further keys it accepts, with their valid
    values (`genlab.checks`; checked at start-up); `check(root, options)` raises a GenlabError
    for input that cannot be read, before anything is decoded; `fingerprint(root, options)`
    names, for the cache key, what else the decoded arrays depend on."""

    read: Callable[..., DatasetArrays]
    channels: int
    resizable: bool = False
    reads_files: bool = True
    downloads: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)
    check: Callable[[Path, dict], None] | None = None
    fingerprint: Callable[[Path, dict], str] | None = None


def _check_image_folder(root: Path, options: dict) -> None:
    source = Path(os.path.expanduser(str(options["path"])))
    if not source.exists():
        raise GenlabError(f"data.path={source} does not exist. Point it at a folder, an archive "
                          "or an .npz of images: data=image_folder data.path=/path/to/images")


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(read_mnist, channels=1),
    "fashion_mnist": DatasetSpec(read_fashion_mnist, channels=1),
    "cifar10": DatasetSpec(read_cifar10, channels=3),
    "svhn": DatasetSpec(read_svhn, channels=3),
    "celeba": DatasetSpec(read_celeba, channels=3, resizable=True, downloads=False,
                          options={"crop": Annotated[int, Range(1)]},
                          fingerprint=lambda root, options: str(
                              (root / "celeba" / ATTRIBUTES.name).exists())),
    "image_folder": DatasetSpec(read_image_folder, channels=3, resizable=True, downloads=False,
                                options={"path": str}, check=_check_image_folder,
                                fingerprint=lambda root, options: fingerprint(
                                    Path(os.path.expanduser(options["path"])))),
    "digits": DatasetSpec(read_digits, channels=1, resizable=True, reads_files=False),
}

# What a corrupt or foreign file raises in the readers (gzip CRC and length errors, a truncated
# archive, an unpickling error, a .mat file scipy cannot parse): reported as one paragraph.
DECODE_ERRORS = (OSError, EOFError, ValueError, KeyError, zlib.error, struct.error,
                 tarfile.TarError, zipfile.BadZipFile, pickle.UnpicklingError)


def dataset_spec(name: str) -> DatasetSpec:
    return DATASETS[check_choice("data.name", name, DATASETS)]


def load_dataset(name: str, root: str | Path, cache_dir: str | Path, *, image_size: int = 32,
                 channels: int | None = None, download: bool = True, verify: bool = True,
                 **options) -> DatasetArrays:
    """Read dataset `name` from its files under `root`, through the cache in `cache_dir`."""
    spec = dataset_spec(name)
    channels = spec.channels if channels is None else channels
    if unknown := set(options) - set(spec.options):
        raise GenlabError(f"data.{sorted(unknown)[0]} is not an option of data={name}; its "
                          f"options are: {', '.join(spec.options) or 'none'}.")
    if not spec.resizable and (image_size, channels) != (32, spec.channels):
        raise GenlabError(f"{name} images are {spec.channels}x32x32; data.image_size={image_size} "
                          f"and data.channels={channels} are not available for it.")
    if spec.check is not None:
        spec.check(Path(root), options)
    if spec.fingerprint is not None:
        options = {**options, "fingerprint": spec.fingerprint(Path(root), options)}
    source = str(Path(root).resolve()) if spec.reads_files else None
    key = json.dumps([CACHE_VERSION, name, source, image_size, channels, sorted(options.items())])
    cache = Path(cache_dir) / f"{name}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.pt"
    if cache.exists():
        try:
            stored = torch.load(cache, weights_only=True)
            return DatasetArrays({s: tuple(v) for s, v in stored["splits"].items()},
                                 stored["classes"], stored["attribute_names"],
                                 stored["attributes"])
        except (*DECODE_ERRORS, RuntimeError) as err:
            raise GenlabError(f"The cached copy of {name}, {cache}, cannot be read "
                              f"({type(err).__name__}: {err}); delete it and it is decoded "
                              "again.") from None
    check_writable(Path(cache_dir), "data.cache_dir")

    kwargs = {k: v for k, v in options.items() if k != "fingerprint"}
    if spec.resizable:
        kwargs.update(image_size=image_size, channels=channels)
    if spec.reads_files:
        kwargs.update(root=Path(root), download=download and spec.downloads, verify=verify)
    log.info("Decoding %s once into %s", name, cache)
    try:
        arrays = spec.read(**kwargs)
    except GenlabError:
        raise
    except DECODE_ERRORS as err:
        where = f"data.path={options['path']}" if "path" in options else f"{root}"
        unchecked = (" With data.verify=false their checksums were not checked: set "
                     "data.verify=true to find the file that differs from the canonical one."
                     if spec.reads_files and spec.downloads and not verify else "")
        raise GenlabError(f"Cannot decode {name} from {where} ({type(err).__name__}: {err}). "
                          "A file is corrupt, truncated or not in the dataset's canonical "
                          f"format; replace it (delete it and it is downloaded again where the "
                          f"dataset is downloadable).{unchecked}") from None
    with atomic_write(cache) as f:
        torch.save({"splits": arrays.splits, "classes": arrays.classes,
                    "attribute_names": arrays.attribute_names,
                    "attributes": arrays.attributes}, f)
    return arrays


def load_split(name: str, split: str = "train", root: str | Path | None = None,
               cache_dir: str | Path | None = None, **options) -> torch.Tensor:
    """The uint8 images (N, C, H, W) of the official `split` ('train' or 'test') of a dataset.

    `root` and `cache_dir` default to the folders of `genlab.files.dirs`, as in the configs.
    """
    root = root or default_data_dir()
    cache_dir = cache_dir or default_cache_dir()
    arrays = load_dataset(name, root, cache_dir, **options)
    if split not in arrays.splits:
        raise GenlabError(f"{name} has no '{split}' split; it has: {', '.join(arrays.splits)}.")
    return arrays.splits[split][0]
