"""GAN generators G(z, y) and discriminators D(x, y) for C x S x S images (S a power of two).

- DCGAN (Radford et al. 2016): transposed-convolution generator with BatchNorm and ReLU; strided
  convolution discriminator with LeakyReLU(0.2) and optional BatchNorm.
- ResNet (Gulrajani et al. 2017; Miyato et al. 2018): pre-activation up-sampling residual blocks
  in G; residual blocks with average-pool down-sampling and global sum pooling in D.
- Spectral normalization of every D weight (Miyato et al. 2018): W <- W / sigma(W), sigma the
  largest singular value, estimated by one power iteration per forward pass.
- Class conditioning (num_classes > 0): conditional BatchNorm in G, gain and bias per class
  (de Vries et al. 2017), and a projection discriminator (Miyato & Koyama 2018):
      D(x, y) = psi(phi(x)) + <embed(y), phi(x)>.
G returns images in [-1, 1] (tanh); D returns one logit per image, shape (B,).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from genlab.errors import GenlabError


def _levels(image_size: int) -> int:
    """Number of factor-2 resolution changes between 4 x 4 and image_size x image_size."""
    levels = math.log2(image_size) - 2
    if levels < 1 or not levels.is_integer():
        raise GenlabError(f"The GAN networks need square images whose side is a power of two of "
                          f"at least 8 (data.image_size=32 or 64); got {image_size}.")
    return int(levels)


def _normalized(layer: nn.Module, spectral_norm: bool) -> nn.Module:
    return _spectral_norm(layer) if spectral_norm else layer


class BatchNorm(nn.Module):
    """BatchNorm2d; with num_classes, conditional: BN(x) * (1 + gamma_y) + beta_y."""

    def __init__(self, channels: int, num_classes: int = 0):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=not num_classes)
        self.embed = nn.Embedding(num_classes, 2 * channels) if num_classes else None
        if self.embed is not None:
            nn.init.zeros_(self.embed.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm(x)
        if self.embed is None:
            return h
        gamma, beta = self.embed(labels)[:, :, None, None].chunk(2, dim=1)
        return h * (1 + gamma) + beta


class ProjectionHead(nn.Module):
    """Features phi(x) (B, F) -> logit psi(phi) + <embed(y), phi> (the second term when
    conditional)."""

    def __init__(self, features: int, num_classes: int = 0, spectral_norm: bool = False):
        super().__init__()
        linear = nn.Linear(features, 1)
        nn.init.xavier_uniform_(linear.weight)
        nn.init.zeros_(linear.bias)
        self.linear = _normalized(linear, spectral_norm)
        self.embed = None
        if num_classes:
            embed = nn.Embedding(num_classes, features)
            nn.init.xavier_uniform_(embed.weight)
            self.embed = _normalized(embed, spectral_norm)

    def forward(self, h: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        logit = self.linear(h).squeeze(1)
        if self.embed is not None:
            logit = logit + (self.embed(labels) * h).sum(dim=1)
        return logit


def _dcgan_init(layer: nn.Module) -> nn.Module:
    """N(0, 0.02) weights and zero biases, as in Radford et al. 2016; BatchNorm gains
    N(1, 0.02). Applied to a layer before any spectral normalization wraps it."""
    for m in layer.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return layer


class DCGANGenerator(nn.Module):
    """z -> 4x4 (4w channels for S=32) -> ... -> S x S, halving the width at each doubling."""

    def __init__(self, latent_dim: int, channels: int, image_size: int, width: int = 128,
                 num_classes: int = 0):
        super().__init__()
        levels = _levels(image_size)
        widths = [width * 2 ** (levels - 1 - i) for i in range(levels)]
        self.stem = nn.ConvTranspose2d(latent_dim, widths[0], 4, 1, 0)  # 1x1 -> 4x4
        self.norms = nn.ModuleList([BatchNorm(widths[0], num_classes)])
        self.ups = nn.ModuleList()
        for w_in, w_out in zip(widths, widths[1:]):
            self.ups.append(nn.ConvTranspose2d(w_in, w_out, 4, 2, 1))
            self.norms.append(BatchNorm(w_out, num_classes))
        self.out = nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1)
        _dcgan_init(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.relu(self.norms[0](self.stem(z[:, :, None, None]), labels))
        for up, norm in zip(self.ups, self.norms[1:]):
            h = torch.relu(norm(up(h), labels))
        return torch.tanh(self.out(h))


class DCGANDiscriminator(nn.Module):
    """S x S -> ... -> 4x4 by stride-2 4x4 convolutions (width doubling), then the projection
    head on the flattened 4x4 features (equivalent to DCGAN's final 4x4 convolution)."""

    def __init__(self, channels: int, image_size: int, width: int = 64, num_classes: int = 0,
                 spectral_norm: bool = False, batch_norm: bool = True):
        super().__init__()
        levels = _levels(image_size)
        layers: list[nn.Module] = []
        w_in = channels
        for i in range(levels):
            w_out = width * 2 ** i
            conv = _dcgan_init(nn.Conv2d(w_in, w_out, 4, 2, 1))
            layers.append(_normalized(conv, spectral_norm))
            if batch_norm and i > 0:  # none on the input layer (Radford et al. 2016)
                layers.append(_dcgan_init(nn.BatchNorm2d(w_out)))
            layers.append(nn.LeakyReLU(0.2))
            w_in = w_out
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = ProjectionHead(w_in * 16, num_classes, spectral_norm)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(x), labels)


def _conv3(c_in: int, c_out: int, gain: float = 1.0, spectral_norm: bool = False) -> nn.Module:
    conv = nn.Conv2d(c_in, c_out, 3, 1, 1)
    nn.init.xavier_uniform_(conv.weight, gain)
    nn.init.zeros_(conv.bias)
    return _normalized(conv, spectral_norm)


def _conv1(c_in: int, c_out: int, spectral_norm: bool = False) -> nn.Module:
    conv = nn.Conv2d(c_in, c_out, 1)
    nn.init.xavier_uniform_(conv.weight)
    nn.init.zeros_(conv.bias)
    return _normalized(conv, spectral_norm)


class GeneratorBlock(nn.Module):
    """x -> BN, ReLU, 2x nearest up-sampling, conv3, BN, ReLU, conv3; plus up(conv1(x))."""

    def __init__(self, c_in: int, c_out: int, num_classes: int = 0):
        super().__init__()
        self.norm1, self.norm2 = BatchNorm(c_in, num_classes), BatchNorm(c_out, num_classes)
        self.conv1 = _conv3(c_in, c_out, math.sqrt(2))
        self.conv2 = _conv3(c_out, c_out, math.sqrt(2))
        self.shortcut = _conv1(c_in, c_out)
        self.up = nn.Upsample(scale_factor=2)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(self.up(torch.relu(self.norm1(x, labels))))
        h = self.conv2(torch.relu(self.norm2(h, labels)))
        return h + self.up(self.shortcut(x))


class ResNetGenerator(nn.Module):
    """z -> linear to width x 4 x 4 -> residual up-sampling blocks to S x S -> BN, ReLU, conv3,
    tanh (the SNGAN / WGAN-GP CIFAR-10 generator: width 256 or 128, three blocks)."""

    def __init__(self, latent_dim: int, channels: int, image_size: int, width: int = 256,
                 num_classes: int = 0):
        super().__init__()
        self.width = width
        self.linear = nn.Linear(latent_dim, width * 16)
        nn.init.xavier_uniform_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.blocks = nn.ModuleList([GeneratorBlock(width, width, num_classes)
                                     for _ in range(_levels(image_size))])
        self.norm = BatchNorm(width, num_classes)
        self.out = _conv3(width, channels)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.linear(z).view(-1, self.width, 4, 4)
        for block in self.blocks:
            h = block(h, labels)
        return torch.tanh(self.out(torch.relu(self.norm(h, labels))))


class DiscriminatorBlock(nn.Module):
    """[ReLU,] conv3, ReLU, conv3, [avg-pool 2]; plus [avg-pool(]conv1(x)[)] when the shape
    changes. The first block takes the image itself, so has no ReLU in front (the "optimized"
    block of Miyato et al. 2018; a 1x1 convolution and average pooling commute)."""

    def __init__(self, c_in: int, c_out: int, downsample: bool, first: bool = False,
                 spectral_norm: bool = True):
        super().__init__()
        self.first, self.downsample = first, downsample
        self.conv1 = _conv3(c_in, c_out, math.sqrt(2), spectral_norm)
        self.conv2 = _conv3(c_out, c_out, math.sqrt(2), spectral_norm)
        self.shortcut = (_conv1(c_in, c_out, spectral_norm) if downsample or c_in != c_out
                         else nn.Identity())
        self.pool = nn.AvgPool2d(2) if downsample else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else torch.relu(x)
        h = self.pool(self.conv2(torch.relu(self.conv1(h))))
        return h + self.pool(self.shortcut(x))


class ResNetDiscriminator(nn.Module):
    """Two down-sampling and two plain residual blocks of `width` channels, ReLU, global sum
    pooling, projection head (the SNGAN CIFAR-10 discriminator). Global pooling makes it work
    at any image size; `image_size` is taken only to share the DCGAN discriminator's signature."""

    def __init__(self, channels: int, image_size: int, width: int = 128, num_classes: int = 0,
                 spectral_norm: bool = True):
        super().__init__()
        self.blocks = nn.Sequential(
            DiscriminatorBlock(channels, width, True, first=True, spectral_norm=spectral_norm),
            DiscriminatorBlock(width, width, True, spectral_norm=spectral_norm),
            DiscriminatorBlock(width, width, False, spectral_norm=spectral_norm),
            DiscriminatorBlock(width, width, False, spectral_norm=spectral_norm),
            nn.ReLU())
        self.head = ProjectionHead(width, num_classes, spectral_norm)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.blocks(x).sum(dim=(2, 3)), labels)
