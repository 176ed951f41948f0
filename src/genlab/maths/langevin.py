"""Energy-based models: Langevin sampling, the contrastive-divergence objective, JEM's energy of
a classifier and the calibration error of its predictions.

An energy-based model defines p(x) = exp(-E(x)) / Z with an unnormalised energy E (Z is
intractable). Its maximum-likelihood gradient is a difference of two expectations,

    grad_theta -log p(x+) averaged over data  =  E_data[grad E(x+)] - E_p[grad E(x-)],

the second under the model, estimated with samples x- from Langevin chains.

Langevin dynamics (unadjusted Langevin algorithm; Welling & Teh 2011 for SGLD):

    x_{k+1} = clamp(x_k - s grad_x E(x_k) + sigma xi_k),      xi_k ~ N(0, I),

with step size s and noise scale sigma, clamped to the image range [-1, 1] after every step.
IGEBM's released code also clips every pixel's gradient to [-c, c] before the step (its
"proj_norm"), which bounds a step's move to s c per pixel (`grad_clip`).
With sigma = sqrt(2 s) ("exact", `exact_noise`) this is the Euler discretisation of the Langevin
diffusion dx = -grad E dt + sqrt(2) dW, whose stationary density is exp(-E); for small s and many
steps the chains sample p(x) (with an O(s) bias, no Metropolis correction).

The usual setting in IGEBM / JEM training (Du & Mordatch 2019; Grathwohl et al. 2020: s = 1,
sigma = 0.01, 20-60 steps) is NOT exact Langevin dynamics: sigma^2 / (2 s) = 5e-5, not 1. It is
exact Langevin dynamics for the tempered density exp(-E(x) / T) at temperature

    T = sigma^2 / (2 s)   (`temperature`),

i.e. almost noiseless gradient descent on E. What it implies:
- the chains do not sample exp(-E): run long, they collapse towards (and saturate at) the modes
  of E instead of spreading over p(x), so E is not the log-density that the samples come from;
- the model is trained to make *short* chains from the replay buffer or noise produce data-like
  images (a learned sampler; Nijkamp et al. 2019 "short-run MCMC"), so E is tied to the sampler
  settings it was trained with: change s, sigma or the number of steps and the samples change;
- the contrastive-divergence gradient uses non-equilibrium samples, so it is biased, and E(x)
  is useful as a relative score (out-of-distribution detection, denoising towards low energy)
  but not as a calibrated log-likelihood (Nijkamp et al. 2020, "On the anatomy of MCMC-based
  maximum likelihood learning of energy-based models").
Long-run chains (many more steps than in training) show which kind of model was learned: a
density whose chains stay on data-like images, or a short-run sampler whose long chains drift to
saturated or blank images.

The contrastive-divergence loss with the energy-magnitude regulariser (Du & Mordatch 2019, eq. 3
and sec. 3.3):

    L = mean E(x+) - mean E(x-) + alpha (mean E(x+)^2 + mean E(x-)^2),

whose gradient lowers the energy of data and raises that of samples; x- is detached (no gradient
flows through the chains).

JEM (Grathwohl et al. 2020) reads a classifier's logits f(x) as energies:

    E(x, y) = -f(x)[y],    E(x) = -logsumexp_y f(x)[y],    p(y | x) = softmax(f(x))[y],

so an unconditional IGEBM is the one-class case (E(x) = -f(x)[0]). Calibration is measured by
the expected calibration error (Guo et al. 2017, eq. 3) over equal-width confidence bins:

    ECE = sum_b |B_b| / n |acc(B_b) - conf(B_b)|.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from genlab.errors import GenlabError
from genlab.maths.degradations import GaussianNoise, Operator
from genlab.maths.random import randn_like

EnergyFn = Callable[[torch.Tensor], torch.Tensor]  # x (B, ...) -> E(x) (B,)


def uniform_noise(shape: tuple[int, ...], generator: torch.Generator | None = None,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """U(-1, 1) images: where chains start."""
    return torch.rand(shape, generator=generator, device=device) * 2 - 1


def exact_noise(step_size: float) -> float:
    """The noise scale that makes a Langevin step exact for exp(-E): sqrt(2 s)."""
    return math.sqrt(2 * step_size)


def temperature(step_size: float, noise: float) -> float:
    """T = sigma^2 / (2 s): the chains are Langevin dynamics for exp(-E / T) (1 when exact)."""
    return noise ** 2 / (2 * step_size)


def energy_and_gradient(energy_fn: EnergyFn, x: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """E(x) (B,) and grad_x sum E(x), without gradients for anything but x (parameters keep
    theirs untouched). Works inside torch.no_grad and torch.inference_mode."""
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        energy = energy_fn(x)
        (grad,) = torch.autograd.grad(energy.sum(), x)
    return energy.detach(), grad


def langevin_step(x: torch.Tensor, grad: torch.Tensor, step_size: float, noise: float,
                  generator: torch.Generator | None = None, clamp: bool = True,
                  grad_clip: float | None = None) -> torch.Tensor:
    """One step: x - s grad + sigma xi, clamped to [-1, 1] when `clamp`; with `grad_clip` c,
    each pixel's gradient is first clipped to [-c, c]."""
    if grad_clip is not None:
        grad = grad.clamp(-grad_clip, grad_clip)
    x = x - step_size * grad
    if noise:
        x = x + noise * randn_like(x, generator)
    return x.clamp(-1, 1) if clamp else x


def langevin(energy_fn: EnergyFn, x: torch.Tensor, steps: int, step_size: float, noise: float,
             generator: torch.Generator | None = None, clamp: bool = True,
             known: tuple[torch.Tensor, torch.Tensor] | None = None,
             grad_clip: float | None = None) -> torch.Tensor:
    """`steps` Langevin steps from x (B, ...); all noise from `generator`. With
    known = (values, mask), the pixels where the boolean mask is true are reset to `values`
    after every step (and at the start), so they come out bit for bit as given. Returns the
    final states, detached."""
    if steps < 0 or step_size < 0 or noise < 0:
        raise GenlabError(f"Langevin sampling needs steps >= 0, a step size >= 0 and a noise "
                          f"scale >= 0; got steps={steps}, step size {step_size}, noise {noise}.")
    with torch.inference_mode(False):
        x = x.detach().clone()
        if known is not None:
            values, mask = known[0].detach().clone(), known[1].clone()
            x = torch.where(mask, values, x)
        for _ in range(steps):
            _, grad = energy_and_gradient(energy_fn, x)
            x = langevin_step(x, grad, step_size, noise, generator, clamp, grad_clip)
            if known is not None:
                x = torch.where(mask, values, x)
    return x


def descend_posterior_energy(energy_fn: EnergyFn, y: torch.Tensor, sigma: float, steps: int,
                             step_size: float, temperature: float, clamp: bool = True,
                             operator: Operator | None = None) -> torch.Tensor:
    """Restore y = A(x) + sigma n (n ~ N(0, I); A the identity unless `operator` is given: plain
    denoising) by energy descent from x = A+(y): gradient descent on the posterior energy under
    the density the sampler targets, exp(-E / T) (`temperature`),

        E(x) + T ||A(x) - y||^2 / (2 sigma^2)      (in units of the sampler: times T),
    each step a gradient step of size s on E, then the exact proximal step of the quadratic,

        x <- x - w A+(A(x) - y),   w = c g / (1 + c g),   c = s T / sigma^2,
    with g the operator's `gram` (A A^T = g I on the measurements, A+ = A^T / g), which is
    stable at any step size. For the identity this is x <- (x + c y) / (1 + c); without noise
    (sigma = 0, w = 1) it is the projection onto {x : A(x) = y}, and the descent is projected
    gradient descent on E. With exact Langevin settings (T = 1) this converges to the MAP
    estimate under p = exp(-E); with the usual s = 1, sigma = 0.01 (T = 5e-5) the quadratic is
    negligible for noisy y and it is plain energy descent from the noisy image for `steps`
    steps."""
    operator = GaussianNoise(sigma) if operator is None else operator
    c_g = (step_size * temperature / sigma ** 2 * operator.gram) if sigma > 0 else math.inf
    w = 1.0 if math.isinf(c_g) else c_g / (1 + c_g)
    with torch.inference_mode(False):
        y = y.detach().clone()
        x = operator.pinv(y)
        x = x.clamp(-1, 1) if clamp else x
        for _ in range(steps):
            _, grad = energy_and_gradient(energy_fn, x)
            x = x - step_size * grad
            x = x - w * operator.pinv(operator.forward(x) - y)
            x = x.clamp(-1, 1) if clamp else x
    return x


def contrastive_divergence_loss(e_pos: torch.Tensor, e_neg: torch.Tensor, alpha: float = 0.0
                                ) -> torch.Tensor:
    """mean E(x+) - mean E(x-) + alpha (mean E(x+)^2 + mean E(x-)^2) (Du & Mordatch 2019)."""
    loss = e_pos.mean() - e_neg.mean()
    if alpha:
        loss = loss + alpha * (e_pos.square().mean() + e_neg.square().mean())
    return loss


def energy_from_logits(logits: torch.Tensor, labels: torch.Tensor | None = None
                       ) -> torch.Tensor:
    """JEM's energies from logits (B, K): E(x, y) = -f(x)[y] for the given labels, else the
    marginal E(x) = -logsumexp_y f(x)[y]."""
    if labels is None:
        return -torch.logsumexp(logits, dim=-1)
    return -logits.gather(-1, labels[:, None])[:, 0]


def calibration_gaps(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15
                     ) -> torch.Tensor:
    """Per confidence bin (lo, hi] of `bins` equal-width bins: the sum over the predictions
    argmax softmax(logits) that fall in it of (correct - confidence), shape (bins,). Sums over
    batches (and ranks) add up, so the ECE of a whole split is |sum of gaps|.sum() / n."""
    confidence, predicted = logits.float().softmax(-1).max(-1)
    correct = (predicted == labels).float()
    index = (torch.ceil(confidence * bins).long() - 1).clamp(0, bins - 1)
    return torch.zeros(bins, device=logits.device).index_add_(0, index, correct - confidence)


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15
                               ) -> torch.Tensor:
    """ECE of the predictions argmax softmax(logits) (B, K) against labels (B,): the
    |accuracy - mean confidence| of each bin, weighted by the share of predictions in it
    (Guo et al. 2017)."""
    return calibration_gaps(logits, labels, bins).abs().sum() / max(len(labels), 1)
