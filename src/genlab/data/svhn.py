"""SVHN (cropped digits) from the canonical `train_32x32.mat` / `test_32x32.mat`.

Files are looked for in `<data_dir>/svhn/` (where they are downloaded) and, as torchvision keeps
them, directly in `<data_dir>/`. Label 10 in the files means the digit 0.
"""

from __future__ import annotations

from pathlib import Path

import scipy.io
import torch

from genlab.data.arrays import DatasetArrays
from genlab.files.download import RemoteFile, ensure_files

_URL = "http://ufldl.stanford.edu/housenumbers/"
FILES = [
    RemoteFile("train_32x32.mat", _URL + "train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
    RemoteFile("test_32x32.mat", _URL + "test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
]


def _load(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    mat = scipy.io.loadmat(path)
    images = torch.from_numpy(mat["X"]).permute(3, 2, 0, 1).contiguous()  # (H,W,C,N) -> NCHW
    labels = torch.from_numpy(mat["y"].reshape(-1).astype("int64")) % 10
    return images, labels


def read_svhn(root: Path, download: bool = True, verify: bool = True) -> DatasetArrays:
    folder = root if all((root / f.name).exists() for f in FILES) else root / "svhn"
    train, test = ensure_files("SVHN", folder, FILES, download, verify)
    return DatasetArrays({"train": _load(train), "test": _load(test)}, [str(i) for i in range(10)])
