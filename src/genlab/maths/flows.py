"""Normalizing flows: an invertible map z = f(x) and the change of variables (Dinh et al. 2015,
2017; Kingma & Dhariwal 2018), with the bound that turns a density on dequantized images into a
likelihood of 8-bit images (Theis et al. 2016; Ho et al. 2019). No networks here: the layers of
`genlab.nets.flows` call these formulas with what their networks compute.

Change of variables, for f = f_L o ... o f_1 with h_0 = x, h_l = f_l(h_{l-1}), z = h_L:

    log p(x) = log N(z; 0, I) + sum_l log |det d h_l / d h_{l-1}|.
Every layer returns its log-determinant per image in float32 (also under bf16 / fp16 autocast),
and the sum is accumulated in float32.

Gaussian priors as standardizations: log N(z; m, diag(s^2)) = log N(eps; 0, I) - sum log s with
eps = (z - m) / s, so a learned prior (Glow's top prior; the conditional prior of a split-off
half, whose m and s come from the half that is kept) is an affine layer z -> eps with
log-determinant -sum log s, followed by the standard normal. The code of an image is then eps:
standard normal under the model, and sampling at temperature T (Kingma & Dhariwal 2018, sec. 5)
is decoding eps ~ N(0, T^2 I), i.e. z = m + T s eps at every level.

Dequantization. For 8-bit u and v in [0, 1)^D, x = (u + v) / 128 - 1 lies in u's bins of width
2/256 in [-1, 1] (`genlab.data.transforms`). For any density q(v|u) on [0, 1)^D (Ho et al. 2019,
eq. 12; uniform q = 1 is Theis et al. 2016, eq. 7), with p_x the flow's density on [-1, 1]^D:

    log P(u) = log E_q[p_x(x) 128^-D / q(v|u)] >= E_q[log p_x(x) - log q(v|u)] - D log 128,
and with K samples v_1..v_K ~ q the importance-weighted bound (Burda et al. 2016; Ho et al.
2019, eq. 13), which is tighter and approaches log P(u) as K grows:

    log P(u) >= E[log (1/K) sum_k p_x(x_k) / q(v_k|u)] - D log 128.
The D log 128 is the Jacobian of the scaling to [-1, 1]: the same as the -D log 256 of data on
[0, 1] plus the D log 2 of stretching [0, 1] onto [-1, 1]; `genlab.maths.bpd` converts to
bits/dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from genlab.maths.bpd import dequantized_nll
from genlab.maths.distributions import standard_normal_log_prob

COUPLING_SCALE_OFFSET = 2.0  # scale = sigmoid(h + 2): about 0.88 where the network outputs 0


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """x in float32, or float64 if it is float64 (half-precision values are widened)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def sum_per_image(x: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension but the first, in at least float32: (B, ...) -> (B,)."""
    return at_least_float32(x).flatten(1).sum(1)


def change_of_variables(z: torch.Tensor, logdet: torch.Tensor) -> torch.Tensor:
    """log p(x) per image from z = f(x) (B, ...) and log |det df/dx| (B,), under a standard
    normal on z."""
    return standard_normal_log_prob(at_least_float32(z).flatten(1)) + logdet


def standardize(z: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """eps = (z - mean) / exp(log_std) and its log-determinant -sum log_std per image."""
    eps = (z - mean) * torch.exp(-log_std)
    return eps, -sum_per_image(log_std.expand_as(z))


def unstandardize(eps: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """The inverse of `standardize`: z = mean + exp(log_std) eps."""
    return mean + torch.exp(log_std) * eps


def affine_coupling(x: torch.Tensor, shift: torch.Tensor, raw_scale: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Glow's affine coupling transform of the changed half (Kingma & Dhariwal 2018, Table 1,
    with openai/glow's scale): y = (x + shift) * s, s = sigmoid(raw_scale + 2), elementwise;
    returns y and log s per element (the log-determinant is their sum over the changed
    elements). The sigmoid keeps s in (0, 1), so no layer can blow up its input."""
    log_scale = F.logsigmoid(raw_scale + COUPLING_SCALE_OFFSET)
    return (x + shift) * torch.exp(log_scale), log_scale


def affine_coupling_inverse(y: torch.Tensor, shift: torch.Tensor, raw_scale: torch.Tensor
                            ) -> torch.Tensor:
    """x = y / s - shift, the inverse of `affine_coupling`."""
    return y * torch.exp(-F.logsigmoid(raw_scale + COUPLING_SCALE_OFFSET)) - shift


def logit_transform(x: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """RealNVP's preprocessing (Dinh et al. 2017, sec. 4.1) for x in [-1, 1]:
    y = logit(alpha + (1 - 2 alpha) (x + 1) / 2), defined on the closed interval for alpha > 0;
    log |dy/dx| = log((1 - 2 alpha) / 2) - log p - log(1 - p) per element, p the argument of the
    logit. Returns y and the log-determinant per image."""
    p = alpha + (1 - 2 * alpha) * (x + 1) / 2
    y = torch.log(p) - torch.log1p(-p)
    log_jacobian = math.log((1 - 2 * alpha) / 2) - torch.log(p) - torch.log1p(-p)
    return y, sum_per_image(log_jacobian)


def logit_transform_inverse(y: torch.Tensor, alpha: float) -> torch.Tensor:
    """x = 2 (sigmoid(y) - alpha) / (1 - 2 alpha) - 1, the inverse of `logit_transform`."""
    return 2 * (torch.sigmoid(y) - alpha) / (1 - 2 * alpha) - 1


def sigmoid_transform(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """v = sigmoid(y) in (0, 1), the last layer of a variational dequantizer (Ho et al. 2019):
    log |dv/dy| = log sigmoid(y) + log sigmoid(-y) per element, summed per image."""
    return torch.sigmoid(y), sum_per_image(F.logsigmoid(y) + F.logsigmoid(-y))


def dequantized_bound(log_weights: torch.Tensor, num_dims: int) -> torch.Tensor:
    """-log P(u) <= -log (1/K) sum_k exp(w_k) + D log 128 in nats per image, for the log-weights
    w_k = log p_x(x_k) - log q(v_k|u) of K dequantization samples, (K, B) (log q = 0 for uniform
    dequantization). K = 1 is the plain dequantization bound, K > 1 the importance-weighted
    one."""
    log_mean = torch.logsumexp(at_least_float32(log_weights), dim=0) - math.log(len(log_weights))
    return dequantized_nll(-log_mean, num_dims)
