"""Convolutional encoder and decoder for C x S x S images (S a power of two, e.g. 32 or 64)."""

from __future__ import annotations

import torch
from torch import nn


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
