"""The one place where pixels change representation, both ways.

Datasets hold uint8 u in 0..255; models see floats in [-1, 1], cut into 256 equal bins:
bin u is [u/128 - 1, (u + 1)/128 - 1) (the last bin includes 1).
    x = 2u/255 - 1                  the grid value inside bin u (discrete likelihoods: the
                                    VAE's, the DDPM's, PixelCNNs'; Salimans et al. 2017)
    x = (u + U)/128 - 1, U~U[0,1)   uniform dequantization over bin u (continuous densities;
                                    the bin width 2/256 is bits/dim's D log 128)
    u = floor(128 (x + 1))          back to 8 bits: the bin x falls in, clamped to 0..255
So both forms of a real image return to the original bits exactly, and samples are quantized
the way real images were made. (Rounding to the nearest grid value instead would send half of
the dequantized 0s to 1 and of the 255s to 254, which alone gives FID 10 on MNIST.)
"""

from __future__ import annotations

import torch


def to_model_range(images: torch.Tensor, dequantize: bool = False,
                   generator: torch.Generator | None = None,
                   noise: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float in [-1, 1]: the grid values, or dequantized: (u + U)/128 - 1
    with U ~ U[0, 1) drawn from `generator`, or with given `noise` in [0, 1] (a variational
    dequantizer's sample, Ho et al. 2019; its dtype and gradient are kept)."""
    if not dequantize:
        return images.float().mul_(2 / 255).sub_(1)
    if noise is None:
        noise = torch.rand(images.shape, device=images.device, generator=generator)
    lower = images.to(noise.dtype) - 128  # bin u is [lower, lower + 1) / 128
    v = lower + noise
    # float rounding can carry lower + U (U just below 1) onto the next bin's edge
    v = torch.where(v >= lower + 1, torch.nextafter(v, lower), v)
    return v / 128


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8: the bin each value falls in (values outside are clipped)."""
    return (torch.floor(x.float() * 128) + 128).clamp_(0, 255).to(torch.uint8)


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
