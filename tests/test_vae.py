"""The VAE: its bounds against an exact likelihood, and its capabilities."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.models import small_vae

from genlab.errors import GenlabError
from genlab.maths.distributions import gaussian_kl_standard
from genlab.maths.vae import elbo, importance_weighted_bound
from genlab.tasks import offered


def linear_gaussian(d_z: int = 2, d_x: int = 3, noise: float = 0.5, seed: int = 0):
    """z ~ N(0, I), x | z ~ N(W z + b, noise^2 I): log p(x) = log N(x; b, W W^T + noise^2 I)."""
    g = torch.Generator().manual_seed(seed)
    w, b = torch.randn(d_x, d_z, generator=g), torch.randn(d_x, generator=g)
    x = torch.randn(4, d_x, generator=g) * 2
    exact = torch.distributions.MultivariateNormal(
        b, w @ w.T + noise**2 * torch.eye(d_x)).log_prob(x)

    def log_likelihood(z: torch.Tensor) -> torch.Tensor:  # z (..., B, d_z) -> (..., B)
        return torch.distributions.Normal(z @ w.T + b, noise).log_prob(x).sum(-1)

    # an imperfect posterior: the exact one's mean, shifted, with a wrong variance
    precision = torch.eye(d_z) + w.T @ w / noise**2
    mu = torch.linalg.solve(precision, (w.T @ (x - b).T) / noise**2).T + 0.3
    logvar = torch.full_like(mu, -1.0)
    return mu, logvar, log_likelihood, exact


def test_elbo_below_iwae_below_exact_log_likelihood_and_iwae_converges():
    torch.manual_seed(0)
    mu, logvar, log_likelihood, exact = linear_gaussian()
    n = 200_000  # Monte Carlo draws per estimate; a log-weight has std ~10 here

    def repeated(r: int):
        return mu.expand(r, *mu.shape), logvar.expand(r, *logvar.shape)

    rec, kl = elbo(*repeated(n), log_likelihood)
    elbo_value = (rec - kl).mean(0)
    bounds = {k: importance_weighted_bound(*repeated(n // k), log_likelihood, k, chunk=k).mean(0)
              for k in (1, 10, 100, 2000)}
    assert torch.allclose(bounds[1], elbo_value, atol=0.15)  # L_1 is the ELBO (3 sigma)
    gaps = [(exact - bounds[k]) for k in (1, 10, 100, 2000)]
    assert all((gap > -0.01).all() for gap in gaps)  # every bound is below log p(x)
    assert all((a >= b - 0.01).all() for a, b in zip(gaps, gaps[1:]))  # tighter with K
    assert (gaps[0] > 0.2).all() and (gaps[-1] < 0.05).all()  # and approaches log p(x)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "logistic"])
def test_capabilities_have_the_contract_shapes(likelihood):
    torch.manual_seed(0)
    model = small_vae(likelihood=likelihood).eval()
    x = torch.rand(5, 1, 32, 32) * 2 - 1
    assert model.sample(6).shape == (6, 1, 32, 32)
    for images in (model.sample(6), model.reconstruct(x), model.interpolate(x[:2], x[2:4], 7),
                   model.latent_traversal(x[0], dims=3, steps=5)):
        assert images.min() >= -1 and images.max() <= 1
    assert model.interpolate(x[:2], x[2:4], 7).shape == (14, 1, 32, 32)
    assert model.latent_traversal(x[0], dims=3, steps=5).shape == (15, 1, 32, 32)
    mu, logvar = model.posterior_params(x)
    assert mu.shape == logvar.shape == (5, 4) and torch.equal(model.encode(x), mu)
    assert offered(model) == ["denoise", "edit", "inpaint", "inpaint_half", "inpaint_pixels",
                              "interpolate", "outpaint", "reconstruct", "superres_x2",
                              "superres_x4", "traversal"]


def test_fixed_generator_gives_fixed_samples():
    model = small_vae().eval()
    a = model.sample(4, generator=torch.Generator().manual_seed(1))
    b = model.sample(4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_interpolation_ends_at_the_reconstructions():
    torch.manual_seed(0)
    model = small_vae().eval()
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    rows = model.interpolate(x[:2], x[2:], 5).view(2, 5, 1, 32, 32)
    assert torch.allclose(rows[:, 0], model.reconstruct(x[:2]), atol=1e-5)
    assert torch.allclose(rows[:, -1], model.reconstruct(x[2:]), atol=1e-5)


def test_latent_traversal_varies_one_dimension_per_row(monkeypatch):
    model = small_vae().eval()
    decoded = []
    monkeypatch.setattr(model, "decode", lambda z, labels=None: decoded.append(z) or
                        torch.zeros(len(z), 2, 32, 32))
    model.latent_traversal(None, dims=3, steps=4, span=2.0)
    z = decoded[0].view(3, 4, 4)
    for d in range(3):
        assert torch.allclose(z[d, :, d], torch.linspace(-2, 2, 4))
        assert (z[d][:, [i for i in range(4) if i != d]] == 0).all()


def test_conditional_vae_uses_the_labels():
    torch.manual_seed(0)
    model = small_vae(num_classes=10, conditional=True).eval()
    z = torch.randn(2, 4)
    with torch.no_grad():
        a = model.decoder_params(z, torch.tensor([0, 0]))
        b = model.decoder_params(z, torch.tensor([3, 3]))
    assert not torch.allclose(a, b)
    with pytest.raises(GenlabError, match="pass labels"):
        model.sample(2)
    assert model.grid_labels(12).tolist() == list(range(10)) + [0, 1]


def test_training_step_loss_is_the_beta_weighted_negative_elbo():
    torch.manual_seed(0)
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    model = small_vae(beta=4.0)
    torch.manual_seed(1)
    rec, kl = model.negative_elbo(x, None)
    torch.manual_seed(1)
    model.log = model.log_dict = lambda *a, **k: None
    loss = model.training_step((x, torch.full((3,), -1)), 0)
    assert loss.item() == pytest.approx((rec + 4.0 * kl).mean().item(), rel=1e-5)


def run_test_epoch(model, batches) -> dict[str, float]:
    logged = {}
    model.log = lambda name, value, **k: logged.__setitem__(name, float(value))
    model.log_dict = lambda values, **k: logged.update({n: float(v) for n, v in values.items()})
    with torch.no_grad():
        model.on_test_epoch_start()
        for i, x in enumerate(batches):
            model.test_step((x, torch.full((len(x),), -1)), i)
        model.on_test_epoch_end()
    return logged


def test_test_step_logs_the_importance_weighted_bound_of_its_posterior_named_by_its_k():
    """test/nll_nats_k64 is exactly -L_K of the model's own encoder and decoder (two-sided: the
    maths of L_K is checked against log p(x) above), and it is below -ELBO."""
    torch.manual_seed(0)
    model = small_vae(test_importance_samples=64, bound_images=None).eval()
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    torch.manual_seed(1)
    logged = run_test_epoch(model, [x])
    with torch.no_grad():
        torch.manual_seed(1)
        mu, logvar = model.posterior_params(x)
        elbo(mu, logvar, model._log_likelihood_fn(x, None))  # the same draws as test_step
        bound = importance_weighted_bound(mu, logvar, model._log_likelihood_fn(x, None), 64,
                                          chunk=max(1, model.importance_batch // 4))
    assert logged["test/nll_nats_k64"] == pytest.approx(-bound.mean().item(), rel=1e-6)
    assert logged["test/nll_nats_k64"] <= -logged["test/elbo"]
    assert logged["test/bpd"] == pytest.approx(logged["test/nll_nats_k64"] / (1024 * math.log(2)))
    assert "test/nll_nats" not in logged


def test_the_test_bound_covers_the_first_bound_images_only(monkeypatch):
    """bound_images=3 over batches of 2: the bound of images 0, 1 and 2, whatever follows."""
    import genlab.models.vae as vae_module

    model = small_vae(test_importance_samples=4, bound_images=3).eval()
    seen = []
    real = vae_module.importance_weighted_bound

    def counting(mu, *args, **kwargs):
        seen.append(len(mu))
        return real(mu, *args, **kwargs)

    monkeypatch.setattr(vae_module, "importance_weighted_bound", counting)
    logged = run_test_epoch(model, [torch.rand(2, 1, 32, 32) * 2 - 1 for _ in range(3)])
    assert seen == [2, 1] and "test/nll_nats_k4" in logged


def test_posterior_kl_and_bounds_stay_float32_under_bf16_autocast():
    torch.manual_seed(0)
    model = small_vae(likelihood="logistic").eval()
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        mu, logvar = model.posterior_params(x)
        _, kl = model.negative_elbo(x, None)
        bound = importance_weighted_bound(mu, logvar, model._log_likelihood_fn(x, None), 8, 8)
    assert mu.dtype == logvar.dtype == kl.dtype == bound.dtype == torch.float32
    exact_kl = gaussian_kl_standard(mu.double(), logvar.double())
    assert torch.allclose(kl.double(), exact_kl, rtol=1e-6)


def test_bad_configuration_is_explained():
    with pytest.raises(GenlabError, match="bernoulli, gaussian, logistic"):
        small_vae(likelihood="poisson")
    with pytest.raises(GenlabError, match="labelled dataset"):
        small_vae(conditional=True, num_classes=0)
    model = small_vae(likelihood="bernoulli")
    model.log = model.log_dict = lambda *a, **k: None
    with pytest.raises(GenlabError, match="data.binarize"):
        model.training_step((torch.zeros(2, 1, 32, 32), torch.zeros(2, dtype=torch.long)), 0)
