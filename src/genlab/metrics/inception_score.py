"""Inception Score (Salimans et al. 2016) from Inception logits, as torch-fidelity computes it:
shuffle (seed 2020), 10 splits, exp(E_x KL(p(y|x) || p(y))) per split, mean and (population)
std over the splits, in float64.

With the shared weight file whose classifier is zeroed, every logit is 0 and IS is exactly 1.
"""

from __future__ import annotations

import numpy as np
import torch

from genlab.errors import GenlabError


def inception_score(logits, splits: int = 10, shuffle: bool = True,
                    seed: int = 2020) -> tuple[float, float]:
    """(mean, std) of the Inception Score of logits (N, classes)."""
    if not isinstance(logits, torch.Tensor):
        logits = torch.as_tensor(np.asarray(logits))
    logits = logits.detach().cpu().double()
    n = len(logits)
    if n < splits:
        raise GenlabError(f"The Inception Score uses {splits} splits and so needs at least "
                          f"{splits} images; got {n}.")
    if shuffle:
        logits = logits[torch.from_numpy(np.random.RandomState(seed).permutation(n))]
    p = logits.softmax(dim=1)
    log_p = logits.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        lo, hi = i * n // splits, (i + 1) * n // splits
        p_split, log_p_split = p[lo:hi], log_p[lo:hi]
        log_marginal = p_split.mean(dim=0, keepdim=True).log()
        kl = (p_split * (log_p_split - log_marginal)).sum(dim=1).mean()
        scores.append(kl.exp().item())
    return float(np.mean(scores)), float(np.std(scores))
