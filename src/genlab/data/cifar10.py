"""CIFAR-10 from the canonical python release: `cifar-10-python.tar.gz`, read in place, or the
extracted `cifar-10-batches-py/` folder (torchvision's layout)."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from genlab.data.arrays import DatasetArrays
from genlab.files.download import RemoteFile, ensure_files

ARCHIVE = RemoteFile("cifar-10-python.tar.gz",
                     "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                     "c58f30108f718f92721af3b95e74349a")
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCHES = ["test_batch"]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]


class _BatchUnpickler(pickle.Unpickler):
    """The CIFAR-10 batches are pickled dicts of bytes, lists and numpy arrays. Any other global
    is refused, so that a crafted file in their place (data.verify=false skips the checksum)
    cannot run code when it is read."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray"),
               ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a CIFAR-10 batch")
        return super().find_class(module, name)


def _unpickle(f) -> dict:
    return _BatchUnpickler(f, encoding="bytes").load()


def _to_tensors(batches: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    images = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([np.asarray(b[b"labels"]) for b in batches])
    return torch.from_numpy(images.copy()), torch.from_numpy(labels).long()


def read_cifar10(root: Path, download: bool = True, verify: bool = True) -> DatasetArrays:
    extracted = root / FOLDER
    if extracted.is_dir():
        def load(name: str) -> dict:
            with open(extracted / name, "rb") as f:
                return _unpickle(f)
        batches = {name: load(name) for name in TRAIN_BATCHES + TEST_BATCHES}
    else:
        (archive,) = ensure_files("CIFAR-10", root, [ARCHIVE], download, verify)
        batches = {}
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = Path(member.name).name
                if name in TRAIN_BATCHES + TEST_BATCHES:
                    batches[name] = _unpickle(tar.extractfile(member))
    return DatasetArrays(
        {"train": _to_tensors([batches[n] for n in TRAIN_BATCHES]),
         "test": _to_tensors([batches[n] for n in TEST_BATCHES])},
        CLASSES,
    )
