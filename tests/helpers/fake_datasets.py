"""Tiny datasets written in each dataset's canonical on-disk format, for reader tests.

Pixel values are a known function of the image index, so a test can check that a reader
returns exactly what was written.
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

N_TRAIN, N_TEST = 40, 12


def pattern(n: int, channels: int, size: int, offset: int = 0) -> np.ndarray:
    """(n, channels, size, size) uint8 images whose values encode the index."""
    base = np.arange(channels * size * size, dtype=np.int64).reshape(channels, size, size)
    return np.stack([(base * 7 + 31 * (i + offset)) % 256 for i in range(n)]).astype(np.uint8)


def labels(n: int, classes: int = 10) -> np.ndarray:
    return (np.arange(n) % classes).astype(np.uint8)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def write_mnist_like(root: Path, folder: str) -> None:
    raw = root / folder / "raw"
    write_idx(raw / "train-images-idx3-ubyte.gz", pattern(N_TRAIN, 1, 28)[:, 0])
    write_idx(raw / "train-labels-idx1-ubyte.gz", labels(N_TRAIN))
    write_idx(raw / "t10k-images-idx3-ubyte.gz", pattern(N_TEST, 1, 28, offset=1000)[:, 0])
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", labels(N_TEST))


def write_cifar10(root: Path) -> None:
    """cifar-10-python.tar.gz with 5 train batches and a test batch, pickled as the original."""
    per_batch = N_TRAIN // 5
    members = {}
    for i in range(5):
        images = pattern(per_batch, 3, 32, offset=i * per_batch)
        members[f"data_batch_{i + 1}"] = {b"data": images.reshape(per_batch, -1),
                                          b"labels": labels(per_batch).tolist()}
    members["test_batch"] = {b"data": pattern(N_TEST, 3, 32, offset=1000).reshape(N_TEST, -1),
                             b"labels": labels(N_TEST).tolist()}
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        for name, batch in members.items():
            data = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def write_svhn(root: Path) -> None:
    """train_32x32.mat / test_32x32.mat: X is (32, 32, 3, N), y is (N, 1) with 10 for digit 0."""
    folder = root / "svhn"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, offset in (("train", N_TRAIN, 0), ("test", N_TEST, 1000)):
        x = pattern(n, 3, 32, offset).transpose(2, 3, 1, 0)
        y = labels(n).astype(np.int64)
        y[y == 0] = 10
        scipy.io.savemat(folder / f"{name}_32x32.mat", {"X": x, "y": y[:, None]})


def png_bytes(array_chw: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    image = array_chw[0] if array_chw.shape[0] == 1 else array_chw.transpose(1, 2, 0)
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def write_celeba(root: Path) -> None:
    """img_align_celeba.zip of 178x218 JPEG-free PNG-encoded faces named like the originals,
    list_eval_partition.txt (0 train, 1 valid, 2 test) and list_attr_celeba.txt."""
    folder = root / "celeba"
    folder.mkdir(parents=True, exist_ok=True)
    n = N_TRAIN + N_TEST
    partition = [0] * (N_TRAIN - 4) + [1] * 4 + [2] * N_TEST
    lines = []
    with zipfile.ZipFile(folder / "img_align_celeba.zip", "w") as archive:
        for i in range(n):
            name = f"{i + 1:06d}.jpg"
            face = np.full((3, 218, 178), i * 5 % 256, dtype=np.uint8)
            archive.writestr(f"img_align_celeba/{name}", png_bytes(face))
            lines.append(f"{name} {partition[i]}")
    (folder / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    attributes = [f"{n}", "Smiling Young"]  # two of CelebA's 40: on for even / odd images
    attributes += [f"{i + 1:06d}.jpg {1 if i % 2 == 0 else -1} {1 if i % 2 else -1}"
                   for i in range(n)]
    (folder / "list_attr_celeba.txt").write_text("\n".join(attributes) + "\n")


def write_image_folder_tar(path: Path, classes: tuple[str, ...] = ("cats", "dogs"),
                           per_class: int = 10, size: int = 48, splits: bool = False) -> Path:
    """A .tar.gz of RGB PNGs in class folders under one top-level folder (like the CIFAR-10
    JPEG copy), optionally split into train/ and test/."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "test") if splits else ("",):
            for c, name in enumerate(classes):
                for i in range(per_class):
                    data = png_bytes(pattern(1, 3, size, offset=100 * c + i)[0])
                    info = tarfile.TarInfo(str(Path("images", split, name, f"{i}.png")))
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        readme = b"not an image"
        info = tarfile.TarInfo("images/README.txt")
        info.size = len(readme)
        tar.addfile(info, io.BytesIO(readme))
    return path


def write_all(root: Path) -> Path:
    write_mnist_like(root, "MNIST")
    write_mnist_like(root, "FashionMNIST")
    write_cifar10(root)
    write_svhn(root)
    write_celeba(root)
    write_image_folder_tar(root / "images.tar.gz")
    return root
