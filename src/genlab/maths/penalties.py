"""Penalties on the gradient of a network with respect to its input.

    gradient penalty  E[(||grad_x D(x_hat)||_2 - 1)^2],  x_hat = e x + (1 - e) G(z), e ~ U(0, 1)
                      (WGAN-GP, Gulrajani et al. 2017, weight lambda = 10)
    R1                E[||grad_x D(x)||_2^2] on real images (Mescheder et al. 2018, weight gamma/2)
    contraction       ||J_f(x)||_F^2 = sum_ij (d f_j / d x_i)^2, the squared Frobenius norm of
                      an encoder's Jacobian (the contractive autoencoder, Rifai et al. 2011,
                      eq. 1; for f = sigmoid(W x + b) it is sum_j (h_j (1 - h_j))^2 ||W_j||^2,
                      eq. 2): exactly, or by random projections
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


def jacobian_frobenius_sq(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
                          ) -> torch.Tensor:
    """||J_fn(x_i)||_F^2 per image, exactly: the full Jacobian of the code (D,) with respect to
    the image by `torch.func` (vmap over the batch of jacrev: D vector-Jacobian products per
    image), kept in the graph so that a penalty on it trains fn. `fn` maps (B, ...) to (B, D)
    and must treat images independently (no batch statistics)."""
    def single(image: torch.Tensor) -> torch.Tensor:
        return fn(image[None])[0]

    jacobians = torch.func.vmap(torch.func.jacrev(single))(x.detach())
    return jacobians.float().square().flatten(1).sum(1)


def jacobian_frobenius_sq_estimate(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                                   projections: int = 1,
                                   generator: torch.Generator | None = None) -> torch.Tensor:
    """An unbiased estimate of ||J_fn(x_i)||_F^2 per image from random projections: for
    eps ~ N(0, I), E||J eps||^2 = tr(J^T J) = tr(J J^T) = E||J^T v||^2 with v ~ N(0, I_D), and
    J^T v is one vector-Jacobian product (a backward pass), whatever the image size. The mean
    over `projections` draws of v, kept in the graph; the same conditions on `fn` as
    `jacobian_frobenius_sq`."""
    x = x.detach().requires_grad_(True)
    code = fn(x)
    total = torch.zeros(len(x), device=x.device)
    for _ in range(projections):
        v = torch.randn(code.shape, device=code.device, dtype=code.dtype, generator=generator)
        (vjp,) = torch.autograd.grad(code, x, grad_outputs=v, create_graph=True)
        total = total + vjp.float().square().flatten(1).sum(1)
    return total / projections
