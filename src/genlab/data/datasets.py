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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

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
from genlab.files.dirs import data_dir as default_data_dir
from genlab.files.images import fingerprint

log = logging.getLogger(__name__)
CACHE_VERSION = 2  # 2: attributes stored


@dataclass(frozen=True)
class DatasetSpec:
    """How to read one dataset. `channels` is the native channel count; a `resizable` reader
    takes `image_size` and `channels`; one that `reads_files` takes the data folder and the
    download/verify switches; `options` are the further keys it accepts; `fingerprint(root,
    options)` names, for the cache key, what else the decoded arrays depend on."""

    read: Callable[..., DatasetArrays]
    channels: int
    resizable: bool = False
    reads_files: bool = True
    downloads: bool = True
    options: tuple[str, ...] = ()
    fingerprint: Callable[[Path, dict], str] | None = None


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(read_mnist, channels=1),
    "fashion_mnist": DatasetSpec(read_fashion_mnist, channels=1),
    "cifar10": DatasetSpec(read_cifar10, channels=3),
    "svhn": DatasetSpec(read_svhn, channels=3),
    "celeba": DatasetSpec(read_celeba, channels=3, resizable=True, downloads=False,
                          options=("crop",),
                          fingerprint=lambda root, options: str(
                              (root / "celeba" / ATTRIBUTES.name).exists())),
    "image_folder": DatasetSpec(read_image_folder, channels=3, resizable=True, downloads=False,
                                options=("path",),
                                fingerprint=lambda root, options: fingerprint(
                                    Path(os.path.expanduser(options["path"])))),
    "digits": DatasetSpec(read_digits, channels=1, resizable=True, reads_files=False),
}


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
    if spec.fingerprint is not None:
        options = {**options, "fingerprint": spec.fingerprint(Path(root), options)}
    source = str(Path(root).resolve()) if spec.reads_files else None
    key = json.dumps([CACHE_VERSION, name, source, image_size, channels, sorted(options.items())])
    cache = Path(cache_dir) / f"{name}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.pt"
    if cache.exists():
        stored = torch.load(cache, weights_only=True)
        return DatasetArrays({s: tuple(v) for s, v in stored["splits"].items()},
                             stored["classes"], stored["attribute_names"], stored["attributes"])

    log.info("Decoding %s once into %s", name, cache)
    kwargs = {k: v for k, v in options.items() if k != "fingerprint"}
    if spec.resizable:
        kwargs.update(image_size=image_size, channels=channels)
    if spec.reads_files:
        kwargs.update(root=Path(root), download=download and spec.downloads, verify=verify)
    arrays = spec.read(**kwargs)
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
