"""Kernel Inception Distance (Bińkowski et al. 2018), as torch-fidelity computes it.

KID is the unbiased estimate of the squared MMD with the cubic polynomial kernel
``k(x, y) = (x.y / d + 1)^3``, averaged over ``subsets`` random subsets of ``subset_size``
features drawn without replacement from each set (defaults 100 x 1000, seed 2020, the same
draws as torch-fidelity's defaults). Computed in float64. Reported as mean and (population)
standard deviation over the subsets.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from genlab.errors import GenlabError

log = logging.getLogger(__name__)


def _as_array(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None,
                      coef0: float = 1.0) -> np.ndarray:
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (x @ y.T * gamma + coef0) ** degree


def mmd2_unbiased(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
    """Unbiased MMD^2 from kernel matrices of two equal-size samples: the within-sample
    means exclude the diagonal, the cross term includes it."""
    m = k_xx.shape[0]
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.sum() / (m * m))


def kid_subset_size_for(n1: int, n2: int, subset_size: int) -> int:
    """The subset size actually used: ``subset_size``, shrunk (with a warning) to the smaller
    set's size when a set has fewer features."""
    smallest = min(n1, n2)
    if smallest < 2:
        raise GenlabError(f"KID needs at least 2 images in each set; got {n1} and {n2}.")
    if subset_size > smallest:
        log.warning("KID subset size %d is larger than the smaller image set (%d images); using "
                    "subsets of %d instead. KID with small subsets is noisier and not comparable "
                    "to KID computed with %d.", subset_size, smallest, smallest, subset_size)
        return smallest
    return subset_size


def kid(features1, features2, subsets: int = 100, subset_size: int = 1000, degree: int = 3,
        gamma: float | None = None, coef0: float = 1.0, seed: int = 2020) -> tuple[float, float]:
    """(mean, std) of the unbiased polynomial-kernel MMD^2 over random subsets."""
    f1, f2 = _as_array(features1), _as_array(features2)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"features must be (N, D) with equal D; got {f1.shape} and {f2.shape}")
    if subsets < 1:
        raise GenlabError(f"KID needs at least one subset; got subsets={subsets}.")
    size = kid_subset_size_for(len(f1), len(f2), subset_size)
    rng = np.random.RandomState(seed)
    values = np.empty(subsets)
    for i in range(subsets):
        x = f1[rng.choice(len(f1), size, replace=False)].astype(np.float64)
        y = f2[rng.choice(len(f2), size, replace=False)].astype(np.float64)
        values[i] = mmd2_unbiased(polynomial_kernel(x, x, degree, gamma, coef0),
                                  polynomial_kernel(x, y, degree, gamma, coef0),
                                  polynomial_kernel(y, y, degree, gamma, coef0))
    return float(values.mean()), float(values.std())
