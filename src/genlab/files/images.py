"""The one reader of image files: folders, archives and .npz arrays, for training data
(`data=image_folder`) and for the metrics (`genlab-fid`, reference sets).

Formats, the same everywhere:
* a folder: every image file below it (recursively, sorted by path);
* an archive (.zip, .tar, .tar.gz/.tgz, .tar.bz2/.tbz2, .tar.xz/.txz), read in place without
  extracting it; `ARCHIVE::FOLDER` limits a set to one folder inside it;
* image files: .png, .jpg/.jpeg, .bmp, .gif, .webp, .tif/.tiff (other files are skipped with
  one logged warning);
* an .npz file holding uint8 images: its array `images` (or `arr_0`, or its only array), shaped
  (N, H, W, C), (N, C, H, W) or (N, H, W); an optional integer array `labels`.

`iter_files` walks a folder or an archive; `ImageSource` and its subclasses serve an image set
as uint8 batches (B, C, H, W) without holding it in memory (the metrics' use); the training
reader (`genlab.data.image_folder`) decodes everything once into its cache.
"""

from __future__ import annotations

import collections
import hashlib
import io
import logging
import os
import re
import tarfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from genlab.errors import GenlabError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
NPZ_KEYS = ("images", "arr_0")


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES) and not Path(name).name.startswith(".")


def is_archive(path: str | Path) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def iter_files(path: Path, keep: Callable[[str], bool] = lambda name: True
               ) -> Iterator[tuple[str, bytes | None]]:
    """(relative name with '/' separators, bytes) of every regular file in a folder (sorted by
    name) or an archive (in archive order); the bytes are read only for names `keep` accepts
    (None for the others). An unreadable archive is a GenlabError."""
    if path.is_dir():
        for file in sorted(path.rglob("*")):
            if file.is_file():
                name = file.relative_to(path).as_posix()
                yield name, file.read_bytes() if keep(name) else None
        return
    if not is_archive(path):
        raise GenlabError(f"{path} is neither a folder nor an archive "
                          f"({', '.join(ARCHIVE_SUFFIXES)}).")
    try:
        if path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    if not info.is_dir():
                        yield info.filename, archive.read(info) if keep(info.filename) else None
            return
        with tarfile.open(path, mode="r|*") as archive:  # a stream: one pass, any compression
            for member in archive:
                if member.isfile():
                    data = archive.extractfile(member).read() if keep(member.name) else None
                    yield member.name, data
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise GenlabError(f"Cannot read the archive {path} ({type(err).__name__}: {err}). It is "
                          "corrupt, truncated or not an archive of its kind: give a folder of "
                          f"images or an intact archive ({', '.join(ARCHIVE_SUFFIXES)})."
                          ) from None


def fingerprint(path: Path) -> str:
    """A short hash that changes when the files change (names, sizes, modification times)."""
    digest = hashlib.sha256(str(path.resolve()).encode())
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    for file in files:
        if file.is_file():
            stat = file.stat()
            digest.update(f"{file}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def warn_skipped(description: str, others: Sequence[str], unreadable: Sequence[str] = ()
                 ) -> None:
    if others:
        kinds = sorted({os.path.splitext(n)[1] or n for n in others})[:8]
        log.warning("%s: skipped %d files that are not images (%s)", description, len(others),
                    ", ".join(kinds))
    if unreadable:
        log.warning("%s: skipped %d image files that could not be decoded, e.g. %s",
                    description, len(unreadable), ", ".join(unreadable[:3]))


# -- arrays ----------------------------------------------------------------------------------
def check_image_array(images, description: str = "images") -> torch.Tensor:
    """Validate and normalise an image array to uint8 (N, C, H, W), C in {1, 3}.

    Accepts (N, C, H, W), (N, H, W, C) and (N, H, W); when both axis 1 and the last axis could
    be channels, (N, H, W, C) is assumed (the layout of .npz sample files)."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise GenlabError(f"{description}: images must be uint8 (0..255); got dtype "
                              f"{images.dtype}. Convert them with "
                              "np.clip(np.rint(x), 0, 255).astype(np.uint8) (for values in "
                              "0..255), or from [-1, 1] with genlab.data.transforms.to_uint8.")
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise GenlabError(f"{description}: expected an array of images, got {type(images)}.")
    if images.dtype != torch.uint8:
        raise GenlabError(f"{description}: images must be uint8 (0..255); got {images.dtype}. "
                          "Convert samples in [-1, 1] with genlab.data.transforms.to_uint8 "
                          "(the bins real images were made with).")
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4:
        raise GenlabError(f"{description}: images must be shaped (N, H, W, C), (N, C, H, W) or "
                          f"(N, H, W); got shape {tuple(images.shape)}.")
    if images.shape[-1] in (1, 3):
        images = images.permute(0, 3, 1, 2)
    elif images.shape[1] not in (1, 3):
        raise GenlabError(f"{description}: images must have 1 or 3 channels, on axis 1 or the "
                          f"last axis; got shape {tuple(images.shape)}.")
    if len(images) == 0:
        raise GenlabError(f"{description} holds no images.")
    return images.contiguous()


def load_npz(path: str | Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 images (N, C, H, W) and the optional int64 labels (N,) of an .npz file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = [k for k in data.files if k != "labels"]
            key = next((k for k in NPZ_KEYS if k in data.files), None)
            if key is None and len(arrays) == 1:
                key = arrays[0]
            if key is None:
                raise GenlabError(f"{path} holds no image array: name it {' or '.join(NPZ_KEYS)} "
                                  f"(its arrays are: {', '.join(data.files) or 'none'}).")
            images = data[key]
            labels = data["labels"] if "labels" in data.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise GenlabError(f"Cannot read {path} as an .npz file ({type(err).__name__}: {err}); "
                          "save images with numpy.savez(path, images=uint8_array).") from None
    images = check_image_array(images, f"{path} [{key}]")
    if labels is not None:
        if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
            raise GenlabError(f"{path}: 'labels' must be one integer per image, shape "
                              f"({len(images)},); got {labels.dtype} {labels.shape}.")
        labels = torch.from_numpy(labels.astype(np.int64))
    return images, labels


def decode_rgb(data: bytes | Path) -> np.ndarray:
    """An encoded image as (H, W, 3) uint8 RGB (grey repeated, alpha dropped)."""
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
        return np.asarray(img.convert("RGB"))


def probe_size(data: bytes | Path) -> tuple[int, int] | None:
    """(width, height) from an image header, or None when PIL cannot read it."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
            return img.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


# -- image sets as streams of uint8 batches --------------------------------------------------
class ImageSource:
    """A finite, ordered set of images of one shape.

    Attributes: ``description`` (for logs), ``name`` and ``split`` (for cache file names),
    ``shape`` (C, H, W) of every image as served, ``len()`` the number of images."""

    description: str
    name: str
    split: str = "all"
    shape: tuple[int, int, int]

    def __len__(self) -> int:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A string that changes when the images may have changed (for cache keys)."""
        raise NotImplementedError

    def batches(self, batch_size: int, indices: Sequence[int] | None = None
                ) -> Iterator[torch.Tensor]:
        """uint8 batches (B, C, H, W) of the images at ``indices`` (all by default), in
        increasing index order."""
        raise NotImplementedError

    def select(self, n: int | None, seed: int = 0) -> np.ndarray:
        """Indices of at most ``n`` images, drawn without replacement with ``seed`` and sorted
        (all of them when ``n`` is None or not below the set's size)."""
        total = len(self)
        if n is not None and n < 1:
            raise GenlabError(f"The number of images must be positive; got {n}.")
        if n is None or n >= total:
            if n is not None and n > total:
                log.info("%s holds %d images (fewer than the %d asked for): using all of them.",
                         self.description, total, n)
            return np.arange(total)
        return np.sort(np.random.default_rng(seed).choice(total, n, replace=False))


class TensorSource(ImageSource):
    """Images already in memory: uint8 (N, C, H, W), C in {1, 3}."""

    def __init__(self, images: torch.Tensor | np.ndarray, description: str = "tensor",
                 name: str = "tensor", split: str = "all", fingerprint: str | None = None):
        self.images = check_image_array(images, description)
        self.description, self.name, self.split = description, name, split
        self.shape = tuple(self.images.shape[1:])
        self._fingerprint = fingerprint

    def __len__(self) -> int:
        return len(self.images)

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            digest = hashlib.sha256(str(tuple(self.images.shape)).encode())
            digest.update(self.images.contiguous().numpy().tobytes())
            self._fingerprint = "tensor:" + digest.hexdigest()
        return self._fingerprint

    def batches(self, batch_size, indices=None):
        if indices is None:
            for i in range(0, len(self.images), batch_size):
                yield self.images[i:i + batch_size]
            return
        indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        for i in range(0, len(indices), batch_size):
            yield self.images[indices[i:i + batch_size]]


def _check_one_size(sizes: dict[str, tuple[int, int]], description: str) -> tuple[int, int]:
    if not sizes:
        raise GenlabError(f"{description} holds no readable images ({', '.join(IMAGE_SUFFIXES)})"
                          ".")
    counts = collections.Counter(sizes.values())
    if len(counts) > 1:
        examples = {}
        for name, size in sizes.items():
            examples.setdefault(size, name)
        listing = "; ".join(f"{w}x{h}: {c} images, e.g. {examples[(w, h)]}"
                            for (w, h), c in counts.most_common(5))
        raise GenlabError(f"{description} holds images of {len(counts)} different sizes "
                          f"({listing}). FID/KID compare sets of one resolution, and resizing "
                          "changes the scores, so it is not done silently: resize the images "
                          "to one size yourself (or split the set).")
    return next(iter(counts))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "images"


class FileSource(ImageSource):
    """The image files of a folder or an archive (only those under ``prefix``, when given),
    decoded to RGB when served; every image must have the same size."""

    def __init__(self, path: str | Path, prefix: str = ""):
        self.path, self.prefix = Path(path), prefix.strip("/")
        self.description = f"{self.path}::{self.prefix}" if self.prefix else str(self.path)
        stem = self.path.name
        for suffix in ARCHIVE_SUFFIXES:
            if stem.lower().endswith(suffix):
                stem = stem[: -len(suffix)]
        self.name = _slug(stem + ("-" + self.prefix if self.prefix else ""))
        if not self.path.exists():
            raise GenlabError(f"{self.path} does not exist.")
        sizes, others, unreadable, tops = {}, [], [], set()
        for name, data in iter_files(self.path, self._wanted):
            tops.add(name.split("/")[0])
            if not self._under_prefix(name):
                continue
            if data is None:
                others.append(name)
            elif (size := probe_size(data)) is None:
                unreadable.append(name)
            else:
                sizes[name] = size
        warn_skipped(self.description, others, unreadable)
        if not sizes and self.prefix:
            raise GenlabError(f"No images under '{self.prefix}/' in {self.path}. Its top-level "
                              f"entries are: {', '.join(sorted(tops)[:10]) or 'none'}.")
        w, h = _check_one_size(sizes, f"{self.description}")
        self.names = list(sizes)
        self.shape = (3, h, w)

    def _under_prefix(self, name: str) -> bool:
        return not self.prefix or name.startswith(self.prefix + "/")

    def _wanted(self, name: str) -> bool:
        return self._under_prefix(name) and is_image_name(name)

    def __len__(self):
        return len(self.names)

    def fingerprint(self) -> str:
        return f"files:{fingerprint(self.path)}::{self.prefix}"

    def _read(self, names: list[str]) -> Iterator[bytes]:
        """The bytes of `names` (in archive / sorted order, which is the order of self.names)."""
        if self.path.is_dir():
            for name in names:
                yield (self.path / name).read_bytes()
            return
        wanted = set(names)
        for _, data in iter_files(self.path, wanted.__contains__):
            if data is not None:
                yield data

    def batches(self, batch_size, indices=None):
        chosen = self.names if indices is None else [self.names[i] for i in indices]
        pending, served = [], 0
        for data in self._read(chosen):
            pending.append(decode_rgb(data))
            served += 1
            if len(pending) == batch_size:
                yield torch.from_numpy(np.stack(pending)).permute(0, 3, 1, 2).contiguous()
                pending = []
        if pending:
            yield torch.from_numpy(np.stack(pending)).permute(0, 3, 1, 2).contiguous()
        if served != len(chosen):
            raise GenlabError(f"{self.path} changed while it was being read.")


def npz_source(path: Path) -> TensorSource:
    st = path.stat()
    return TensorSource(load_npz(path)[0], description=str(path), name=_slug(path.stem),
                        fingerprint=f"npz:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}")
