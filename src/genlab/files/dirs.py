"""Where genlab reads and writes when nothing else is said: the one place that resolves the
data and cache folders (the configs reach it through the `genlab_path` resolver).

    project root   $PROJECT_ROOT (train.py and evaluate.py set it to their checkout), else the
                   checkout this package is imported from (the editable install of the README)
    data folder    $GENLAB_DATA_DIR, else <project root>/data (~/.cache/genlab/data when genlab
                   is installed without a checkout)
    cache folder   $GENLAB_CACHE_DIR, else <data folder>/cache

A relative path in one of these variables (or in $GENLAB_INCEPTION_WEIGHTS) is taken relative to
the project root, so `GENLAB_DATA_DIR=../shared/data` means the same folder from anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

DATA_ENV, CACHE_ENV = "GENLAB_DATA_DIR", "GENLAB_CACHE_DIR"


def project_root() -> Path | None:
    if root := os.environ.get("PROJECT_ROOT"):
        return Path(root).expanduser().resolve()
    checkout = Path(__file__).resolve().parents[3]
    return checkout if (checkout / "pyproject.toml").is_file() else None


def env_path(name: str) -> Path | None:
    """The path in environment variable `name`, relative ones taken from the project root."""
    value = os.environ.get(name)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = (project_root() or Path.cwd()) / path
    return path


def data_dir() -> Path:
    if path := env_path(DATA_ENV):
        return path
    root = project_root()
    return root / "data" if root is not None else Path.home() / ".cache" / "genlab" / "data"


def cache_dir() -> Path:
    return env_path(CACHE_ENV) or data_dir() / "cache"


def check_writable(folder: str | os.PathLike, setting: str) -> Path:
    """`folder` if it exists as a writable folder or can be created, else a GenlabError naming
    `setting` (the key or option that chose it). Nothing is created here."""
    from genlab.errors import GenlabError

    folder = Path(folder).expanduser().absolute()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise GenlabError(f"{setting}={folder} cannot be created: {existing} is a file, not a "
                          f"folder. Choose another {setting}.")
    if not os.access(existing, os.W_OK | os.X_OK):
        why = "is" if existing == folder else f"cannot be created: {existing} is"
        raise GenlabError(f"{setting}={folder} {why} not writable (a read-only file system or "
                          f"no permission). Choose a writable folder with {setting}=...")
    return folder


def _resolve(name: str) -> str:
    folders = {"root": lambda: project_root() or Path.cwd(), "data": data_dir,
               "cache": cache_dir}
    return str(folders[name]())


def register_resolver() -> None:
    """${genlab_path:root|data|cache} in the configs."""
    if not OmegaConf.has_resolver("genlab_path"):
        OmegaConf.register_new_resolver("genlab_path", _resolve)
