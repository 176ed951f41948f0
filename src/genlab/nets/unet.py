"""The noise-prediction UNet of Ho et al. 2020 (Appendix B), a PixelCNN++-style wide ResNet:

- a sinusoidal embedding of the timestep (Vaswani et al. 2017) through a two-layer MLP, added
  in every residual block (plus an optional class embedding, with one extra "no label" class
  for classifier-free guidance);
- per resolution level `num_res_blocks` residual blocks of width `channels * mult`,
  self-attention (`num_heads` heads; one in the paper) after each block at the resolutions in
  `attention_resolutions`, and a stride-2
  convolution down to the next level; a residual-attention-residual middle; the mirror image
  upwards (one block more per level) with skip connections from every downward block;
- GroupNorm (32 groups, fewer in narrow layers so that each group has at least 4 channels),
  SiLU, dropout in the second half of each block, zero-initialised final layers so that every
  block starts as the identity.
With channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2 and attention at 16x16 it is the
paper's 35.7M-parameter CIFAR-10 network.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """[sin(t w_k), cos(t w_k)] with w_k = max_period^(-k / (dim / 2)), k = 0 .. dim/2 - 1.

    The exponent divides by dim/2 as openai/improved-diffusion does; Ho et al.'s TensorFlow code
    divides by dim/2 - 1 (so its last frequency is exactly 1 / max_period). The two differ only
    in the spacing of the frequencies; we keep dim/2 because trained checkpoints depend on it."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) / half
                            * torch.arange(half, device=t.device, dtype=torch.float32))
    angles = t.float()[:, None] * frequencies[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with at most `groups` groups of at least 4 channels. A group of one channel
    would subtract its own mean, and with it the per-channel embedding added in ResBlock."""
    return nn.GroupNorm(math.gcd(groups, max(channels // 4, 1)), channels)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """h = conv(drop(act(norm(conv(act(norm(x))) + W emb)))); out = skip(x) + h."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float,
                 groups: int):
        super().__init__()
        self.norm1 = _norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_channels)
        self.norm2 = _norm(out_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = (nn.Identity() if in_channels == out_channels
                     else nn.Conv2d(in_channels, out_channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H*W positions, with a residual connection."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # each (B, heads, HW, C / heads)
        a = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(a.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.ModuleList):
    """A residual block, optionally followed by attention, applied as one unit."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb)
        return x


class UNet(nn.Module):
    """eps_theta(x_t, t[, y]): (B, C, S, S) images, (B,) integer timesteps, optional (B,)
    labels in 0..num_classes (num_classes itself meaning "no label") -> (B, out_channels, S, S).
    """

    def __init__(self, in_channels: int, image_size: int, out_channels: int | None = None,
                 channels: int = 128, channel_mults: tuple[int, ...] = (1, 2, 2, 2),
                 num_res_blocks: int = 2, attention_resolutions: tuple[int, ...] = (16,),
                 dropout: float = 0.1, num_heads: int = 1, norm_groups: int = 32,
                 num_classes: int = 0):
        super().__init__()
        self.channels, self.num_classes = channels, num_classes
        emb_dim = 4 * channels
        self.time_mlp = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(),
                                      nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)

        def level(c_in: int, c_out: int, resolution: int) -> Level:
            layers: list[nn.Module] = [ResBlock(c_in, c_out, emb_dim, dropout, norm_groups)]
            if resolution in attention_resolutions:
                layers.append(AttentionBlock(c_out, num_heads, norm_groups))
            return Level(layers)

        self.down = nn.ModuleList()
        skip_channels, width, resolution = [channels], channels, image_size
        for i, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                self.down.append(level(width, channels * mult, resolution))
                width = channels * mult
                skip_channels.append(width)
            if i < len(channel_mults) - 1:
                self.down.append(Downsample(width))
                skip_channels.append(width)
                resolution //= 2
        self.middle = Level([ResBlock(width, width, emb_dim, dropout, norm_groups),
                             AttentionBlock(width, num_heads, norm_groups),
                             ResBlock(width, width, emb_dim, dropout, norm_groups)])
        self.up = nn.ModuleList()
        for i, mult in reversed(list(enumerate(channel_mults))):
            for j in range(num_res_blocks + 1):
                block = level(width + skip_channels.pop(), channels * mult, resolution)
                width = channels * mult
                if i > 0 and j == num_res_blocks:
                    block.append(Upsample(width))
                    resolution *= 2
                self.up.append(block)
        self.out = nn.Sequential(_norm(width, norm_groups), nn.SiLU(),
                                 _zero(nn.Conv2d(width, out_channels or in_channels, 3,
                                                 padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.channels))
        if self.class_emb is not None:
            if labels is None:
                labels = torch.full_like(t, self.num_classes, dtype=torch.long)
            emb = emb + self.class_emb(labels)
        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb)
            skips.append(h)
        h = self.middle(h, emb)
        for layer in self.up:
            h = layer(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)
