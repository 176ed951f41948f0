"""GAN objectives on discriminator logits, and the gradient penalties.

With D's logits r = D(x) on real images and f = D(G(z)) on generated ones (means over a batch):
    non_saturating (Goodfellow et al. 2014; DCGAN):
        L_D = softplus(-r) + softplus(f)      (binary cross-entropy, real = 1, fake = 0)
        L_G = softplus(-f)                    (-log sigmoid(f): the non-saturating G loss)
    wasserstein (Arjovsky et al. 2017; with the gradient penalty: WGAN-GP, Gulrajani et al.):
        L_D = f - r,    L_G = -f
    hinge (Lim & Ye 2017; SNGAN, Miyato et al. 2018):
        L_D = relu(1 - r) + relu(1 + f),    L_G = -f
Penalties on D:
    gradient penalty  E[(||grad_x D(x_hat)||_2 - 1)^2],  x_hat = e x + (1 - e) G(z), e ~ U(0, 1)
                      (Gulrajani et al. 2017, weight lambda = 10)
    R1                E[||grad_x D(x)||_2^2] on real images (Mescheder et al. 2018, weight gamma/2)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from genlab.errors import check_choice


class GANLoss(NamedTuple):
    discriminator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (r, f) -> L_D
    generator: Callable[[torch.Tensor], torch.Tensor]  # f -> L_G


LOSSES = {
    "non_saturating": GANLoss(lambda r, f: F.softplus(-r).mean() + F.softplus(f).mean(),
                              lambda f: F.softplus(-f).mean()),
    "wasserstein": GANLoss(lambda r, f: f.mean() - r.mean(), lambda f: -f.mean()),
    "hinge": GANLoss(lambda r, f: F.relu(1 - r).mean() + F.relu(1 + f).mean(),
                     lambda f: -f.mean()),
}


def gan_loss(name: str) -> GANLoss:
    return LOSSES[check_choice("model.loss", name, LOSSES)]


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
