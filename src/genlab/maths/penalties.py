"""Penalties on the gradient of a network with respect to its input.

    gradient penalty  E[(||grad_x D(x_hat)||_2 - 1)^2],  x_hat = e x + (1 - e) G(z), e ~ U(0, 1)
                      (WGAN-GP, Gulrajani et al. 2017, weight lambda = 10)
    R1                E[||grad_x D(x)||_2^2] on real images (Mescheder et al. 2018, weight gamma/2)
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def input_gradient_norms(critic: Callable[[torch.Tensor], torch.Tensor],
                         x: torch.Tensor) -> torch.Tensor:
    """||grad_x critic(x)_i||_2 per image, kept in the graph so a penalty on it trains D."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return grad.flatten(1).norm(dim=1)


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                     fake: torch.Tensor, generator: torch.Generator | None = None
                     ) -> torch.Tensor:
    """The WGAN-GP penalty at random points between real and generated images."""
    e = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype,
                   generator=generator)
    x_hat = e * real.detach() + (1 - e) * fake.detach()
    return (input_gradient_norms(critic, x_hat) - 1).square().mean()


def r1_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor
               ) -> torch.Tensor:
    """The R1 penalty, E ||grad D(x)||^2 on real images (unweighted)."""
    return input_gradient_norms(critic, real).square().mean()
