"""Seeded randomness: noise from an optional generator, and one way to derive a seed from a run
seed and a counter (an epoch, a generator step) so that neighbouring counters give unrelated
streams and a resumed run draws exactly what the uninterrupted run would have drawn."""

from __future__ import annotations

import torch

_MASK = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """One step of SplitMix64 (Steele et al. 2014), a bijective 64-bit mixer."""
    z = (x + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def mix_seed(*keys: int) -> int:
    """A 63-bit seed that depends on every key (e.g. the run seed and the epoch)."""
    state = 0
    for key in keys:
        state = _splitmix64(state ^ (key & _MASK))
    return state >> 1


def seeded_generator(*keys: int, device: torch.device | str | None = None) -> torch.Generator:
    """A torch.Generator seeded with mix_seed(*keys)."""
    return torch.Generator(device=device or "cpu").manual_seed(mix_seed(*keys))


def randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like x, drawn from `generator` when given."""
    return torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
