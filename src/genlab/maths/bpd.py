"""Negative log-likelihoods on one scale: bits per dimension of 8-bit images.

For a discrete model of 8-bit pixels (Bernoulli, discretized logistic / Gaussian, PixelCNN,
the diffusion decoder) the NLL in nats converts directly:

    bpd = nll / (D ln 2),                          D = C * H * W.

A continuous density p on uniformly dequantized data x = 2 (u + U(0,1)) / 256 - 1 (bins of
width 2/256 in [-1, 1]) bounds the discrete NLL (Theis et al. 2016, eq. 7):

    -log P(u) <= E_U[-log p(x)] - D log(2 / 256) = E_U[-log p(x)] + D log 128.

For binarized data (Bernoulli decoders) the same formula gives bits per binary pixel; papers on
binarized MNIST report the NLL in nats, which is logged beside it.
"""

from __future__ import annotations

import math

import torch


def bits_per_dim(nll_nats: torch.Tensor | float, num_dims: int) -> torch.Tensor | float:
    """Convert a per-image discrete NLL in nats to bits per dimension."""
    return nll_nats / (num_dims * math.log(2))


def dequantized_nll(continuous_nll: torch.Tensor | float, num_dims: int) -> torch.Tensor | float:
    """Discrete NLL bound (nats) from a density's NLL on [-1, 1]-scaled dequantized data."""
    return continuous_nll + num_dims * math.log(128)
