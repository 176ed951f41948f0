"""The one place where pixels change representation.

Datasets hold uint8 in [0, 255]; models see float in [-1, 1]:
    x = 2 * u / 255 - 1                          (8-bit bin centres; discrete likelihoods)
    x = 2 * (u + U(0, 1)) / 256 - 1               (uniform dequantization; continuous densities)
Samples go back to uint8 with `to_uint8`, rounding to the nearest bin, exactly as real images.
"""

from __future__ import annotations

import torch


def to_model_range(images: torch.Tensor, dequantize: bool = False,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float in [-1, 1]."""
    x = images.float()
    if dequantize:
        x += torch.rand(x.shape, device=x.device, generator=generator)
        return x.mul_(2 / 256).sub_(1)
    return x.mul_(2 / 255).sub_(1)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8, nearest 8-bit value (values outside the range are clipped)."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def random_flip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2, as one batched op."""
    flip = torch.rand(images.shape[0], device=images.device, generator=generator) < 0.5
    flipped = images.clone()
    flipped[flip] = images[flip].flip(-1)
    return flipped


def binarize(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Stochastic binarization: each pixel is 255 with probability u / 255, else 0."""
    p = images.float() / 255
    return (torch.rand(p.shape, device=p.device, generator=generator) < p).to(torch.uint8) * 255
