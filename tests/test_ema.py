"""The weight EMA: the update rule, warm-up and its place in the state dict."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genlab.nets.ema import EMA


def test_update_follows_the_formula_with_warmup():
    net = nn.Linear(3, 2)
    ema = EMA(net, decay=0.9, warmup=True)
    start = [p.clone() for p in ema.averaged.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    ema.update(net)
    decay = min(0.9, 1 / 10)  # first update: (1 + 0) / (10 + 0)
    for avg, old, new in zip(ema.averaged.parameters(), start, net.parameters()):
        assert torch.allclose(avg, decay * old + (1 - decay) * new)
    assert ema.current_decay() == pytest.approx(min(0.9, 2 / 11))


def test_copies_before_start_step_and_is_saved_in_the_state_dict():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = EMA(net, decay=0.99, warmup=False, start_step=5)
    with torch.no_grad():
        net[0].weight.fill_(3.0)
        net[1].running_mean.fill_(2.0)
    ema.update(net, step=1)
    assert torch.equal(ema.averaged[0].weight, net[0].weight)
    assert torch.equal(ema.averaged[1].running_mean, net[1].running_mean)
    assert int(ema.updates) == 0
    ema.update(net, step=5)
    assert int(ema.updates) == 1
    state = ema.state_dict()
    assert "averaged.0.weight" in state and "updates" in state
    assert not any(p.requires_grad for p in ema.parameters())
    assert not ema.train().averaged.training
