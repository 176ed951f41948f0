"""Convolutional encoder and decoder for C x S x S images (S a power of two, e.g. 32 or 64)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from genlab.errors import GenlabError


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 4), channels)


class ConvEncoder(nn.Module):
    """Image -> feature vector. Each level: 3x3 conv, then a stride-2 4x4 conv halving the size.

    With channels (32, 64, 128) a 32x32 image ends as 128 x 4 x 4 = 2048 features.
    """

    def __init__(self, in_channels: int, image_size: int,
                 channels: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for width in channels:
            layers += [nn.Conv2d(previous, width, 3, padding=1), _norm(width), nn.SiLU(),
                       nn.Conv2d(width, width, 4, stride=2, padding=1), _norm(width), nn.SiLU()]
            previous = width
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.out_features = channels[-1] * (image_size // 2 ** len(channels)) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvDecoder(nn.Module):
    """Feature vector -> C_out x S x S map, the mirror image of ConvEncoder."""

    def __init__(self, in_features: int, out_channels: int, image_size: int,
                 channels: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        widths = list(reversed(channels))
        self.start_size = image_size // 2 ** len(channels)
        self.start_channels = widths[0]
        self.project = nn.Linear(in_features, widths[0] * self.start_size ** 2)
        layers: list[nn.Module] = [nn.SiLU()]
        for width, next_width in zip(widths, widths[1:] + [widths[-1]]):
            layers += [nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), _norm(width),
                       nn.SiLU(), nn.Conv2d(width, next_width, 3, padding=1), _norm(next_width),
                       nn.SiLU()]
        layers.append(nn.Conv2d(widths[-1], out_channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.project(h).view(-1, self.start_channels, self.start_size, self.start_size)
        return self.net(h)


def check_conv_config(model: Mapping[str, Any], data: Mapping[str, Any]) -> None:
    """Start-up rules of the families built on ConvEncoder / ConvDecoder and the pixel
    likelihoods (the VAE, the autoencoders): a bernoulli likelihood needs binary pixels, every
    width suits the group norms, and the image halves evenly at every level."""
    if model.get("likelihood") == "bernoulli" and not data.get("binarize"):
        raise GenlabError("model.likelihood=bernoulli needs binary pixels: set "
                          "data.binarize=dynamic (or static), or choose "
                          "model.likelihood=logistic for 8-bit images.")
    channels, size = list(model.get("channels") or []), data.get("image_size")
    if odd := [w for w in channels if w % 4 or (w > 128 and w % 32)]:
        raise GenlabError(f"model.channels={channels}: every width must be a multiple of 4 "
                          f"(of 32 above 128) for the group norms; {odd[0]} is not.")
    if isinstance(size, int) and channels and (size % 2 ** len(channels)
                                               or size < 2 ** len(channels)):
        raise GenlabError(f"model.channels={channels} halves the image {len(channels)} "
                          f"times, so data.image_size must be a multiple of "
                          f"{2 ** len(channels)}; it is {size}. Use fewer levels or another "
                          "image size.")
