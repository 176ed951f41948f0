"""Improved precision and recall (Kynkäänniemi et al. 2019) on Inception features.

Each set's manifold is the union of balls around its features, each ball's radius being the
distance to that feature's k-th nearest neighbour within its own set (k = 3). Precision is the
fraction of *generated* features inside the reference manifold; recall is the fraction of
*reference* features inside the generated manifold.

Distances are computed block by block (``block`` x ``block`` at a time), so two sets of 50k
features never need a 50k x 50k matrix; only the k + 1 smallest distances per row are kept.
Squared distances come from ``|a|^2 + |b|^2 - 2 a.b`` in float32 after centring both sets on
the reference mean (which keeps the cancellation small).
"""

from __future__ import annotations

import numpy as np
import torch

from genlab.errors import GenlabError


def _as_tensor(x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        x = torch.from_numpy(np.asarray(x))
    return x.detach().cpu().float()


def _sq_dists(a: torch.Tensor, a_sq: torch.Tensor, b: torch.Tensor,
              b_sq: torch.Tensor) -> torch.Tensor:
    return (a_sq[:, None] + b_sq[None, :] - 2 * (a @ b.T)).clamp_min_(0)


def knn_radii(x: torch.Tensor, k: int = 3, block: int = 5000) -> torch.Tensor:
    """Squared distance from each row of x to its k-th nearest other row (blockwise)."""
    n = len(x)
    if n <= k:
        raise GenlabError(f"Precision/recall with k={k} needs more than {k} images per set; "
                          f"got {n}.")
    sq = (x * x).sum(1)
    radii = torch.empty(n)
    for i in range(0, n, block):
        rows = x[i:i + block]
        best = None
        for j in range(0, n, block):
            d = _sq_dists(rows, sq[i:i + block], x[j:j + block], sq[j:j + block])
            if i == j:  # a point's distance to itself is exactly 0
                d.fill_diagonal_(0)
            d = d.topk(min(k + 1, d.shape[1]), dim=1, largest=False).values
            best = d if best is None else torch.cat([best, d], 1).topk(
                k + 1, dim=1, largest=False).values
        radii[i:i + block] = best[:, k]  # index 0 is the point itself
    return radii


def precision_recall(reference, generated, k: int = 3, block: int = 5000) -> tuple[float, float]:
    """(precision, recall) of ``generated`` features against ``reference`` features."""
    real, fake = _as_tensor(reference), _as_tensor(generated)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"features must be (N, D) with equal D; got {tuple(real.shape)} and "
                         f"{tuple(fake.shape)}")
    centre = real.mean(0, keepdim=True)
    real, fake = real - centre, fake - centre
    with torch.inference_mode():
        r_real, r_fake = knn_radii(real, k, block), knn_radii(fake, k, block)
        sq_real, sq_fake = (real * real).sum(1), (fake * fake).sum(1)
        in_real = torch.zeros(len(fake), dtype=torch.bool)   # generated inside reference
        in_fake = torch.zeros(len(real), dtype=torch.bool)   # reference inside generated
        for i in range(0, len(fake), block):
            for j in range(0, len(real), block):
                d = _sq_dists(fake[i:i + block], sq_fake[i:i + block],
                              real[j:j + block], sq_real[j:j + block])
                in_real[i:i + block] |= (d <= r_real[None, j:j + block]).any(1)
                in_fake[j:j + block] |= (d <= r_fake[i:i + block, None]).any(0)
    return in_real.float().mean().item(), in_fake.float().mean().item()
