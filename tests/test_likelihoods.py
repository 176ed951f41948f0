"""Pixel likelihoods, the Gaussian KL and the bits/dim convention against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from genlab.maths.bpd import bits_per_dim, dequantized_nll
from genlab.maths.distributions import (
    bernoulli_log_prob,
    diagonal_normal_log_prob,
    discretized_gaussian_log_prob,
    discretized_logistic_log_prob,
    gaussian_kl_standard,
    standard_normal_log_prob,
)

ALL_PIXEL_VALUES = (torch.arange(256).float() * 2 / 255 - 1).view(256, 1, 1, 1)


@pytest.mark.parametrize("log_prob", [discretized_logistic_log_prob, discretized_gaussian_log_prob])
@pytest.mark.parametrize("mean, log_scale", [(0.0, -3.0), (0.9, -1.0), (-1.2, -5.0), (0.3, 1.0)])
def test_discretized_densities_are_distributions_over_256_values(log_prob, mean, log_scale):
    lp = log_prob(ALL_PIXEL_VALUES, torch.full_like(ALL_PIXEL_VALUES, mean),
                  torch.full_like(ALL_PIXEL_VALUES, log_scale))
    assert torch.logsumexp(lp, 0).item() == pytest.approx(0.0, abs=1e-4)
    if log_scale < -2:  # narrow: the most likely value is the one nearest the mean
        nearest = max(-1, min(1, mean))
        assert ALL_PIXEL_VALUES[lp.argmax()].item() == pytest.approx(nearest, abs=2 / 255)


def test_discretized_gaussian_bin_mass_matches_the_normal_cdf():
    x, mean, scale = torch.tensor(10 * 2 / 255 - 1), -0.9, 0.05
    normal = torch.distributions.Normal(mean, scale)
    expected = math.log(normal.cdf(x + 1 / 255) - normal.cdf(x - 1 / 255))
    got = discretized_gaussian_log_prob(x.view(1, 1, 1, 1), torch.full((1, 1, 1, 1), mean),
                                        torch.full((1, 1, 1, 1), math.log(scale)))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_bernoulli_log_prob_by_hand():
    x = torch.tensor([1.0, -1.0, 1.0]).view(1, 3, 1, 1)
    logits = torch.tensor([0.0, 2.0, -1.0]).view(1, 3, 1, 1)
    expected = math.log(0.5) + math.log(1 - 1 / (1 + math.exp(-2))) + math.log(1 / (1 + math.e))
    assert bernoulli_log_prob(x, logits).item() == pytest.approx(expected, rel=1e-6)


def test_analytic_kl_equals_monte_carlo():
    torch.manual_seed(0)
    mu, logvar = torch.tensor([[0.5, -1.0, 2.0]]), torch.tensor([[-1.0, 0.3, 0.0]])
    z = mu + (0.5 * logvar).exp() * torch.randn(400_000, 3)
    monte_carlo = (diagonal_normal_log_prob(z, mu, logvar) - standard_normal_log_prob(z)).mean()
    assert gaussian_kl_standard(mu, logvar).item() == pytest.approx(monte_carlo.item(), abs=0.01)
    assert gaussian_kl_standard(torch.zeros(1, 4), torch.zeros(1, 4)).item() == 0.0


def test_bits_per_dim_by_hand():
    d = 3 * 32 * 32
    assert bits_per_dim(d * math.log(256), d) == pytest.approx(8.0)  # uniform over 256 values
    # uniform density 1/2 per dim on [-1, 1] with dequantization is also 8 bits per dim
    assert bits_per_dim(dequantized_nll(d * math.log(2), d), d) == pytest.approx(8.0)
    assert bits_per_dim(torch.tensor(2 * math.log(2)), 1).item() == pytest.approx(2.0)


def test_slerp_keeps_the_ends_and_the_norm_and_handles_parallel_rows():
    from genlab.maths.distributions import slerp

    z0, z1 = torch.tensor([[3.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 3.0], [2.0, 2.0]])
    path = slerp(z0, z1, torch.linspace(0, 1, 5))
    assert torch.allclose(path[:, 0], z0) and torch.allclose(path[:, -1], z1)
    assert torch.allclose(path[0].norm(dim=1), torch.full((5,), 3.0))  # on the circle
    assert torch.allclose(path[1, 2], torch.tensor([1.5, 1.5]))  # parallel rows: the line
