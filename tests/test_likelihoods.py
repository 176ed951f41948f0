"""Pixel likelihoods, the Gaussian KL and the bits/dim convention against closed forms."""

from __future__ import annotations

import math

import mpmath
import pytest
import torch

from genlab.errors import GenlabError
from genlab.maths.bpd import bits_per_dim, dequantized_nll
from genlab.maths.distributions import (
    PixelLikelihood,
    bernoulli_log_prob,
    diagonal_normal_log_prob,
    discretized_gaussian_log_prob,
    discretized_gaussian_log_prob_per_pixel,
    discretized_logistic_log_prob,
    discretized_logistic_log_prob_per_pixel,
    gaussian_kl_standard,
    standard_normal_log_prob,
)

ALL_PIXEL_VALUES = (torch.arange(256).float() * 2 / 255 - 1).view(256, 1, 1, 1)
mpmath.mp.dps = 60
PER_PIXEL = {"gaussian": discretized_gaussian_log_prob_per_pixel,
             "logistic": discretized_logistic_log_prob_per_pixel}


def reference_log_mass(kind: str, k: int, mean: float, scale: float) -> mpmath.mpf:
    """log P(k) with 60 significant digits, the bin's mass taken on the far side of the mode
    (1 - F(a) - (1 - F(b)) for an upper-half bin) so that nothing cancels."""
    cdf = mpmath.ncdf if kind == "gaussian" else (lambda z: 1 / (1 + mpmath.exp(-z)))
    x = mpmath.mpf(2 * k) / 255 - 1
    lo = -mpmath.inf if k == 0 else (x - mpmath.mpf(1) / 255 - mean) / scale
    hi = mpmath.inf if k == 255 else (x + mpmath.mpf(1) / 255 - mean) / scale
    if lo + hi > 0:
        return mpmath.log(cdf(-lo) - cdf(-hi))
    return mpmath.log(cdf(hi) - cdf(lo))


@pytest.mark.parametrize("kind", sorted(PER_PIXEL))
@pytest.mark.parametrize("mean", [-1.3, -1.0, -0.3, 0.0, 0.55, 1.0, 1.4])
@pytest.mark.parametrize("log_scale", [-7.0, -5.0, -3.0, -1.0, 0.0, 1.0, 3.0])
def test_discretized_densities_are_distributions_over_256_values(kind, mean, log_scale):
    lp = PER_PIXEL[kind](ALL_PIXEL_VALUES, torch.full_like(ALL_PIXEL_VALUES, mean),
                         torch.full_like(ALL_PIXEL_VALUES, log_scale))
    assert torch.isfinite(lp).all()
    assert torch.logsumexp(lp.double().flatten(), 0).item() == pytest.approx(0.0, abs=1e-6)
    if log_scale < -2:  # narrow: the most likely value is the one nearest the mean
        nearest = max(-1, min(1, mean))
        assert ALL_PIXEL_VALUES[lp.argmax()].item() == pytest.approx(nearest, abs=2 / 255)


# (pixel value, mean, scale): the centre, 6 and 40 standard deviations into either tail, the
# open edge bins seen from far away, bins much narrower than the scale, a scale of 0.001
TAIL_CASES = [(100, -0.2, 0.01), (128, 0.0, 0.01), (200, -0.5, 0.01), (20, 0.5, 0.01),
              (87, 0.3, 0.04), (0, 0.5, 0.01), (255, -0.5, 0.01), (250, 0.9, 0.01),
              (5, -0.9, 0.01), (128, 0.0, 50.0), (255, 0.0, 30.0), (3, 0.9, 0.001),
              (128, 0.03, 0.001), (77, -0.4, 0.003)]


@pytest.mark.parametrize("kind", sorted(PER_PIXEL))
@pytest.mark.parametrize("k, mean, scale", TAIL_CASES)
def test_log_probabilities_and_gradients_match_60_digits_in_the_tails(kind, k, mean, scale):
    x = torch.tensor(2 * k / 255 - 1)
    mu = torch.tensor(mean, requires_grad=True)
    log_scale = torch.tensor(math.log(scale), requires_grad=True)
    log_p = PER_PIXEL[kind](x, mu, log_scale)
    log_p.backward()
    # the reference at the float32 inputs the code sees
    mean32, log_scale32 = mpmath.mpf(mu.item()), mpmath.mpf(log_scale.item())
    expected = reference_log_mass(kind, k, mean32, mpmath.exp(log_scale32))
    d_mean = mpmath.diff(lambda m: reference_log_mass(kind, k, m, mpmath.exp(log_scale32)),
                         mean32)
    d_log_scale = mpmath.diff(lambda t: reference_log_mass(kind, k, mean32, mpmath.exp(t)),
                              log_scale32)
    # float32 rounds the bin edges (2k -+ 1)/255 - 1 by up to 6e-8, which moves log P by up to
    # 6e-8 |d log P / d mean| and its derivative by about 6e-8 / scale^2; the gradient sums
    # terms of size 1 / scale, each exact to float32's 6e-8
    edge = 6e-8
    assert log_p.item() == pytest.approx(float(expected), rel=2e-6,
                                         abs=1e-6 + edge * abs(float(d_mean)))
    assert mu.grad.item() == pytest.approx(float(d_mean), rel=1e-4,
                                           abs=edge / scale ** 2 + edge / scale)
    assert log_scale.grad.item() == pytest.approx(float(d_log_scale), rel=1e-4,
                                                  abs=edge * abs(float(d_mean)) / scale)


def test_discretized_gaussian_bin_mass_matches_the_normal_cdf():
    x, mean, scale = torch.tensor(10 * 2 / 255 - 1), -0.9, 0.05
    normal = torch.distributions.Normal(mean, scale)
    expected = math.log(normal.cdf(x + 1 / 255) - normal.cdf(x - 1 / 255))
    got = discretized_gaussian_log_prob(x.view(1, 1, 1, 1), torch.full((1, 1, 1, 1), mean),
                                        torch.full((1, 1, 1, 1), math.log(scale)))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_likelihoods_stay_float32_under_half_precision_autocast():
    x = ALL_PIXEL_VALUES[100:104]
    mean = (x + 0.013).bfloat16()  # a network's bf16 output
    log_scale = torch.full_like(x, -4.0).bfloat16()
    expected = discretized_logistic_log_prob(x, mean.float(), log_scale.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = discretized_logistic_log_prob(x, mean, log_scale)
    assert got.dtype == torch.float32
    assert torch.equal(got, expected)


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


@pytest.mark.parametrize("name", ["bernoulli", "gaussian", "logistic"])
def test_pixel_likelihood_head_reads_decoder_outputs(name):
    """The decoder head shared by the VAE and the autoencoders: its log-probability is the
    likelihood's, and its draws have the likelihood's mean and spread."""
    head = PixelLikelihood(name)
    n = 200_000
    x = torch.rand(2, 1, 4, 4) * 2 - 1
    if name == "bernoulli":
        logits = torch.full((n, 1, 1, 1), 0.8)
        assert head.channels(3) == 3
        assert torch.equal(head.log_prob(x.sign(), logits[:2].expand(2, 1, 4, 4)),
                           bernoulli_log_prob(x.sign(), logits[:2].expand(2, 1, 4, 4)))
        draws = head.sample(logits, torch.Generator().manual_seed(0))
        p = torch.sigmoid(torch.tensor(0.8)).item()
        assert set(draws.unique().tolist()) == {-1.0, 1.0}
        assert abs((draws == 1).float().mean().item() - p) < 4 * math.sqrt(p * (1 - p) / n)
        assert head.mean(logits[:1]).item() == pytest.approx(2 * p - 1)
        with pytest.raises(GenlabError, match="data.binarize"):
            head.check_input(x)
        return
    assert head.channels(3) == 6
    params = torch.cat([torch.full((n, 1, 1, 1), 0.2), torch.full((n, 1, 1, 1), math.log(0.1))],
                       dim=1)
    exact = (discretized_gaussian_log_prob if name == "gaussian" else
             discretized_logistic_log_prob)(x, params[:2, :1].expand(2, 1, 4, 4),
                                            params[:2, 1:].expand(2, 1, 4, 4))
    assert torch.equal(head.log_prob(x, params[:2].expand(2, 2, 4, 4)), exact)
    draws = head.sample(params, torch.Generator().manual_seed(0))
    std = 0.1 * (1 if name == "gaussian" else math.pi / math.sqrt(3))
    assert abs(draws.mean().item() - 0.2) < 4 * std / math.sqrt(n)
    assert draws.std().item() == pytest.approx(std, rel=0.01)
    assert head.mean(params[:1]).item() == pytest.approx(0.2)
    head.check_input(x)  # 8-bit images are fine


def test_unknown_pixel_likelihood_is_explained():
    with pytest.raises(GenlabError, match="bernoulli, gaussian, logistic"):
        PixelLikelihood("poisson")
