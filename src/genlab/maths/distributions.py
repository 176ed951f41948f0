"""Per-pixel likelihoods of images in [-1, 1], summed to one log-probability per image.

The 8-bit pixel value k in {0..255} sits at the bin centre x_k = 2k/255 - 1 with bin edges
x_k +- 1/255; the lowest and highest bins extend to -inf and +inf. Discretized densities give
the probability mass of the bin (Salimans et al. 2017, eq. 2; Ho et al. 2020, eq. 13).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

HALF_BIN = 1 / 255


def _sum_pixels(log_prob: torch.Tensor) -> torch.Tensor:
    return log_prob.flatten(1).sum(1)


def bernoulli_log_prob(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log p(x) for binary images (x in {-1, 1}, i.e. pixels off / on)."""
    target = (x > 0).to(logits.dtype)
    return -_sum_pixels(F.binary_cross_entropy_with_logits(logits, target, reduction="none"))


def _log_bin_mass(x: torch.Tensor, cdf_plus: torch.Tensor, cdf_min: torch.Tensor,
                  log_cdf_plus: torch.Tensor, log_one_minus_cdf_min: torch.Tensor) -> torch.Tensor:
    mass = (cdf_plus - cdf_min).clamp_min(1e-12)
    return torch.where(x < -0.999, log_cdf_plus,
                       torch.where(x > 0.999, log_one_minus_cdf_min, torch.log(mass)))


def discretized_logistic_log_prob(x: torch.Tensor, mean: torch.Tensor,
                                  log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) of 8-bit images under a logistic(mean, exp(log_scale)) per pixel, integrated
    over each pixel's bin."""
    inv_scale = torch.exp(-log_scale)
    plus, minus = inv_scale * (x - mean + HALF_BIN), inv_scale * (x - mean - HALF_BIN)
    log_prob = _log_bin_mass(x, torch.sigmoid(plus), torch.sigmoid(minus),
                             F.logsigmoid(plus), F.logsigmoid(-minus))
    return _sum_pixels(log_prob)


def discretized_gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor,
                                  log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) of 8-bit images under a Gaussian(mean, exp(log_scale)^2) per pixel, integrated
    over each pixel's bin (the DDPM decoder, Ho et al. 2020 eq. 13)."""
    inv_scale = torch.exp(-log_scale)
    plus, minus = inv_scale * (x - mean + HALF_BIN), inv_scale * (x - mean - HALF_BIN)
    log_prob = _log_bin_mass(x, torch.special.ndtr(plus), torch.special.ndtr(minus),
                             torch.special.log_ndtr(plus), torch.special.log_ndtr(-minus))
    return _sum_pixels(log_prob)


def gaussian_kl_standard(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per row: 0.5 * sum(mu^2 + var - 1 - logvar)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)


def diagonal_normal_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
                             ) -> torch.Tensor:
    return -0.5 * ((z - mu).pow(2) / logvar.exp() + logvar + math.log(2 * math.pi)).sum(-1)


def normal_kl(mean1: torch.Tensor, log_var1: torch.Tensor, mean2: torch.Tensor,
              log_var2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^log_var1) || N(mean2, e^log_var2)) per element."""
    return 0.5 * (log_var2 - log_var1 + (log_var1.exp() + (mean1 - mean2) ** 2)
                  * torch.exp(-log_var2) - 1)


def slerp(z0: torch.Tensor, z1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985) between rows of z0 and z1 (B, D) at each weight
    w in `weights` (S,): sin((1 - w) theta) / sin(theta) z0 + sin(w theta) / sin(theta) z1,
    theta the angle between the rows; returns (B, S, D). It keeps Gaussian latents at a typical
    norm (White 2016); rows at an angle near 0 use the straight line instead."""
    cos = (z0 * z1).sum(1) / (z0.norm(dim=1) * z1.norm(dim=1))
    theta = torch.arccos(cos.clamp(-1, 1))[:, None, None]
    w = weights[None, :, None]
    a, b = z0[:, None], z1[:, None]
    sin = torch.sin(theta)
    parallel = sin.abs() < 1e-4
    safe = torch.where(parallel, torch.ones_like(sin), sin)
    curved = (torch.sin((1 - w) * theta) * a + torch.sin(w * theta) * b) / safe
    return torch.where(parallel, (1 - w) * a + w * b, curved)
