"""The file layer: one reader of image folders / archives / .npz for training and for the
metrics, one atomic write, one place for the data and cache folders."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.fake_datasets import pattern
from PIL import Image

from genlab.data.image_folder import read_image_folder
from genlab.errors import GenlabError
from genlab.files import dirs
from genlab.files.atomic import atomic_write
from genlab.metrics.sources import open_images

IMAGE_FORMATS = {".png": {}, ".jpg": {"quality": 95}, ".bmp": {}, ".gif": {}, ".tif": {},
                 ".webp": {"lossless": True}}
LOSSLESS = {".png", ".bmp", ".tif", ".webp"}  # .gif is palettised, .jpg lossy
CONTAINERS = ["folder", ".zip", ".tar", ".tar.gz", ".tar.bz2", ".tar.xz"]


def encoded(image_hwc: np.ndarray, suffix: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image_hwc).save(buffer, format=Image.registered_extensions()[suffix],
                                    **IMAGE_FORMATS[suffix])
    return buffer.getvalue()


def write_set(root: Path, container: str, suffix: str) -> tuple[Path, np.ndarray]:
    """Two classes of two 32x32 RGB images each, under one top folder, and the pixels."""
    images = pattern(4, 3, 32).transpose(0, 2, 3, 1)
    files = {f"set/{'ab'[i // 2]}/{i}{suffix}": encoded(images[i], suffix) for i in range(4)}
    files["set/notes.txt"] = b"not an image"
    if container == "folder":
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        return root / "set", images
    path = root / f"set{container}"
    if container == ".zip":
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in files.items():
                archive.writestr(name, data)
    else:
        with tarfile.open(path, "w:" + container.split(".")[-1].replace("tar", "")) as archive:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return path, images


@pytest.mark.parametrize("suffix", sorted(IMAGE_FORMATS))
@pytest.mark.parametrize("container", CONTAINERS)
def test_training_and_fid_read_the_same_formats_alike(container, suffix, tmp_path):
    path, images = write_set(tmp_path, container, suffix)
    arrays = read_image_folder(tmp_path, str(path), image_size=32, channels=3)
    trained, labels = arrays.splits["train"]
    assert arrays.classes == ["a", "b"] and labels.tolist() == [0, 0, 1, 1]
    measured = torch.cat(list(open_images(str(path)).batches(batch_size=3)))
    assert torch.equal(trained, measured)  # the two readers decode identically
    expected = torch.from_numpy(images).permute(0, 3, 1, 2)
    if suffix in LOSSLESS:
        assert torch.equal(trained, expected)
    else:
        assert (trained.float() - expected.float()).abs().mean() < 8


def test_an_npz_trains_with_its_labels(tmp_path):
    images = pattern(6, 3, 32).transpose(0, 2, 3, 1)
    np.savez(tmp_path / "mine.npz", images=images, labels=np.array([0, 1, 2, 0, 1, 2]))
    arrays = read_image_folder(tmp_path, str(tmp_path / "mine.npz"), image_size=32, channels=3)
    x, y = arrays.splits["train"]
    assert torch.equal(x, torch.from_numpy(images).permute(0, 3, 1, 2))
    assert y.tolist() == [0, 1, 2, 0, 1, 2] and arrays.classes == ["0", "1", "2"]


def test_a_garbage_archive_is_one_clear_error(tmp_path):
    for name in ("bad.zip", "bad.tar.gz"):
        (tmp_path / name).write_bytes(b"this is not an archive at all")
        with pytest.raises(GenlabError, match="corrupt, truncated or not an archive"):
            read_image_folder(tmp_path, str(tmp_path / name))
        with pytest.raises(GenlabError, match="corrupt, truncated or not an archive"):
            open_images(str(tmp_path / name))


def test_atomic_write_keeps_the_previous_file_when_writing_fails(tmp_path):
    target = tmp_path / "metrics.json"
    with atomic_write(target, "w") as f:
        f.write("first")
    with pytest.raises(OSError, match="disk full"), atomic_write(target, "w") as f:
        f.write("half of the sec")
        raise OSError("disk full")
    assert target.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left


def test_folders_come_from_the_environment_relative_to_the_project_root(monkeypatch, tmp_path):
    monkeypatch.setenv("PROJECT_ROOT", str(tmp_path))
    monkeypatch.setenv("GENLAB_DATA_DIR", "../shared/data")
    monkeypatch.delenv("GENLAB_CACHE_DIR", raising=False)
    monkeypatch.chdir("/")
    assert dirs.data_dir() == tmp_path / "../shared/data"
    assert dirs.cache_dir() == tmp_path / "../shared/data/cache"
    monkeypatch.delenv("GENLAB_DATA_DIR")
    monkeypatch.setenv("GENLAB_CACHE_DIR", "/somewhere/cache")
    assert dirs.data_dir() == tmp_path / "data"
    assert dirs.cache_dir() == Path("/somewhere/cache")
