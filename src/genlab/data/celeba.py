"""CelebA aligned faces: `<data_dir>/celeba/img_align_celeba.zip` (or the extracted
`img_align_celeba/` folder) and `list_eval_partition.txt`, as torchvision keeps them.

Each 178x218 face is centre-cropped to `crop` pixels (140 by default, the usual face crop) and
resized to `image_size`. The official partition gives train (0), validation (1) and test (2);
train and the official validation images form our training split (our validation split is a
seeded hold-out from it, as for every dataset), test is the official test split.

CelebA is served from Google Drive behind a confirmation page, so it is not downloaded
automatically: the error for missing files says where to get them.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from genlab.data.arrays import UNLABELLED, DatasetArrays, decode_image
from genlab.data.download import RemoteFile, ensure_files
from genlab.errors import GenlabError

_PAGE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (Google Drive: Img/img_align_celeba.zip, Eval/list_eval_partition.txt)"  # noqa: E501
ZIP = RemoteFile("img_align_celeba.zip", _PAGE, "00d2c5bc6d35e252742224ab0c1e8fcb")
PARTITION = RemoteFile("list_eval_partition.txt", _PAGE, "d32c9cbf5e040fd4025c592c306e6668")


def read_partition(path: Path) -> dict[str, int]:
    partition = {}
    for line in path.read_text().splitlines():
        if line.strip():
            name, part = line.split()
            partition[name] = int(part)
    return partition


def read_celeba(root: Path, image_size: int = 32, channels: int = 3, crop: int = 140,
                verify: bool = True, download: bool = False) -> DatasetArrays:
    folder = root / "celeba"
    (partition_path,) = ensure_files("CelebA", folder, [PARTITION], False, verify)
    partition = read_partition(partition_path)
    images: dict[str, np.ndarray] = {}
    if (folder / "img_align_celeba").is_dir():
        for name in partition:
            data = (folder / "img_align_celeba" / name).read_bytes()
            images[name] = decode_image(data, image_size, channels, crop)
    else:
        (zip_path,) = ensure_files("CelebA", folder, [ZIP], False, verify)
        with zipfile.ZipFile(zip_path) as archive:
            for info in archive.infolist():
                name = Path(info.filename).name
                if name in partition:
                    images[name] = decode_image(archive.read(info), image_size, channels, crop)
    if missing := len(partition) - len(images):
        raise GenlabError(f"{missing} images listed in {partition_path} are missing from "
                          f"{folder}; the CelebA download is incomplete.")
    names = sorted(partition)

    def split(keep: set[int]) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = [n for n in names if partition[n] in keep]
        stacked = torch.from_numpy(np.stack([images[n] for n in chosen]))
        return stacked, torch.full((len(chosen),), UNLABELLED, dtype=torch.long)

    return DatasetArrays({"train": split({0, 1}), "test": split({2})})
