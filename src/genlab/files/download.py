"""Fetching files: download with a checksum, atomically, and checksums of files on disk.

A download streams into a temporary file (`genlab.files.atomic.atomic_write`) while its digest
is computed; the file takes its final name only when it is complete and its md5 or SHA-256
matches, so an interrupted or corrupt download is never used. The same code fetches the
canonical dataset files (md5) and the FID Inception weights (SHA-256 prefix).
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from genlab.errors import GenlabError
from genlab.files.atomic import atomic_write

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteFile:
    """A canonical file: its name on disk, where it comes from and its md5."""

    name: str
    url: str
    md5: str


_DIGESTS: dict[tuple[str, str, int, int], str] = {}


def file_digest(path: str | os.PathLike, algorithm: str = "md5") -> str:
    """Hex digest of a file (memoised by path, size and modification time)."""
    st = os.stat(path)
    key = (algorithm, str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.new(algorithm)
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def download(url: str, dest: Path, md5: str | None = None, sha256_prefix: str | None = None,
             timeout: float = 60.0) -> Path:
    """Download `url` to `dest`. With `md5` (or the first hex digits of the SHA-256), a file
    that does not match is discarded with an error; `dest` appears only once complete."""
    log.info("Downloading %s to %s", url, dest)
    algorithm, expected = ("md5", md5) if md5 is not None else ("sha256", sha256_prefix)
    digest = hashlib.new(algorithm)
    with atomic_write(dest) as out, urllib.request.urlopen(url, timeout=timeout) as response:
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
        if expected is not None and not digest.hexdigest().startswith(expected):
            raise GenlabError(
                f"The download of {url} has {algorithm} {digest.hexdigest()}, expected "
                f"{expected}; it was discarded. Try again, or fetch the file by hand and place "
                f"it at {dest}.")
    return dest


def ensure_files(dataset: str, folder: Path, files: list[RemoteFile], allow_download: bool,
                 verify: bool) -> list[Path]:
    """Return the paths of `files` under `folder`, downloading the missing ones if allowed.

    Every file is checked against its md5 when `verify` is set (always for fresh downloads);
    a file that does not match raises instead of being used.
    """
    paths = []
    for remote in files:
        path = folder / remote.name
        if not path.exists():
            if not allow_download:
                raise _missing(dataset, folder, files, "they are not downloaded automatically "
                               "(data.download=false, or a dataset fetched by hand)")
            try:
                download(remote.url, path, md5=remote.md5)
            except OSError as err:
                raise _missing(dataset, folder, files, f"the download failed ({err})") from None
        elif verify and (actual := file_digest(path, "md5")) != remote.md5:
            raise GenlabError(
                f"{path} is corrupt or not the canonical {dataset} file: its md5 is {actual}, "
                f"expected {remote.md5}. Delete it so that it is downloaded again from "
                f"{remote.url}, or set data.verify=false if you prepared it yourself."
            )
        paths.append(path)
    return paths


def _missing(dataset: str, folder: Path, files: list[RemoteFile], why: str) -> GenlabError:
    listing = "; ".join(f"{f.name} from {f.url}" for f in files)
    return GenlabError(
        f"The {dataset} files are not in {folder} and {why}. Download them by hand into that "
        f"folder ({listing}), or point data at another folder with GENLAB_DATA_DIR or "
        "paths.data_dir=..."
    )
