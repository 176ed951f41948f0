"""Shared fixtures. Real data comes from GENLAB_DATA_DIR, defaulting to ../shared/data beside
the repository when it exists, and the FID Inception weights from GENLAB_INCEPTION_WEIGHTS,
defaulting to ../shared/weights/...; tests that need them skip with the reason otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_shared = REPO.parent / "shared" / "data"
if "GENLAB_DATA_DIR" not in os.environ and _shared.is_dir():
    os.environ["GENLAB_DATA_DIR"] = str(_shared)
_weights = REPO.parent / "shared" / "weights" / "pt_inception-2015-12-05-fc-zeroed.pth"
if "GENLAB_INCEPTION_WEIGHTS" not in os.environ and _weights.is_file():
    os.environ["GENLAB_INCEPTION_WEIGHTS"] = str(_weights)
os.environ.setdefault("GENLAB_CACHE_DIR", str(REPO / "data" / "cache"))
os.environ.setdefault("PROJECT_ROOT", str(REPO))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

from helpers.fake_datasets import write_all  # noqa: E402


@pytest.fixture(scope="session")
def fake_root(tmp_path_factory) -> Path:
    """A data folder with every dataset in its canonical format, a few images each."""
    return write_all(tmp_path_factory.mktemp("fake_data"))


def real_data_dir(dataset_folder: str) -> Path:
    """GENLAB_DATA_DIR if it holds `dataset_folder`, else skip the test with the reason."""
    root = Path(os.environ.get("GENLAB_DATA_DIR", REPO / "data"))
    if not (root / dataset_folder).exists():
        pytest.skip(f"{dataset_folder} is not in GENLAB_DATA_DIR={root}; set GENLAB_DATA_DIR to "
                    "a folder holding the canonical files to run this test")
    return root


def inception_weights() -> Path | None:
    """The FID Inception weights file (GENLAB_INCEPTION_WEIGHTS), or None where it is absent."""
    from genlab.files.dirs import env_path

    path = env_path("GENLAB_INCEPTION_WEIGHTS")
    return path if path is not None and path.is_file() else None


def real_weights() -> str:
    """inception_weights(), or skip the test with the reason."""
    from genlab.metrics import inception

    path = inception_weights()
    if path is None:
        pytest.skip(f"no FID Inception weights: set {inception.WEIGHTS_ENV} to "
                    f"{inception.WEIGHTS_FILENAME} (from {inception.WEIGHTS_URL})")
    return str(path)


@pytest.fixture
def compose(tmp_path):
    """compose(overrides, config_name='train') -> the config Hydra would give train.py."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from genlab.config import register_resolvers

    register_resolvers()

    def _compose(overrides: list[str] = (), config_name: str = "train"):
        GlobalHydra.instance().clear()
        with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
            return hydra_compose(config_name, overrides=[f"paths.output_dir={tmp_path}",
                                                         *overrides])

    return _compose
