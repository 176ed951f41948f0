"""Exponential moving average of a network's weights (Polyak averaging), as in DDPM and GANs.

    theta_ema <- decay_t * theta_ema + (1 - decay_t) * theta,
    decay_t = min(decay, (1 + t) / (10 + t))       (warm-up, when `warmup` is set)
where t counts updates. The average lives in `EMA.averaged`, a copy of the network that is part
of the model's state dict, so checkpoints keep it and resumed runs continue it exactly.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    def __init__(self, net: nn.Module, decay: float = 0.9999, warmup: bool = True,
                 start_step: int = 0):
        super().__init__()
        self.decay, self.warmup, self.start_step = decay, warmup, start_step
        self.averaged = copy.deepcopy(net).requires_grad_(False).eval()
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def current_decay(self) -> float:
        t = int(self.updates)
        return min(self.decay, (1 + t) / (10 + t)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, net: nn.Module, step: int | None = None) -> None:
        """Move the average towards `net`; before `start_step` it copies `net` instead."""
        params = [p.detach() for p in net.parameters()]
        averaged = list(self.averaged.parameters())
        if step is not None and step < self.start_step:
            torch._foreach_copy_(averaged, params)
        else:
            torch._foreach_lerp_(averaged, params, 1.0 - self.current_decay())
            self.updates += 1
        for mine, theirs in zip(self.averaged.buffers(), net.buffers()):
            mine.copy_(theirs)

    def train(self, mode: bool = True) -> EMA:
        super().train(mode)
        self.averaged.eval()  # the average is only ever evaluated
        return self

    def forward(self, *args, **kwargs):
        return self.averaged(*args, **kwargs)
