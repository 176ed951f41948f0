"""Energy networks and the replay buffer of energy-based models (`genlab.models.ebm`).

- `EnergyResNet`: x (B, C, S, S) -> logits f(x) (B, outputs), read as energies by
  `genlab.maths.langevin.energy_from_logits` (E(x, y) = -f(x)[y], E(x) = -logsumexp f(x)).
  Residual blocks with SiLU (Swish) activations and no normalisation layers: Langevin sampling
  follows grad_x E, so E must be smooth in x (no ReLU kinks) and must not depend on the other
  images of a batch (no BatchNorm). Optional spectral normalisation of every weight (Miyato et
  al. 2018), as in IGEBM (Du & Mordatch 2019). One output: the unconditional IGEBM energy;
  K outputs: a class-conditional energy E(x, y), or JEM's classifier (Grathwohl et al. 2020;
  its WRN-28-10 is 3 levels of 4 blocks of widths 160, 320, 640).
- `ReplayBuffer`: Du & Mordatch's buffer of past chain states.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from genlab.maths.langevin import uniform_noise


def _normalized(layer: nn.Module, spectral_norm: bool) -> nn.Module:
    return _spectral_norm(layer) if spectral_norm else layer


class ResidualBlock(nn.Module):
    """SiLU, conv3, SiLU, conv3, plus the input (through a 1x1 convolution when the width
    changes); then 2x average pooling when `downsample`."""

    def __init__(self, c_in: int, c_out: int, downsample: bool, spectral_norm: bool = False):
        super().__init__()
        self.conv1 = _normalized(nn.Conv2d(c_in, c_out, 3, padding=1), spectral_norm)
        self.conv2 = _normalized(nn.Conv2d(c_out, c_out, 3, padding=1), spectral_norm)
        self.shortcut = (_normalized(nn.Conv2d(c_in, c_out, 1), spectral_norm)
                         if c_in != c_out else nn.Identity())
        self.pool = nn.AvgPool2d(2) if downsample else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.silu(self.conv1(F.silu(x))))
        return self.pool(h + self.shortcut(x))


class EnergyResNet(nn.Module):
    """A 3x3 stem convolution, then one level per entry of `channels` (`blocks` residual blocks
    of that width each, halving the resolution after every level but the last), SiLU, global
    average pooling and a linear head with `outputs` outputs."""

    def __init__(self, in_channels: int, channels: tuple[int, ...] = (64, 128, 256),
                 blocks: int = 1, outputs: int = 1, spectral_norm: bool = False):
        super().__init__()
        self.stem = _normalized(nn.Conv2d(in_channels, channels[0], 3, padding=1), spectral_norm)
        layers: list[nn.Module] = []
        previous = channels[0]
        for level, width in enumerate(channels):
            for block in range(blocks):
                last_of_level = block == blocks - 1 and level < len(channels) - 1
                layers.append(ResidualBlock(previous, width, last_of_level, spectral_norm))
                previous = width
        self.blocks = nn.Sequential(*layers)
        self.head = _normalized(nn.Linear(previous, outputs), spectral_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.blocks(self.stem(x))).mean(dim=(2, 3))
        return self.head(h)


class ReplayBuffer(nn.Module):
    """`size` past chain states (and their labels, for class-conditional chains), initially
    uniform noise (from `seed`). Chains start from a random stored state, or from fresh uniform
    noise with probability `restart_prob`; their final states are written back in place of the
    states they started from (Du & Mordatch 2019, sec. 3.1).

    The states are registered buffers, so they are part of the model's state dict: checkpoints
    keep them for resumed runs and for sampling from the buffer at evaluation."""

    def __init__(self, size: int, image_shape: tuple[int, int, int], restart_prob: float = 0.05,
                 seed: int = 0):
        super().__init__()
        self.size, self.restart_prob = size, restart_prob
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("images", uniform_noise((size, *image_shape), generator))
        self.register_buffer("labels", torch.zeros(size, dtype=torch.long))

    def draw(self, n: int, generator: torch.Generator | None = None,
             labels: torch.Tensor | None = None, restart_prob: float | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """n chain starts: (states (n, C, H, W), their labels (n,), the buffer indices they
        came from (n,), which of them were restarted from noise (n,) bool). Restarted chains
        take `labels` (e.g. the data batch's) when given, the stored labels otherwise."""
        device = self.images.device
        p = self.restart_prob if restart_prob is None else restart_prob
        index = torch.randint(self.size, (n,), generator=generator, device=device)
        restart = torch.rand(n, generator=generator, device=device) < p
        noise = uniform_noise((n, *self.images.shape[1:]), generator, device)
        states = torch.where(restart[:, None, None, None], noise, self.images[index])
        stored = self.labels[index]
        if labels is not None:
            stored = torch.where(restart, labels, stored)
        return states, stored, index, restart

    @torch.no_grad()
    def write(self, index: torch.Tensor, states: torch.Tensor,
              labels: torch.Tensor | None = None) -> None:
        """Store final chain states (and labels) at `index`."""
        self.images[index] = states.detach().to(self.images.dtype)
        if labels is not None:
            self.labels[index] = labels
