"""The corruptions of denoising autoencoders and the walk-back chain, on images in [-1, 1].

Corruptions C(x~ | x) (Vincent et al. 2008, 2010), each drawn independently per pixel:

    gaussian          x~ = x + sigma * eps,  eps ~ N(0, 1)          (every pixel, unclipped)
    masking           x~ = -1 (black) with probability p, else x    (Vincent's "set to 0" on
                                                                      [0, 1] pixels)
    salt_and_pepper   x~ = -1 or +1 (each with probability 1/2) with probability p, else x

The walk-back chain (Bengio et al. 2013, "Generalized denoising auto-encoders as generative
models", sec. 3.4 and Algorithm 1): with P(X | x~) the autoencoder's reconstruction
distribution, alternate corruption and reconstruction,

    x~_1 = C(x_0),  x_k ~ P(X | x~_k),  x~_(k+1) = C(x_k).

Started at a training image x_0, its corrupted states x~_1 .. x~_K are the walk-back training
inputs (each trained to reconstruct x_0: it removes the spurious modes a plain DAE leaves far
from the data). Run long, it is a Markov chain whose stationary distribution estimates the data
distribution when P(X | x~) is a consistent estimator of the true conditional (their Theorem 1):
the DAE's sampler.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from genlab.errors import GenlabError, check_choice

CORRUPTIONS = ("gaussian", "masking", "salt_and_pepper")


def check_corruption(kind: str, level: float) -> None:
    """A GenlabError unless `kind` is a corruption and `level` a valid sigma (> 0) or
    probability (in (0, 1])."""
    check_choice("model.corruption", kind, CORRUPTIONS)
    if kind == "gaussian" and not level > 0:
        raise GenlabError(f"model.corruption_level={level}: the gaussian corruption's standard "
                          "deviation (in [-1, 1] pixel units) must be positive, e.g. 0.5.")
    if kind != "gaussian" and not 0 < level <= 1:
        raise GenlabError(f"model.corruption_level={level}: the {kind} corruption's level is "
                          "the probability that a pixel is corrupted, in (0, 1], e.g. 0.25.")


def corrupt(x: torch.Tensor, kind: str, level: float,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """x~ ~ C(x~ | x) for corruption `kind` at `level` (sigma or p; see the module docstring)."""
    check_choice("model.corruption", kind, CORRUPTIONS)
    if kind == "gaussian":
        return x + level * torch.randn(x.shape, device=x.device, dtype=x.dtype,
                                       generator=generator)
    hit = torch.rand(x.shape, device=x.device, generator=generator) < level
    if kind == "masking":
        return torch.where(hit, torch.full_like(x, -1.0), x)
    salt = torch.rand(x.shape, device=x.device, generator=generator) < 0.5  # salt_and_pepper
    return torch.where(hit, torch.where(salt, 1.0, -1.0).to(x.dtype), x)


def walkback_chain(x: torch.Tensor, corruption: Callable[[torch.Tensor], torch.Tensor],
                   resample: Callable[[torch.Tensor], torch.Tensor], steps: int
                   ) -> Iterator[torch.Tensor]:
    """The corrupted states x~_1, ..., x~_steps of the chain started at x: x~_1 = corruption(x),
    x~_(k+1) = corruption(resample(x~_k)), `resample` drawing from P(X | x~)."""
    state = corruption(x)
    yield state
    for _ in range(steps - 1):
        state = corruption(resample(state))
        yield state
