"""Image grids and PNG files, without torchvision."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genlab.data.transforms import to_uint8
from genlab.files.atomic import atomic_write


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile images (N, C, H, W) in [-1, 1] into one (H', W', C) uint8 array, `nrow` per row."""
    images = to_uint8(images.detach().cpu())
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = torch.zeros(c, rows * (h + padding) + padding, nrow * (w + padding) + padding,
                       dtype=torch.uint8)
    for i in range(n):
        top, left = padding + (i // nrow) * (h + padding), padding + (i % nrow) * (w + padding)
        grid[:, top : top + h, left : left + w] = images[i]
    array = grid.permute(1, 2, 0).numpy()
    return array[..., 0] if c == 1 else array


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Write an image array as a PNG file, atomically."""
    with atomic_write(path) as f:
        Image.fromarray(array).save(f, format="PNG")
    return Path(path)
