"""Image sets for the metrics, read as uint8 batches (B, C, H, W).

A source is given as one string (or an in-memory array):

* a folder: every .png/.jpg/.jpeg/.bmp/.webp file below it (recursively, sorted by path).
  Other files are skipped with one logged warning; an image file PIL cannot read is skipped
  with a warning naming it.
* ``FILE.npz``: uint8 images under key ``images`` or ``arr_0``, shaped (N, H, W, C),
  (N, C, H, W) (C = 1 or 3) or (N, H, W).
* ``ARCHIVE`` or ``ARCHIVE::PREFIX``: a .tar, .tar.gz/.tgz, .tar.bz2, .tar.xz or .zip of image
  files, read as a stream without extracting it; with a prefix, only members under that folder
  (e.g. ``cifar10-jpeg.tar.gz::cifar10-jpeg/test``).
* ``NAME:SPLIT``: a registered dataset split, e.g. ``cifar10:train``, read through
  :func:`genlab.data.load_split`.

Files (folders and archives) are decoded to RGB: grayscale images repeat their channel, which
is what the Inception extractor does with 1-channel input anyway, and alpha is dropped.
All images of a set must have one size: a set of mixed sizes is an error (resizing changes FID,
so it is left to the user to do deliberately), reported with an example of each size.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
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

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")
NPZ_KEYS = ("images", "arr_0")
_DATASET_SPEC = re.compile(r"^([A-Za-z][A-Za-z0-9_]*):([A-Za-z][A-Za-z0-9_]*)$")


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _is_archive(path: str | Path) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


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
        images = check_image_array(images, description)
        self.images = images
        self.description, self.name, self.split = description, name, split
        self.shape = tuple(images.shape[1:])
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


def check_image_array(images, description: str = "images") -> torch.Tensor:
    """Validate and normalise an image array to uint8 (N, C, H, W), C in {1, 3}.

    Accepts (N, C, H, W), (N, H, W, C) and (N, H, W); when both axis 1 and the last axis could
    be channels, (N, H, W, C) is assumed (the layout of .npz sample files)."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise GenlabError(f"{description}: images must be uint8 (0..255); got dtype "
                              f"{images.dtype}. Convert them with "
                              "np.clip(np.rint(x), 0, 255).astype(np.uint8) (for values in "
                              "0..255) or from [-1, 1] with (x + 1) * 127.5 first.")
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise GenlabError(f"{description}: expected an array of images, got {type(images)}.")
    if images.dtype != torch.uint8:
        raise GenlabError(f"{description}: images must be uint8 (0..255); got {images.dtype}. "
                          "Convert samples in [-1, 1] with "
                          "((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).")
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


def load_npz(path: str | Path) -> torch.Tensor:
    """uint8 images (N, C, H, W) from an .npz file (key ``images`` or ``arr_0``)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            key = next((k for k in NPZ_KEYS if k in data.files), None)
            if key is None:
                raise GenlabError(f"{path} has no array named {' or '.join(NPZ_KEYS)}; its "
                                  f"arrays are: {', '.join(data.files) or 'none'}.")
            array = data[key]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise GenlabError(f"Could not read {path} as an .npz file: {e}") from e
    return check_image_array(array, f"{path} [{key}]")


def _decode(data: bytes | Path) -> np.ndarray:
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
        return np.asarray(img.convert("RGB"))


def _probe(data: bytes | Path) -> tuple[int, int] | None:
    """(width, height) from an image header, or None when PIL cannot read it."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
            return img.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


def _check_one_size(sizes: dict[str, tuple[int, int]], description: str) -> tuple[int, int]:
    if not sizes:
        raise GenlabError(f"{description} holds no readable images ({', '.join(IMAGE_EXTENSIONS)})"
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


def _stack(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def _warn_skipped(description: str, others: list[str], unreadable: list[str]) -> None:
    if others:
        exts = sorted({os.path.splitext(n)[1] or n for n in others})[:8]
        log.warning("%s: skipped %d files that are not images (%s)", description, len(others),
                    ", ".join(exts))
    if unreadable:
        log.warning("%s: skipped %d image files that could not be decoded, e.g. %s",
                    description, len(unreadable), ", ".join(unreadable[:3]))


class FolderSource(ImageSource):
    """Image files below a folder (recursive, sorted by relative path)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.description = str(self.root)
        self.name = _slug(self.root.name or "folder")
        files, others = [], []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for fn in sorted(filenames):
                (files if _is_image_name(fn) else others).append(Path(dirpath) / fn)
        sizes, unreadable = {}, []
        for path in files:
            size = _probe(path)
            if size is None:
                unreadable.append(str(path))
            else:
                sizes[str(path)] = size
        _warn_skipped(self.description, [str(p) for p in others], unreadable)
        w, h = _check_one_size(sizes, f"The folder {self.root}")
        self.files = [Path(p) for p in sizes]
        self.shape = (3, h, w)

    def __len__(self):
        return len(self.files)

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for path in self.files:
            st = path.stat()
            digest.update(f"{path.relative_to(self.root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return f"folder:{self.root.resolve()}:{digest.hexdigest()}"

    def batches(self, batch_size, indices=None):
        chosen = self.files if indices is None else [self.files[i] for i in indices]
        for i in range(0, len(chosen), batch_size):
            yield _stack([_decode(p) for p in chosen[i:i + batch_size]])


class ArchiveSource(ImageSource):
    """Image members of a tar or zip archive, optionally only those under ``prefix``; read as
    a stream (tar) or member by member (zip), never extracted to disk."""

    def __init__(self, path: str | Path, prefix: str = ""):
        self.path = Path(path)
        self.prefix = prefix.strip("/")
        self.description = f"{self.path}::{self.prefix}" if self.prefix else str(self.path)
        stem = self.path.name
        for suffix in ARCHIVE_SUFFIXES:
            if stem.lower().endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        self.name = _slug(stem + ("-" + self.prefix if self.prefix else ""))
        if not self.path.is_file():
            raise GenlabError(f"The archive {self.path} does not exist.")
        sizes, others, unreadable, tops = {}, [], [], set()
        try:
            for name, data in self._members(lambda n: self._wanted(n) and _is_image_name(n)):
                tops.add(name.split("/")[0])
                if not self._wanted(name):
                    continue
                if data is None:
                    others.append(name)
                    continue
                size = _probe(data)
                if size is None:
                    unreadable.append(name)
                else:
                    sizes[name] = size
        except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as e:
            raise GenlabError(f"Could not read the archive {self.path}: {e}") from e
        _warn_skipped(self.description, others, unreadable)
        if not sizes and self.prefix:
            raise GenlabError(f"No images under '{self.prefix}/' in {self.path}. Its top-level "
                              f"entries are: {', '.join(sorted(tops)[:10]) or 'none'}.")
        w, h = _check_one_size(sizes, f"The archive {self.description}")
        self.members = list(sizes)
        self.shape = (3, h, w)

    def _wanted(self, name: str) -> bool:
        return not self.prefix or name.startswith(self.prefix + "/")

    def _members(self, keep: Callable[[str], bool]) -> Iterator[tuple[str, bytes | None]]:
        """(name, bytes) of the archive's regular files in archive order; the bytes are read
        only for the names ``keep`` accepts (None for the others)."""
        if str(self.path).lower().endswith(".zip"):
            with zipfile.ZipFile(self.path) as zf:
                for info in zf.infolist():
                    if not info.is_dir():
                        name = info.filename
                        yield name, (zf.read(info) if keep(name) else None)
            return
        with tarfile.open(self.path, mode="r|*") as tf:
            for member in tf:
                if member.isfile():
                    name = member.name
                    yield name, (tf.extractfile(member).read() if keep(name) else None)

    def __len__(self):
        return len(self.members)

    def fingerprint(self) -> str:
        st = self.path.stat()
        return f"archive:{self.path.resolve()}:{st.st_size}:{st.st_mtime_ns}::{self.prefix}"

    def batches(self, batch_size, indices=None):
        chosen = self.members if indices is None else [self.members[i] for i in indices]
        position = {name: i for i, name in enumerate(chosen)}
        pending: list[np.ndarray] = []
        expected = 0
        for name, data in self._members(position.__contains__):
            if data is None:
                continue
            if position[name] != expected:  # archive order is the scan order; guard anyway
                raise GenlabError(f"The archive {self.path} changed while it was being read.")
            expected += 1
            pending.append(_decode(data))
            if len(pending) == batch_size:
                yield _stack(pending)
                pending = []
        if pending:
            yield _stack(pending)
        if expected != len(chosen):
            raise GenlabError(f"The archive {self.path} changed while it was being read.")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "images"


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
        if not _is_archive(archive):
            raise GenlabError(f"'{spec}': the PATH::PREFIX form is for archives "
                              f"({', '.join(ARCHIVE_SUFFIXES)}); {archive} is not one.")
        return ArchiveSource(archive, prefix)
    path = Path(text)
    if path.is_dir():
        return FolderSource(path)
    if path.is_file():
        if text.lower().endswith(".npz"):
            st = path.stat()
            return TensorSource(load_npz(path), description=str(path), name=_slug(path.stem),
                                fingerprint=f"npz:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}")
        if _is_archive(text):
            return ArchiveSource(path)
        raise GenlabError(f"{path} is not an image set: give a folder of images, an .npz file, "
                          f"an archive ({', '.join(ARCHIVE_SUFFIXES)}) or a dataset split such as "
                          "cifar10:train.")
    match = _DATASET_SPEC.match(text)
    if match:
        return dataset_source(match.group(1), match.group(2), **dataset_options)
    raise GenlabError(f"'{spec}' does not exist. An image set is a folder of images, an .npz "
                      "file, an archive (optionally ARCHIVE::FOLDER inside it) or a dataset split "
                      "NAME:SPLIT such as cifar10:train.")


def dataset_source(name: str, split: str, **options) -> TensorSource:
    """A registered dataset's split, read by :func:`genlab.data.load_split` (imported here, so
    this module does not need the data package until a dataset is asked for)."""
    from genlab.data import load_split

    images = load_split(name, split, **options)
    tag = json.dumps(sorted((k, str(v)) for k, v in options.items() if k not in ("root",
                                                                                  "cache_dir")))
    data_dir = options.get("root") or os.environ.get("GENLAB_DATA_DIR", "data")
    return TensorSource(images, description=f"{name}:{split}", name=name, split=split,
                        fingerprint=f"dataset:{name}:{split}:{Path(data_dir).resolve()}:{tag}")
