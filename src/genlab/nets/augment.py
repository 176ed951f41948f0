"""Differentiable augmentation for data-efficient GANs (DiffAugment; Zhao et al. 2020).

The same random transformation family is applied to every image the discriminator sees, real
and generated, in the discriminator's and in the generator's step; each transform is
differentiable in the image, so the generator is trained through it. Images are in [-1, 1].

    color:       x <- x + (r1 - 1/2);  x <- m_c + 2 r2 (x - m_c);  x <- m + (r3 + 1/2)(x - m)
                 (brightness, saturation about the channel mean m_c, contrast about the image
                 mean m; r ~ U(0, 1) per image)
    translation: shift by up to 1/8 of the image size in each direction, filling with zeros
    cutout:      zero a square of half the image size at a random centre (clipped at borders)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from genlab.errors import check_choices


def _uniform(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One U(0, 1) number per image, shaped to broadcast over (C, H, W)."""
    return torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype, generator=generator)


def color(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    x = x + (_uniform(x, generator) - 0.5)
    channel_mean = x.mean(dim=1, keepdim=True)
    x = (x - channel_mean) * (2 * _uniform(x, generator)) + channel_mean
    image_mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - image_mean) * (_uniform(x, generator) + 0.5) + image_mean


def translation(x: torch.Tensor, generator: torch.Generator | None = None,
                ratio: float = 0.125) -> torch.Tensor:
    b, _, h, w = x.shape
    pad = int(h * ratio + 0.5)
    shift = torch.randint(-pad, pad + 1, (2, b, 1, 1), device=x.device, generator=generator)
    rows = torch.arange(h, device=x.device)[None, :, None] + shift[0] + pad  # (B, H, 1)
    cols = torch.arange(w, device=x.device)[None, None, :] + shift[1] + pad  # (B, 1, W)
    padded = F.pad(x, [pad, pad, pad, pad])
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2)  # indexing puts (B, H, W) first


def cutout(x: torch.Tensor, generator: torch.Generator | None = None,
           ratio: float = 0.5) -> torch.Tensor:
    b, _, h, w = x.shape
    size_h, size_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h, (b, 1, 1), device=x.device, generator=generator) - size_h // 2
    left = torch.randint(0, w, (b, 1, 1), device=x.device, generator=generator) - size_w // 2
    rows = torch.arange(h, device=x.device)[None, :, None] - top  # (B, H, 1), 0 at the top
    cols = torch.arange(w, device=x.device)[None, None, :] - left
    inside = (rows >= 0) & (rows < size_h) & (cols >= 0) & (cols < size_w)  # (B, H, W)
    return x * (~inside).unsqueeze(1).to(x.dtype)


POLICIES = {"color": color, "translation": translation, "cutout": cutout}


def check_policies(policies: Sequence[str]) -> None:
    check_choices("model.augment", policies, POLICIES)


def diff_augment(x: torch.Tensor, policies: Sequence[str],
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply the named transforms in order (color, translation, cutout in the paper)."""
    for policy in policies:
        x = POLICIES[policy](x, generator)
    return x
