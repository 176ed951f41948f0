"""MNIST and Fashion-MNIST from their canonical IDX gzip files (torchvision's layout).

The 28x28 digits are zero-padded by 2 pixels on each side to 32x32 rather than resized, so that
pixel values are exactly the original ones (likelihoods stay comparable; the 240 border pixels
are always 0 and cost a trained model almost nothing).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genlab.data.arrays import DatasetArrays
from genlab.errors import GenlabError
from genlab.files.download import RemoteFile, ensure_files

_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

IDX_NAMES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def _idx_files(base_url: str, md5s: list[str]) -> list[RemoteFile]:
    return [RemoteFile(name, base_url + name, md5) for name, md5 in zip(IDX_NAMES, md5s)]


MNIST_FILES = _idx_files(_MNIST_URL, ["f68b3c2dcbeaaa9fbdd348bbdeb94873",
                                      "d53e105ee54ea40749a09fcbcd1e9432",
                                      "9fb629c4189551a2d022fa330f9573f3",
                                      "ec29112dd5afa0611ce80d1b7f02629c"])
FASHION_MNIST_FILES = _idx_files(_FASHION_URL, ["8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                                                "25c81989df183df01b3e8a0aad5dffbe",
                                                "bef4ecab320f06d8554ea6380940ec79",
                                                "bb300cfdad3c16e7a12a480ee83cd310"])
FASHION_CLASSES = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "ankle boot"]


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (gzip-compressed): big-endian magic, dims, then unsigned bytes."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte
        raise GenlabError(f"{path} is not an IDX file of unsigned bytes (magic {magic:#x}).")
    ndim = magic & 0xFF
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _read(name: str, folder: Path, files: list[RemoteFile], classes: list[str], download: bool,
          verify: bool) -> DatasetArrays:
    paths = ensure_files(name, folder, files, download, verify)
    train_x, train_y, test_x, test_y = (torch.from_numpy(read_idx(p).copy()) for p in paths)

    def pad(images: torch.Tensor) -> torch.Tensor:
        return F.pad(images[:, None], (2, 2, 2, 2))

    return DatasetArrays(
        {"train": (pad(train_x), train_y.long()), "test": (pad(test_x), test_y.long())}, classes
    )


def read_mnist(root: Path, download: bool = True, verify: bool = True) -> DatasetArrays:
    return _read("MNIST", root / "MNIST" / "raw", MNIST_FILES, [str(i) for i in range(10)],
                 download, verify)


def read_fashion_mnist(root: Path, download: bool = True, verify: bool = True) -> DatasetArrays:
    return _read("Fashion-MNIST", root / "FashionMNIST" / "raw", FASHION_MNIST_FILES,
                 FASHION_CLASSES, download, verify)
