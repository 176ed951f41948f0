"""GAN objectives on discriminator logits, and the gradient penalties.

With D's logits r = D(x) on real images and f = D(G(z)) on generated ones (means over a batch):
    non_saturating (Goodfellow et al. 2014; DCGAN):
        L_D = softplus(-r) + softplus(f)      (binary cross-entropy, real = 1, fake = 0)
        L_G = softplus(-f)                    (-log sigmoid(f): the non-saturating G loss)
    wasserstein (Arjovsky et al. 2017; with the gradient penalty: WGAN-GP, Gulrajani et al.):
        L_D = f - r,    L_G = -f
    hinge (Lim & Ye 2017; SNGAN, Miyato et al. 2018):
        L_D = relu(1 - r) + relu(1 + f),    L_G = -f
The penalties on D (WGAN-GP, R1) are in `genlab.maths.penalties`.
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
