"""Fetching canonical dataset files: download with md5 verification, atomically."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from genlab.errors import GenlabError


@dataclass(frozen=True)
class RemoteFile:
    """A canonical file: its name on disk, where it comes from and its md5."""

    name: str
    url: str
    md5: str


def md5sum(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: Path, md5: str | None = None, timeout: float = 60.0) -> None:
    """Download `url` to `dest` through `dest.part`; the final name appears only once complete
    and (when `md5` is given) verified, so an interrupted download is never taken as good."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
        if md5 is not None and (actual := md5sum(part)) != md5:
            raise GenlabError(
                f"The download of {url} has md5 {actual}, expected {md5}; it was discarded. "
                f"Try again, or fetch the file by hand and place it at {dest}."
            )
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)


def ensure_files(
    dataset: str, folder: Path, files: list[RemoteFile], allow_download: bool, verify: bool
) -> list[Path]:
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
                download(remote.url, path, remote.md5)
            except OSError as err:
                raise _missing(dataset, folder, files, f"the download failed ({err})") from None
        elif verify and (actual := md5sum(path)) != remote.md5:
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
