"""The variational bounds of a VAE with a diagonal Gaussian posterior and a standard normal prior
(Kingma & Welling 2014; Burda et al. 2016):

    ELBO(x)  = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z))                       <= log p(x)
    L_K(x)   = E[log (1/K) sum_k p(x, z_k) / q(z_k|x)],  z_k ~ q(z|x)            <= log p(x)
with ELBO = L_1 <= L_K <= L_{K+1} -> log p(x) as K grows. The decoder enters as a function
z -> log p(x|z), so these are tested on a linear-Gaussian model whose log p(x) is exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from genlab.maths.distributions import (
    diagonal_normal_log_prob,
    gaussian_kl_standard,
    standard_normal_log_prob,
)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, n: int | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + sigma * eps; with `n`, n samples stacked in front: (n, B, L)."""
    shape = mu.shape if n is None else (n, *mu.shape)
    eps = torch.randn(shape, device=mu.device, dtype=mu.dtype, generator=generator)
    return mu + (0.5 * logvar).exp() * eps


def elbo(mu: torch.Tensor, logvar: torch.Tensor,
         log_likelihood: Callable[[torch.Tensor], torch.Tensor]
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """One-sample reconstruction term log p(x|z) and the analytic KL, per image."""
    return log_likelihood(reparameterize(mu, logvar)), gaussian_kl_standard(mu, logvar)


def importance_weighted_bound(mu: torch.Tensor, logvar: torch.Tensor,
                              log_likelihood: Callable[[torch.Tensor], torch.Tensor], k: int,
                              chunk: int, progress: Callable[[int], None] | None = None
                              ) -> torch.Tensor:
    """L_K per image. `log_likelihood` maps z of shape (n, B, L) to log p(x|z) of shape (n, B);
    the K samples are drawn `chunk` at a time, and `progress(n * B)` is told of each chunk's
    n * B decodes."""
    log_weights = []
    for start in range(0, k, chunk):
        z = reparameterize(mu, logvar, n=min(chunk, k - start))
        log_weights.append(log_likelihood(z) + standard_normal_log_prob(z)
                           - diagonal_normal_log_prob(z, mu, logvar))
        if progress is not None:
            progress(z.shape[0] * z.shape[1])
    return torch.logsumexp(torch.cat(log_weights), dim=0) - math.log(k)
