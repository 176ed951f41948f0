"""The in-memory form of every dataset: uint8 image tensors and int64 labels per split."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

UNLABELLED = -1  # label value of images that have no class


@dataclass
class DatasetArrays:
    """Images (N, C, H, W) uint8 and labels (N,) int64 for each split ('train', 'test').

    `classes` names the labels 0..K-1; it is empty for unlabelled data, whose labels are -1.
    A dataset without an official test split has no 'test' entry. Datasets with per-image
    binary attributes (CelebA's 40) name them in `attribute_names` and hold a bool tensor
    (N, len(attribute_names)) per split in `attributes`.
    """

    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]
    classes: list[str] = field(default_factory=list)
    attribute_names: list[str] = field(default_factory=list)
    attributes: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.splits["train"][0].shape[1:])


def decode_image(data: bytes | Image.Image, image_size: int, channels: int, crop: int | None = None
                 ) -> np.ndarray:
    """Decode an encoded image (or PIL image) to a (C, S, S) uint8 array.

    The image is centre-cropped to `crop` pixels (or to its shorter side when `crop` is None),
    then resized to `image_size` with PIL's antialiased bicubic filter.
    """
    image = data if isinstance(data, Image.Image) else Image.open(io.BytesIO(data))
    image = image.convert("L" if channels == 1 else "RGB")
    width, height = image.size
    side = min(width, height) if crop is None else min(crop, width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != image_size:
        image = image.resize((image_size, image_size), Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)
