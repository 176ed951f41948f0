"""Fréchet Inception Distance (Heusel et al. 2017) on features, in float64.

    FID = ||mu_1 - mu_2||^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2))

:class:`FeatureStats` accumulates the mean and covariance of a stream of feature batches (sum
and sum of outer products in float64, about a fixed shift for accuracy), so FID of any number
of samples needs neither the images nor the features in memory at once.
"""

from __future__ import annotations

import numpy as np
import torch

from genlab.errors import GenlabError


def _as_float64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


class FeatureStats:
    """Running mean and covariance of feature vectors (float64).

    The sums are taken about a shift (the mean of the first batch), so that the covariance
    ``(sum (x-s)(x-s)^T - n (m-s)(m-s)^T) / (n-1)`` loses no precision to large means."""

    def __init__(self, dim: int | None = None):
        self.dim = dim
        self.n = 0
        self._shift: np.ndarray | None = None
        self._sum: np.ndarray | None = None
        self._outer: np.ndarray | None = None

    def update(self, features) -> FeatureStats:
        """Add a batch of features (B, D) (tensor or array)."""
        x = _as_float64(features)
        if x.ndim != 2:
            raise ValueError(f"features must be (B, D); got shape {x.shape}")
        if len(x) == 0:
            return self
        if self._shift is None:
            if self.dim is not None and x.shape[1] != self.dim:
                raise ValueError(f"expected {self.dim}-d features, got {x.shape[1]}-d")
            self.dim = x.shape[1]
            self._shift = x.mean(axis=0)
            self._sum = np.zeros(self.dim)
            self._outer = np.zeros((self.dim, self.dim))
        elif x.shape[1] != self.dim:
            raise ValueError(f"expected {self.dim}-d features, got {x.shape[1]}-d")
        x = x - self._shift
        self._sum += x.sum(axis=0)
        self._outer += x.T @ x
        self.n += len(x)
        return self

    @property
    def mean(self) -> np.ndarray:
        if self.n == 0:
            raise GenlabError("No features were accumulated: the image set is empty.")
        return self._shift + self._sum / self.n

    @property
    def cov(self) -> np.ndarray:
        """The unbiased sample covariance (divides by n - 1, like ``np.cov``)."""
        if self.n < 2:
            raise GenlabError(f"A covariance needs at least 2 images; got {self.n}.")
        centred = self._sum / self.n
        cov = (self._outer - self.n * np.outer(centred, centred)) / (self.n - 1)
        return (cov + cov.T) / 2


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative
    eigenvalues from rounding are clipped to 0)."""
    w, v = np.linalg.eigh(matrix)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((S1 S2)^(1/2)) for covariance matrices.

    S1 S2 is similar to the symmetric PSD matrix S1^(1/2) S2 S1^(1/2), so the trace is the sum
    of the square roots of that matrix's eigenvalues: real by construction, no complex
    ``sqrtm`` and no imaginary parts to discard, and stable for singular covariances
    (fewer samples than dimensions)."""
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sqrt(np.clip(eig, 0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """The Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64."""
    mu1, mu2 = _as_float64(mu1), _as_float64(mu2)
    sigma1, sigma2 = _as_float64(sigma1), _as_float64(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma "
                         f"{sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) \
        - 2 * trace_sqrt_product(sigma1, sigma2)
    return float(max(value, 0.0))


def fid_from_features(features1, features2) -> float:
    """FID between two feature sets (N, D), e.g. Inception pool features."""
    s1, s2 = FeatureStats().update(features1), FeatureStats().update(features2)
    return frechet_distance(s1.mean, s1.cov, s2.mean, s2.cov)
