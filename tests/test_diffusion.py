"""Diffusion maths against closed forms, and the DDPM model's samplers, tasks and errors.

Most tests use an analytic model: for data x_0 ~ N(MU, STD^2) per pixel, the optimal denoiser is
E[x_0 | x_t] = MU + sqrt(a) STD^2 / (a STD^2 + 1 - a) (x_t - sqrt(a) MU), a = alpha_bar_t,
so the sampler, inversion and bound can be checked without training a network.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers.models import tiny_ddpm
from helpers.runs import SMALL_RUN, fake_data_overrides

from genlab.errors import GenlabError
from genlab.maths.diffusion import GaussianDiffusion, beta_schedule
from genlab.maths.distributions import discretized_gaussian_log_prob
from genlab.models.ddpm import DDPM
from genlab.nets.unet import UNet

MU, STD = 0.1, 0.4


def gaussian_denoiser(diffusion: GaussianDiffusion, mu: float = MU, std: float = STD):
    """The exact eps-predictor for data N(mu, std^2) per pixel."""
    def model_fn(x, t, labels=None):
        alpha_bar = diffusion.at("alpha_bar", t, x)
        a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        x0 = mu + a * std**2 / (alpha_bar * std**2 + 1 - alpha_bar) * (x - a * mu)
        return (x - a * x0) / s
    return model_fn


def randomize(net: torch.nn.Module, seed: int = 0) -> None:
    """PyTorch's default random initialisation everywhere (the UNet zero-initialises its output
    layers, which would make every prediction zero)."""
    torch.manual_seed(seed)
    for module in net.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()


# -- schedules and the forward process -----------------------------------------------------------
def test_schedules_alphas_match_hand_computed_values():
    linear = torch.cumprod(1 - beta_schedule("linear", 1000), 0)
    beta_2 = 1e-4 + (0.02 - 1e-4) / 999  # the second of 1000 evenly spaced betas
    assert linear[0].item() == pytest.approx(1 - 1e-4)
    assert linear[1].item() == pytest.approx((1 - 1e-4) * (1 - beta_2))
    assert linear[-1].item() == pytest.approx(4.0358e-5, rel=1e-3)  # Ho et al.'s alpha_bar_T

    cosine = torch.cumprod(1 - beta_schedule("cosine", 1000), 0)
    def f(t: float) -> float:
        return math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
    for t in (1, 250, 500, 900):  # alpha_bar(t) = f(t) / f(0), index t - 1
        assert cosine[t - 1].item() == pytest.approx(f(t) / f(0), rel=1e-9)
    assert cosine[499].item() == pytest.approx(0.49384, abs=1e-5)  # by hand
    assert beta_schedule("cosine", 1000).max().item() == pytest.approx(0.999)  # clipped at T


def test_q_sample_moments_match_the_closed_form():
    diffusion = GaussianDiffusion(1000)
    alpha_bar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    x0 = torch.tensor([-0.8, 0.0, 0.5, 1.0]).view(4, 1).expand(4, 100_000)
    g = torch.Generator().manual_seed(0)
    for t in (0, 100, 500, 999):
        xt = diffusion.q_sample(x0, t, torch.randn(x0.shape, generator=g))
        a = alpha_bar[t].item()
        assert torch.allclose(xt.mean(1), math.sqrt(a) * x0[:, 0], atol=4 * math.sqrt(
            (1 - a) / 1e5) + 1e-6)
        assert torch.allclose(xt.var(1), torch.full((4,), 1 - a), rtol=0.02)


def test_posterior_matches_bayes_rule_for_gaussians():
    diffusion = GaussianDiffusion(1000, "cosine")
    betas = beta_schedule("cosine", 1000)
    alpha_bar = torch.cumprod(1 - betas, 0)
    x0, xt = torch.tensor([[0.3], [-0.7]]), torch.tensor([[1.2], [0.1]])
    for t in (1, 10, 500, 999):
        # prior q(x_{t-1} | x_0) = N(sqrt(ab) x0, 1 - ab), likelihood N(x_t; sqrt(1 - b) x_{t-1}, b)
        prior_mean, prior_var = alpha_bar[t - 1].sqrt() * x0, 1 - alpha_bar[t - 1]
        scale, noise_var = (1 - betas[t]).sqrt(), betas[t]
        var = 1 / (1 / prior_var + scale**2 / noise_var)
        mean = var * (prior_mean / prior_var + scale * xt / noise_var)
        got_mean, got_log_var = diffusion.q_posterior(x0, xt, t)
        assert torch.allclose(got_mean, mean.float(), atol=1e-5)
        assert torch.allclose(got_log_var.exp(), var.float().expand(2, 1), rtol=1e-4)
    assert torch.allclose(diffusion.q_posterior(x0, xt, 0)[0], x0)  # t = 0: the data itself


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_prediction_targets_convert_back_to_x0_and_eps(prediction):
    diffusion = GaussianDiffusion(1000, prediction=prediction)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(5, 3, generator=g) * 2 - 1, torch.randn(5, 3, generator=g)
    t = torch.tensor([0, 10, 300, 700, 999])
    xt = diffusion.q_sample(x0, t, eps)
    got_x0, got_eps = diffusion.to_x0_eps(diffusion.target(x0, eps, t), xt, t)
    assert torch.allclose(got_x0, x0, atol=1e-4) and torch.allclose(got_eps, eps, atol=1e-4)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_min_snr_weighting_is_min_snr_gamma_times_the_x0_error(prediction):
    diffusion = GaussianDiffusion(1000, prediction=prediction)
    g = torch.Generator().manual_seed(0)
    x0, eps, guess = (torch.randn(6, 4, generator=g) for _ in range(3))
    t = torch.tensor([0, 50, 200, 400, 700, 999])
    xt = diffusion.q_sample(x0, t, eps)
    loss = diffusion.training_loss(lambda *_: guess, x0, None, t, eps, "min_snr", gamma=5.0)
    x0_error = (diffusion.to_x0_eps(guess, xt, t)[0] - x0).pow(2).mean(1)
    assert torch.allclose(loss, diffusion.snr(t).clamp(max=5.0) * x0_error, rtol=1e-3)


# -- samplers ------------------------------------------------------------------------------------
def test_ddim_with_eta_zero_is_deterministic_and_inversion_round_trips():
    diffusion = GaussianDiffusion(1000)
    model_fn = gaussian_denoiser(diffusion)
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(8, 1, 4, 4, generator=g)
    steps = diffusion.sampling_timesteps("ddim", 20)
    runs = [diffusion.reverse(model_fn, x_T, steps, None, "ddim", eta, clip=False,
                              generator=torch.Generator().manual_seed(seed))
            for eta in (0.0, 1.0) for seed in (1, 2)]
    assert torch.equal(runs[0], runs[1]) and not torch.allclose(runs[2], runs[3])

    x0 = MU + STD * torch.randn(64, 1, 4, 4, generator=g)
    errors = {}
    for n in (100, 1000):  # a first-order ODE solver: the error shrinks with the step size
        latent = diffusion.ddim_invert(model_fn, x0, None, n)
        back = diffusion.reverse(model_fn, latent, diffusion.sampling_timesteps("ddim", n),
                                 None, "ddim", 0.0, clip=False)
        errors[n] = (back - x0).abs().max().item()
    assert errors[100] < 0.15 and errors[1000] < 0.02, errors


def test_ancestral_sampler_reaches_the_data_distribution():
    diffusion = GaussianDiffusion(1000)
    x = diffusion.reverse(gaussian_denoiser(diffusion), torch.randn(4000, 1, 1, 1),
                          diffusion.sampling_timesteps("ddpm"), None, "ddpm", clip=False,
                          generator=torch.Generator().manual_seed(0))
    assert x.mean().item() == pytest.approx(MU, abs=0.03)
    assert x.std().item() == pytest.approx(STD, rel=0.05)


def test_guidance_scale_one_is_plain_conditional_sampling():
    model = tiny_ddpm(num_classes=3, conditional=True, clip_denoised=False)
    randomize(model.ema.averaged)
    labels = torch.tensor([0, 1, 2, 1])

    def draw(**options):
        return model.sample(4, labels, torch.Generator().manual_seed(0), **options)

    plain = draw()
    assert torch.allclose(draw(guidance_scale=1.0), plain, atol=1e-5)
    assert not torch.allclose(draw(guidance_scale=3.0), plain, atol=1e-3)
    assert not torch.allclose(draw(guidance_scale=0.0), plain, atol=1e-3)  # unconditional


def test_label_dropout_trains_the_null_class_for_guidance():
    labels = torch.arange(1000) % 3
    kept = tiny_ddpm(num_classes=3, conditional=True, label_dropout=0.2)._train_labels(labels)
    dropped = kept != labels
    assert (kept[dropped] == 3).all() and 0.15 < dropped.float().mean() < 0.25
    with pytest.raises(GenlabError, match="pass labels"):  # conditional training needs labels
        tiny_ddpm(num_classes=3, conditional=True)._train_labels(torch.full((4,), -1))


def test_samples_come_from_the_ema_weights_in_chunks():
    model = tiny_ddpm(sample_batch_size=3)
    randomize(model.ema.averaged)
    before = model.sample(7, generator=torch.Generator().manual_seed(0))
    randomize(model.net, seed=1)  # the trained network itself does not make samples
    assert torch.equal(model.sample(7, generator=torch.Generator().manual_seed(0)), before)
    chunks = list(model.sample_batches(7, generator=torch.Generator().manual_seed(0)))
    assert [len(c) for c in chunks] == [3, 3, 1]
    assert torch.equal(torch.cat(chunks), before)


# -- the variational bound -----------------------------------------------------------------------
def test_bound_is_above_the_exact_nll_and_close_with_the_optimal_denoiser():
    """8-bit data from a discretized N(MU, STD^2): its exact NLL is known in closed form. Any
    model's bound is >= the entropy on average; the optimal continuous denoiser gets close."""
    diffusion = GaussianDiffusion(1000)
    g = torch.Generator().manual_seed(0)
    pixels = ((MU + STD * torch.randn(2000, 1, 1, 1, generator=g) + 1) * 127.5).round()
    x0 = pixels.clamp(0, 255) / 127.5 - 1
    exact = -discretized_gaussian_log_prob(x0, torch.full_like(x0, MU),
                                           torch.full_like(x0, math.log(STD)))

    def gap(model_fn, terms=None):
        bound = diffusion.variational_bound(model_fn, x0, variance="beta", clip=False,
                                            terms=terms, batch_size=1 << 20, generator=g)
        return (bound - exact).mean().item()

    optimal = gap(gaussian_denoiser(diffusion))
    assert 0 < optimal < 0.2  # nats per pixel; measured 0.10 (+- 0.02)
    assert gap(gaussian_denoiser(diffusion, mu=MU + 0.2)) > optimal + 0.1


@pytest.mark.parametrize("terms", [2, 20, 50, 999])
def test_stratified_timesteps_estimate_the_sum_over_all_timesteps_without_bias(terms):
    """sum_k w_k f(t_k) over the drawn timesteps is unbiased for sum_t f(t), t = 0..T-1: exact
    for constant and linear f in every draw's expectation; checked on f = 1/(t+1) and t^2 with
    200k draws (a biased weighting, e.g. a stratum shifted by one, misses by many sigma)."""
    diffusion = GaussianDiffusion(1000)
    t, weights = diffusion.bound_timesteps(terms, 200_000, torch.device("cpu"),
                                           torch.Generator().manual_seed(0))
    assert weights.sum().item() == 1000  # a constant is estimated exactly
    assert t[0].eq(0).all() and t.max() <= 999
    for f in (lambda t: 1 / (t + 1), lambda t: t.square() / 1e6):
        exact = f(torch.arange(1000, dtype=torch.float64)).sum().item()
        estimates = (weights[:, None].double() * f(t.double())).sum(0)
        sigma = estimates.std().item() / math.sqrt(estimates.numel())
        assert estimates.mean().item() == pytest.approx(exact, abs=4 * sigma + 1e-9)


def test_ddim_with_eta_one_and_consecutive_steps_is_the_ancestral_step():
    """Song et al.: eta = 1 from t to t - 1 has the ancestral step's mean and variance
    beta~_t, so with the same noise both give the same x_{t-1}."""
    diffusion = GaussianDiffusion(1000)
    model_fn = gaussian_denoiser(diffusion)
    xt = torch.randn(16, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    for t in (1, 2, 10, 500, 999):
        ddim = diffusion.ddim_step(model_fn, xt, t, t - 1, None, eta=1.0, clip=False,
                                   generator=torch.Generator().manual_seed(t))
        ddpm = diffusion.ddpm_step(model_fn, xt, t, None, variance="posterior", clip=False,
                                   generator=torch.Generator().manual_seed(t))
        assert torch.allclose(ddim, ddpm, atol=1e-5), t


def test_the_bound_stays_float32_under_bf16_autocast():
    """A network under autocast predicts in bf16; everything after the prediction (posterior
    means, KLs, the discretized decoder) must run in float32 on those values."""
    diffusion = GaussianDiffusion(100)
    denoiser = gaussian_denoiser(diffusion)
    x0 = torch.linspace(-1, 1, 256).view(4, 1, 8, 8)

    def network(x, t, labels):  # bf16 output, as under autocast
        return denoiser(x, t, labels).bfloat16()

    def bound(model_fn):
        return diffusion.variational_bound(model_fn, x0, clip=False,
                                           generator=torch.Generator().manual_seed(0))

    float32_maths = bound(lambda x, t, labels: network(x, t, labels).float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = bound(network)
    assert under_autocast.dtype == torch.float32
    assert torch.equal(under_autocast, float32_maths)


# -- the network ---------------------------------------------------------------------------------
def test_the_paper_unet_has_35_7m_parameters():
    with torch.device("meta"):
        net = UNet(3, 32, channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2,
                   attention_resolutions=(16,), dropout=0.1)
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 1) == 35.7


def test_narrow_unet_output_depends_on_timestep_and_label():
    net = UNet(1, 16, channels=8, channel_mults=(1, 2), num_res_blocks=1, num_classes=3)
    randomize(net)
    x = torch.randn(1, 1, 16, 16).expand(3, -1, -1, -1)
    by_t = net(x, torch.tensor([0, 500, 999]), torch.tensor([0, 0, 0]))
    by_label = net(x, torch.tensor([500, 500, 500]), torch.tensor([0, 1, 3]))
    for out in (by_t, by_label):
        assert (out[0] - out[1]).abs().mean() > 1e-3 and (out[1] - out[2]).abs().mean() > 1e-3


def test_unet_forward_compiles_without_graph_breaks():
    net = UNet(3, 16, channels=8, channel_mults=(1, 2), num_res_blocks=1,
               attention_resolutions=(8,), num_classes=4)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 900])
    for labels in (None, torch.tensor([0, 4])):
        explanation = torch._dynamo.explain(net)(x, t, labels)
        assert explanation.graph_break_count == 0, explanation.break_reasons


# -- tasks ---------------------------------------------------------------------------------------
def analytic_ddpm(**options) -> DDPM:
    """A DDPM whose denoiser is the exact one for N(MU, STD^2) pixels."""
    model = tiny_ddpm(**options)
    model.denoiser = lambda guidance_scale=None: gaussian_denoiser(model.diffusion)
    return model


def test_interpolation_inverts_and_decodes_with_the_same_guidance():
    model = tiny_ddpm(num_classes=3, conditional=True, guidance_scale=3.0)
    scales = []
    denoiser = model.denoiser
    model.denoiser = lambda guidance_scale=None: scales.append(guidance_scale) or denoiser(
        guidance_scale)
    model.interpolate(torch.zeros(2, 1, 16, 16), torch.ones(2, 1, 16, 16), 3,
                      torch.tensor([0, 2]))
    assert set(scales) == {3.0}


def test_inpaint_keeps_known_pixels_and_interpolation_ends_at_the_images():
    model = analytic_ddpm(sampling_steps=200, clip_denoised=False)
    g = torch.Generator().manual_seed(0)
    x = (MU + STD * torch.randn(4, 1, 16, 16, generator=g)).clamp(-1, 1)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :8] = 1
    filled = model.inpaint(x, mask, generator=g, resample=2)
    assert torch.equal(filled[..., :8], x[..., :8]) and not torch.equal(filled, x)
    path = model.interpolate(x[:2], x[2:], steps=5).view(2, 5, 1, 16, 16)
    assert (path[:, 0] - x[:2]).abs().max() < 0.1 and (path[:, -1] - x[2:]).abs().max() < 0.1
    assert model.denoise(x + 0.3 * torch.randn(x.shape, generator=g), 0.3).shape == x.shape


# -- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("options, message", [
    ({"schedule": "quadratic"}, "choose one of linear, cosine"),
    ({"sampler": "euler"}, "choose one of ddpm, ddim"),
    ({"prediction": "score"}, "choose one of eps, x0, v"),
    ({"weighting": "snr"}, "choose one of simple, min_snr"),
    ({"guidance_scale": 2.0}, "needs a class-conditional model"),
    ({"sampling_steps": 0}, "between 1 and T=1000"),
    ({"sampling_steps": 1001}, "between 1 and T=1000"),
])
def test_bad_options_are_explained(options, message):
    with pytest.raises(GenlabError, match=message):
        tiny_ddpm(**options)


def test_bad_sampling_arguments_are_explained():
    model = tiny_ddpm()
    with pytest.raises(GenlabError, match="choose one of ddpm, ddim"):
        model.sample(1, sampler="euler")
    with pytest.raises(GenlabError, match="between 1 and T=1000"):
        model.sample(1, steps=2000)
    with pytest.raises(GenlabError, match="needs a class-conditional model"):
        model.sample(1, guidance_scale=3.0)
    x = torch.zeros(2, 1, 16, 16)
    with pytest.raises(GenlabError, match=r"mask has shape \(2, 1, 8, 8\)"):
        model.inpaint(x, torch.ones(2, 1, 8, 8))


# -- through train() and evaluate() --------------------------------------------------------------
def test_bf16_training_testing_and_evaluation_with_tasks(compose, fake_root, tmp_path):
    from genlab.run import evaluate, train

    small = ["model=ddpm", "data=mnist", "precision=bf16", *SMALL_RUN, "test=true",
             "+trainer.limit_test_batches=1", "model.timesteps=50", "model.bound_images=2",
             "model.sampling_steps=3", *fake_data_overrides("mnist", fake_root)]
    assert math.isfinite(train(compose(small)))
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    assert any(k.startswith("ema.averaged.") for k in torch.load(ckpt)["state_dict"])
    out = tmp_path / "evaluate"
    metrics = evaluate(compose(
        [f"ckpt_path={ckpt}", f"paths.output_dir={out}", f"paths.data_dir={fake_root}",
         f"paths.cache_dir={fake_root / 'cache'}", "trainer=cpu", "logger=none",
         "precision=bf16", "fid.enabled=false", "sample_grid=4",
         "tasks=[inpaint,outpaint,denoise,interpolate]", "task_options.inpaint.images=4",
         "task_options.outpaint.images=4", "task_options.denoise.images=4",
         "+model.sampler=ddpm", "+model.inpaint_resample=1", "+trainer.limit_test_batches=1",
         "+trainer.enable_progress_bar=false"], config_name="evaluate"))
    assert math.isfinite(metrics["test/bpd"]) and metrics["test/bpd"] > 0
    for name in ("samples", "inpaint", "outpaint", "denoise", "interpolate"):
        assert (out / f"{name}.png").is_file()


def test_the_test_bound_is_named_by_its_terms_and_reports_progress(caplog):
    """The end-of-training test estimates the bound from test_bound_terms terms
    (test/nll_nats_terms<N>); all T terms (evaluate.py) give test/nll_nats. Long loops log their
    progress with the time left."""
    import logging

    def test_epoch(model) -> dict[str, float]:
        logged = {}
        model.log = lambda name, value, **k: logged.__setitem__(name, float(value))
        with torch.no_grad():
            model.on_test_epoch_start()
            model._bound_progress.interval = 0.0
            model.test_step((torch.rand(3, 1, 16, 16) * 2 - 1, torch.full((3,), -1)), 0)
            model.on_test_epoch_end()
        return logged

    model = tiny_ddpm(timesteps=20, test_bound_terms=5, bound_images=2, bound_batch_size=4)
    with caplog.at_level(logging.INFO, logger="genlab"):
        logged = test_epoch(model)
    assert {"test/loss", "test/nll_nats_terms5", "test/bpd"} <= set(logged)
    assert "unbiased estimate from 5 of the T=20 terms" in caplog.text
    assert "test/nll_nats_terms5: 4 of 10 terms (40%)" in caplog.text and "left" in caplog.text
    model.test_bound_terms = None
    assert "test/nll_nats" in test_epoch(model)


def test_nan_loss_stops_training(compose, fake_root, monkeypatch):
    from genlab.run import train

    real_step = DDPM.training_step
    monkeypatch.setattr(DDPM, "training_step",
                        lambda self, batch, i: real_step(self, batch, i) * float("nan"))
    cfg = compose(["model=ddpm", "data=mnist", *SMALL_RUN, *fake_data_overrides("mnist",
                                                                                 fake_root)])
    with pytest.raises(GenlabError, match="became nan in batch 0"):
        train(cfg)
