"""CelebA aligned faces: `<data_dir>/celeba/img_align_celeba.zip` (or the extracted
`img_align_celeba/` folder) and `list_eval_partition.txt`, as torchvision keeps them; with
`list_attr_celeba.txt` beside them, the 40 binary attributes of every image too.

Each 178x218 face is centre-cropped to `crop` pixels (140 by default, the usual face crop) and
resized to `image_size`. The official partition gives train (0), validation (1) and test (2);
train and the official validation images form our training split (our validation split is a
seeded hold-out from it, as for every dataset), test is the official test split.

CelebA is served from Google Drive behind a confirmation page, so it is not downloaded
automatically: the error for missing files says where to get them.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import torch

from genlab.data.arrays import UNLABELLED, DatasetArrays, decode_image
from genlab.errors import GenlabError
from genlab.files.download import RemoteFile, ensure_files
from genlab.files.images import iter_files

_PAGE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (Google Drive: Img/img_align_celeba.zip, Eval/list_eval_partition.txt)"  # noqa: E501
ZIP = RemoteFile("img_align_celeba.zip", _PAGE, "00d2c5bc6d35e252742224ab0c1e8fcb")
PARTITION = RemoteFile("list_eval_partition.txt", _PAGE, "d32c9cbf5e040fd4025c592c306e6668")
ATTRIBUTES = RemoteFile("list_attr_celeba.txt", _PAGE, "75e246fa4810816ffd6ee81facbd244c")


def read_partition(path: Path) -> dict[str, int]:
    partition = {}
    for line in path.read_text().splitlines():
        if line.strip():
            name, part = line.split()
            partition[name] = int(part)
    return partition


def read_attributes(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """list_attr_celeba.txt: a count, the 40 attribute names, then `<image> <40 x +-1>`."""
    lines = path.read_text().splitlines()
    names = lines[1].split()
    values = {}
    for line in lines[2:]:
        if line.strip():
            image, *flags = line.split()
            values[image] = np.array([flag == "1" for flag in flags], dtype=bool)
    return names, values


def read_celeba(root: Path, image_size: int = 32, channels: int = 3, crop: int = 140,
                verify: bool = True, download: bool = False) -> DatasetArrays:
    folder = root / "celeba"
    (partition_path,) = ensure_files("CelebA", folder, [PARTITION], False, verify)
    partition = read_partition(partition_path)
    if (folder / "img_align_celeba").is_dir():
        source = folder / "img_align_celeba"
    else:
        (source,) = ensure_files("CelebA", folder, [ZIP], False, verify)
    images: dict[str, np.ndarray] = {}
    for member, data in iter_files(source, keep=lambda m: PurePosixPath(m).name in partition):
        if data is not None:
            images[PurePosixPath(member).name] = decode_image(data, image_size, channels, crop)
    if missing := len(partition) - len(images):
        raise GenlabError(f"{missing} images listed in {partition_path} are missing from "
                          f"{folder}; the CelebA download is incomplete.")
    attribute_names, attributes = [], {}
    if (folder / ATTRIBUTES.name).exists():  # optional: only attribute editing needs it
        (attributes_path,) = ensure_files("CelebA", folder, [ATTRIBUTES], False, verify)
        attribute_names, attributes = read_attributes(attributes_path)
    names = sorted(partition)
    arrays = DatasetArrays({}, attribute_names=attribute_names)
    for split, keep in (("train", {0, 1}), ("test", {2})):
        chosen = [n for n in names if partition[n] in keep]
        arrays.splits[split] = (torch.from_numpy(np.stack([images[n] for n in chosen])),
                                torch.full((len(chosen),), UNLABELLED, dtype=torch.long))
        if attribute_names:
            arrays.attributes[split] = torch.from_numpy(np.stack([attributes[n]
                                                                  for n in chosen]))
    return arrays
