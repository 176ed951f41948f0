"""scikit-learn's 8x8 handwritten digits (1,797 images, bundled in the wheel: no download),
upsampled to 32x32 with PIL's bicubic filter. It has no official test split."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from genlab.data.arrays import DatasetArrays


def read_digits(image_size: int = 32, channels: int = 1) -> DatasetArrays:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.round(bunch.images * (255 / 16)).astype(np.uint8)  # values 0..16 -> 0..255
    images = np.stack([
        np.asarray(Image.fromarray(p).resize((image_size, image_size), Image.Resampling.BICUBIC))
        for p in pixels
    ])
    images = np.repeat(images[:, None], channels, axis=1)  # grayscale, repeated for RGB
    return DatasetArrays(
        {"train": (torch.from_numpy(images), torch.from_numpy(bunch.target).long())},
        [str(i) for i in range(10)],
    )
