"""Restoration by latent optimisation (MAP inversion of a generator): for a decoder g (a VAE's
or an autoencoder's decoder, a flow's inverse, a GAN's generator), a degradation A with noise
std s (`genlab.maths.degradations`) and measurements y,

    z* = argmin_z  ||A(g(z)) - y||^2 / (2 s^2) + prior(z),      x_hat = g(z*),

the maximum a posteriori code under y = A(g(z)) + s n, n ~ N(0, I); prior(z) = ||z||^2 / 2 for
a N(0, I) prior (Bora et al. 2017, "Compressed sensing using generative models"; for GANs this
is GAN inversion). Without measurement noise (s = 0) the likelihood is a delta; `noise_floor`
then stands in for s and sets how far the prior may pull the restoration off the measurements.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from genlab.maths.degradations import Operator

Decoder = Callable[[torch.Tensor], torch.Tensor]


def standard_normal_prior(z: torch.Tensor) -> torch.Tensor:
    """-log N(z; 0, I) up to a constant, per code: ||z||^2 / 2."""
    return 0.5 * z.flatten(1).pow(2).sum(1)


def measurement_error(decode: Decoder, z: torch.Tensor, operator: Operator, y: torch.Tensor
                      ) -> torch.Tensor:
    """||A(g(z)) - y||^2 per image."""
    return (operator.forward(decode(z)) - y).flatten(1).pow(2).sum(1)


def map_latent(decode: Decoder, y: torch.Tensor, operator: Operator, z0: torch.Tensor,
               prior: Callable[[torch.Tensor], torch.Tensor] | None = standard_normal_prior,
               noise_floor: float = 0.05, steps: int = 20, iterations_per_step: int = 10,
               history: list[float] | None = None) -> torch.Tensor:
    """The MAP code z* from z0 (e.g. the encoder's code of A+(y); zeros for a GAN) by L-BFGS
    with a strong-Wolfe line search, `steps` rounds of `iterations_per_step` iterations, on the
    objective of the module docstring summed over images (they do not interact), with
    s = max(operator.sigma, noise_floor) and prior None for none. Each line search lowers the
    objective, so the objective never rises from one round to the next. An image whose objective
    is not finite at z0 starts from z = 0 instead; a round that leaves an image's objective
    non-finite (a flow's inverse overflows far from the data) is undone for
    that image and L-BFGS restarts; if it undoes every image the search stops there. `history`
    (a list) receives the mean measurement error ||A(g(z)) - y||^2 before the first round and
    after each. Gradients flow only to z, never into the decoder's parameters."""
    s2 = max(operator.sigma, noise_floor) ** 2

    def per_image(z: torch.Tensor) -> torch.Tensor:
        loss = measurement_error(decode, z, operator, y) / (2 * s2)
        return loss if prior is None else loss + prior(z)

    def lbfgs(z: torch.Tensor) -> torch.optim.LBFGS:
        return torch.optim.LBFGS([z], lr=1, max_iter=iterations_per_step,
                                 line_search_fn="strong_wolfe")

    with torch.inference_mode(False), torch.enable_grad():
        y = y.detach().clone()
        z = z0.detach().clone().requires_grad_(True)
        with torch.no_grad():  # a start where the objective is not finite: the prior's mode
            z[~torch.isfinite(per_image(z))] = 0.0
        optimizer = lbfgs(z)

        def objective() -> torch.Tensor:
            loss = per_image(z).sum()
            z.grad = torch.autograd.grad(loss, z)[0]
            return loss

        def record() -> None:
            if history is not None:
                with torch.no_grad():
                    history.append(float(measurement_error(decode, z, operator, y).mean()))

        record()
        for _ in range(steps):
            before = z.detach().clone()
            optimizer.step(objective)
            with torch.no_grad():
                diverged = ~torch.isfinite(per_image(z))
                if diverged.any():
                    z[diverged] = before[diverged]
                    optimizer = lbfgs(z)
            record()
            if diverged.all():
                break
    return z.detach()


def latent_restoration(decode: Decoder, y: torch.Tensor, operator: Operator, z0: torch.Tensor,
                       prior: Callable[[torch.Tensor], torch.Tensor] | None
                       = standard_normal_prior, **options) -> torch.Tensor:
    """x_hat = g(z*) for the MAP code z* of `map_latent` (`options` go to it), then, for
    noise-free measurements, projected onto {x : A(x) = y}: x_hat - A+(A(x_hat) - y) (the
    known pixels pasted back for a mask). With A+ the Moore-Penrose pseudo-inverse this is the
    orthogonal projection onto an affine set that holds the true image, so it never moves
    x_hat further from it, and the result agrees with y exactly."""
    z = map_latent(decode, y, operator, z0, prior, **options)
    with torch.no_grad():
        x = decode(z)
    return x if operator.sigma > 0 else operator.project(x, y)
