"""Energy-based models: Langevin sampling against a Gaussian's closed forms, the replay buffer,
the contrastive-divergence and JEM objectives, the training loop (exact resumes, divergence),
the capabilities and the errors a user can meet."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import real_data_dir
from helpers.models import tiny_ebm, tiny_jem
from helpers.runs import SMALL_RUN, cpu_trainer, random_images
from torch.utils.data import DataLoader, TensorDataset

from genlab.errors import GenlabError
from genlab.maths.langevin import (
    calibration_gaps,
    contrastive_divergence_loss,
    descend_posterior_energy,
    energy_from_logits,
    exact_noise,
    expected_calibration_error,
    langevin,
    temperature,
)
from genlab.nets.energy import EnergyResNet, ReplayBuffer
from genlab.run import train
from genlab.tasks import TaskInputs, offered, run_task

MU, SIGMA = 0.3, 0.5


def gaussian_energy(x: torch.Tensor) -> torch.Tensor:
    """E(x) = |x - mu|^2 / (2 sigma^2) per image: p = exp(-E) is N(mu, sigma^2) per pixel."""
    return (x - MU).square().flatten(1).sum(1) / (2 * SIGMA ** 2)




# -- Langevin dynamics on a Gaussian -------------------------------------------------------------
def test_exact_langevin_reproduces_the_gaussian_mean_and_variance():
    """With noise = sqrt(2 s) the chains sample exp(-E) = N(mu, sigma^2). The unadjusted
    discretisation has the stationary variance sigma^2 / (1 - s / (2 sigma^2)), 0.4% above
    sigma^2 at s = 0.002; 32,000 values after 1,500 steps (the chains relax at s / sigma^2 =
    0.8% per step, e^-12 of the start is left) give the mean to +-0.01 (5 standard errors) and
    the variance to 2% (the bias plus 5 standard errors of 0.8%)."""
    s = 0.002
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2000, 1, 4, 4, generator=g) * 2 - 1
    x = langevin(gaussian_energy, x0, 1500, s, exact_noise(s), g, clamp=False)
    assert x.mean().item() == pytest.approx(MU, abs=0.01)
    assert x.var().item() == pytest.approx(SIGMA ** 2, rel=0.02)


def test_the_usual_setting_samples_a_tempered_density():
    """Noise 0.01 with a step far above noise^2 / 2 is Langevin dynamics at temperature
    T = noise^2 / (2 s): the chains have the variance T sigma^2 (here 0.0025x), not sigma^2."""
    s, noise = 0.02, 0.01
    g = torch.Generator().manual_seed(1)
    x = langevin(gaussian_energy, torch.zeros(2000, 1, 4, 4), 800, s, noise, g, clamp=False)
    t = temperature(s, noise)
    assert t == pytest.approx(0.0025)
    expected = t * SIGMA ** 2 / (1 - s / (2 * SIGMA ** 2))  # the discretisation's stationary var
    assert x.var().item() == pytest.approx(expected, rel=0.05)
    assert x.mean().item() == pytest.approx(MU, abs=0.002)


def test_one_langevin_step_lowers_the_energy_in_expectation():
    """From x far above the typical set (3 sigma off in every pixel), one exact step has
    E[E(x')] = ((1 - s/sigma^2)^2 |x - mu|^2 + 2 s D) / (2 sigma^2) < E(x)."""
    s, d = 0.01, 16
    x = torch.full((4000, 1, 4, 4), MU + 3 * SIGMA)
    g = torch.Generator().manual_seed(2)
    after = gaussian_energy(langevin(gaussian_energy, x, 1, s, exact_noise(s), g, clamp=False))
    before = gaussian_energy(x)[0].item()
    expected = ((1 - s / SIGMA ** 2) ** 2 * d * (3 * SIGMA) ** 2 + 2 * s * d) / (2 * SIGMA ** 2)
    assert after.mean().item() < before
    assert after.mean().item() == pytest.approx(expected, abs=5 * after.std().item() / 63)


def test_chains_are_clamped_and_reproducible_and_known_pixels_stay_exact():
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    far = lambda x: (x - 5).square().flatten(1).sum(1)  # noqa: E731 - pulls towards 5
    x = langevin(far, x0, 5, 0.5, 0.1, g())
    assert x.max() == 1 and x.min() >= -1
    assert torch.equal(x, langevin(far, x0, 5, 0.5, 0.1, g()))
    mask = torch.zeros_like(x0, dtype=torch.bool)
    mask[..., :4] = True
    known = torch.linspace(-1, 1, 256).view(4, 1, 8, 8) / 3
    x = langevin(far, x0, 5, 0.5, 0.1, g(), known=(known, mask))
    assert torch.equal(x[mask], known[mask]) and (x[~mask] == 1).any()


def test_gradient_clipping_bounds_each_step():
    """With grad_clip c and no noise, no pixel moves more than s c per step."""
    steep = lambda x: 100 * x.flatten(1).sum(1)  # noqa: E731 - gradient 100 everywhere
    x0 = torch.zeros(2, 1, 4, 4)
    x = langevin(steep, x0, 3, 0.5, 0.0, clamp=False, grad_clip=0.01)
    assert torch.allclose(x, torch.full_like(x0, -3 * 0.5 * 0.01))


def test_chains_run_inside_inference_mode():
    """Validation and the sample-grid callbacks run under torch.inference_mode."""
    with torch.inference_mode():
        x = langevin(gaussian_energy, torch.zeros(2, 1, 4, 4), 3, 0.01, 0.1)
    assert torch.isfinite(x).all()


def test_energy_descent_denoising_finds_the_gaussian_posterior_mode():
    """With exact settings (T = 1) the descent minimises E(x) + |x - y|^2 / (2 sigma_n^2),
    whose minimiser for the Gaussian prior is (y sigma^2 + mu sigma_n^2) / (sigma^2 +
    sigma_n^2); the proximal step keeps a large step size stable."""
    y = torch.linspace(-0.9, 0.9, 32).view(2, 1, 4, 4)
    sigma_n = 0.3
    map_estimate = (y * SIGMA ** 2 + MU * sigma_n ** 2) / (SIGMA ** 2 + sigma_n ** 2)
    x = descend_posterior_energy(gaussian_energy, y, sigma_n, 400, 0.05, 1.0, clamp=False)
    assert torch.allclose(x, map_estimate, atol=1e-5)
    # T -> 0 (noise-free sampler): plain energy descent towards the prior's mode
    x = descend_posterior_energy(gaussian_energy, y, sigma_n, 400, 0.05, 0.0, clamp=False)
    assert torch.allclose(x, torch.full_like(y, MU), atol=1e-5)


# -- the objectives --------------------------------------------------------------------------------
def test_contrastive_loss_value_and_gradient_sign_on_a_toy_energy():
    """E_theta(x) = |x - theta|^2 / 2 with theta between the data (at +1) and the samples (at
    -1): one gradient step on the loss moves theta to the data, which lowers the data's energy
    and raises the samples'."""
    theta = torch.zeros(3, requires_grad=True)
    data, samples = torch.ones(5, 3), -torch.ones(5, 3)
    energy = lambda x: 0.5 * (x - theta).square().sum(1)  # noqa: E731
    e_pos, e_neg = energy(data), energy(samples.detach())
    loss = contrastive_divergence_loss(e_pos, e_neg, alpha=0.0)
    assert loss.item() == pytest.approx(1.5 - 1.5)
    loss.backward()
    with torch.no_grad():
        moved = theta - 0.1 * theta.grad
        new_energy = lambda x: 0.5 * (x - moved).square().sum(1)  # noqa: E731
    assert new_energy(data).mean() < e_pos.mean() and new_energy(samples).mean() > e_neg.mean()
    # the regulariser alpha (E+^2 + E-^2) by hand
    e_pos, e_neg = torch.tensor([1.0, 3.0]), torch.tensor([-2.0, 0.0])
    assert contrastive_divergence_loss(e_pos, e_neg, 0.5).item() == pytest.approx(
        2.0 - (-1.0) + 0.5 * (5.0 + 2.0))


def test_jem_energies_and_classification_term_are_those_of_a_plain_classifier():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(6, 5, generator=g) * 3
    labels = torch.randint(0, 5, (6,), generator=g)
    e_x, e_xy = energy_from_logits(logits), energy_from_logits(logits, labels)
    assert torch.allclose(e_x, -torch.log(logits.exp().sum(1)))
    assert torch.allclose(e_xy, -logits[torch.arange(6), labels])
    # p(y | x) = exp(-E(x, y)) / exp(-E(x)) is the softmax
    assert torch.allclose((e_x - e_xy).exp(), logits.softmax(1)[torch.arange(6), labels])
    stats = {}
    model = tiny_jem(num_classes=5)
    assert torch.equal(model.classification_loss(logits, labels, stats),
                       F.cross_entropy(logits, labels))
    assert stats["train/acc"] == (logits.argmax(1) == labels).float().mean()


def test_expected_calibration_error_against_a_direct_computation():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(500, 4, generator=g) * 2
    probs = logits.softmax(1)
    conf, pred = probs.max(1)
    # right 70% of the time: under-confident in some bins, over-confident in others
    labels = torch.where(torch.rand(500, generator=g) < 0.7, pred,
                         torch.randint(0, 4, (500,), generator=g))
    gaps = calibration_gaps(logits, labels, 10)
    assert (gaps > 0).any() and (gaps < 0).any()
    ece = 0.0
    for b in range(10):  # bins (b/10, (b+1)/10]
        inside = (conf > b / 10) & (conf <= (b + 1) / 10)
        if inside.any():
            acc = (pred[inside] == labels[inside]).float().mean()
            ece += inside.float().mean() * (acc - conf[inside].mean()).abs()
    assert expected_calibration_error(logits, labels, bins=10).item() == pytest.approx(
        float(ece), abs=1e-6)
    halves = calibration_gaps(logits[:200], labels[:200], 10) + calibration_gaps(
        logits[200:], labels[200:], 10)
    assert (halves.abs().sum() / 500).item() == pytest.approx(float(ece), abs=1e-6)


# -- the replay buffer -----------------------------------------------------------------------------
def test_buffer_restarts_about_five_percent_of_chains():
    """20,000 draws of Binomial(n, 0.05): within 4 standard deviations (30.8) of 1,000. The
    stored states are 2.0 (outside the noise's range), so restarts are counted from what was
    returned."""
    buffer = ReplayBuffer(100, (1, 2, 2), restart_prob=0.05)
    buffer.images.fill_(2.0)
    g = torch.Generator().manual_seed(6)
    restarted = 0
    for _ in range(200):
        states, _, _, flagged = buffer.draw(100, g)
        noise = (states != 2.0).flatten(1).all(1)
        assert torch.equal(noise, flagged) and (states[noise].abs() <= 1).all()
        restarted += int(noise.sum())
    assert abs(restarted - 1000) < 4 * math.sqrt(20000 * 0.05 * 0.95)


def test_buffer_restarts_take_the_given_labels_and_writes_land_in_place():
    buffer = ReplayBuffer(10, (1, 2, 2), restart_prob=0.5)
    buffer.labels.fill_(7)
    g = torch.Generator().manual_seed(7)
    _, labels, _, restart = buffer.draw(50, g, labels=torch.full((50,), 3))
    assert torch.equal(labels, torch.where(restart, 3, 7)) and 0 < restart.sum() < 50
    index = torch.tensor([1, 4, 6])
    buffer.write(index, torch.full((3, 1, 2, 2), 0.25), torch.tensor([0, 1, 2]))
    assert (buffer.images[index] == 0.25).all() and (buffer.images[[0, 2, 9]] != 0.25).all()
    assert torch.equal(buffer.labels, torch.tensor([7, 0, 7, 7, 1, 7, 2, 7, 7, 7]))


def test_a_training_step_writes_its_final_chain_states_back(monkeypatch):
    model = tiny_ebm(restart_prob=0.0).train()
    before = model.buffer.images.clone()
    written = {}
    real_write = ReplayBuffer.write

    def spy(self, index, states, labels=None):
        written.update(index=index.clone(), states=states.clone())
        real_write(self, index, states, labels)

    monkeypatch.setattr(ReplayBuffer, "write", spy)
    cpu_trainer(max_steps=1).fit(model, random_images(8))
    index, states = written["index"], written["states"]
    changed = (model.buffer.images != before).flatten(1).any(1)
    assert set(changed.nonzero().flatten().tolist()) == set(index.tolist())
    once = [i for i, k in enumerate(index.tolist()) if index.tolist().count(k) == 1]
    assert once and torch.equal(model.buffer.images[index[once]], states[once])


def test_a_resumed_run_continues_exactly_with_its_buffer(tmp_path):
    """The buffer is in the checkpoint and every step's noise comes from (seed, rank, step):
    stopping after one epoch and resuming gives bit for bit the uninterrupted run."""
    def fresh():
        torch.manual_seed(0)
        return tiny_jem(conditional=True, data_noise=0.03).train()

    first = cpu_trainer(max_epochs=1)
    first.fit(fresh(), random_images())
    first.save_checkpoint(tmp_path / "k.ckpt")
    stored = torch.load(tmp_path / "k.ckpt", weights_only=False)["state_dict"]
    assert stored["buffer.images"].shape == (64, 1, 16, 16)
    resumed, uninterrupted = fresh(), fresh()
    cpu_trainer(max_epochs=2).fit(resumed, random_images(), ckpt_path=tmp_path / "k.ckpt")
    cpu_trainer(max_epochs=2).fit(uninterrupted, random_images())
    after, expected = resumed.state_dict(), uninterrupted.state_dict()
    for key in expected:
        assert torch.equal(after[key], expected[key]), key
    assert not torch.equal(stored["buffer.images"], after["buffer.images"])
    loaded = tiny_jem(conditional=True)
    loaded.load_state_dict(after)
    assert torch.equal(loaded.buffer.images, after["buffer.images"])


def test_a_checkpoint_with_another_buffer_size_is_explained(tmp_path):
    fit = cpu_trainer(max_steps=1)
    fit.fit(tiny_ebm().train(), random_images(8))
    fit.save_checkpoint(tmp_path / "k.ckpt")
    with pytest.raises(GenlabError, match="holds 64 states, but model.buffer_size=32"):
        cpu_trainer(max_steps=2).fit(tiny_ebm(buffer_size=32).train(), random_images(8),
                                 ckpt_path=tmp_path / "k.ckpt")


def test_the_buffer_is_kept_out_of_ddp_broadcasts():
    model = tiny_ebm()
    assert set(model._ddp_params_and_buffers_to_ignore) == {
        name for name in model.state_dict() if name.startswith("buffer.")}


# -- the model -----------------------------------------------------------------------------------
def test_training_logs_energies_and_jem_logs_accuracy_and_calibration():
    model = tiny_jem().train()
    fit = cpu_trainer(max_steps=2, limit_val_batches=1)
    fit.fit(model, random_images(), random_images(8, seed=1))
    metrics = fit.callback_metrics
    assert {"train/loss", "train/e_pos", "train/e_neg", "train/e_gap", "train/ce", "train/acc",
            "val/e_pos", "val/e_noise", "val/acc", "val/ce", "val/ece"} <= set(metrics)
    assert metrics["train/e_gap"] == pytest.approx(float(metrics["train/e_neg"]
                                                         - metrics["train/e_pos"]))
    logits = model.classify(random_images(8, seed=1).dataset.tensors[0])
    labels = random_images(8, seed=1).dataset.tensors[1]
    assert metrics["val/ece"] == pytest.approx(
        float(expected_calibration_error(logits, labels)), abs=1e-6)


def test_a_diverging_run_stops_naming_the_step_and_the_remedies():
    x = torch.zeros(8, 1, 16, 16)
    x[3] = float("nan")
    data = DataLoader(TensorDataset(x, torch.zeros(8, dtype=torch.long)), batch_size=8)
    with pytest.raises(GenlabError, match=r"diverged at training step 0 .*non-finite.*"
                                          r"model.train_steps.*model.alpha"):
        cpu_trainer(max_steps=2).fit(tiny_ebm().train(), data)
    with pytest.raises(GenlabError, match=r"step 0 .*ran beyond model.energy_limit=1e-09"):
        cpu_trainer(max_steps=2).fit(tiny_ebm(energy_limit=1e-9).train(), random_images(8))


def test_samples_are_reproducible_and_start_from_noise_or_the_buffer():
    model = tiny_ebm()
    g = lambda: torch.Generator().manual_seed(8)  # noqa: E731
    a, b = model.sample(4, generator=g()), model.sample(4, generator=g())
    assert torch.equal(a, b) and a.shape == (4, 1, 16, 16) and a.abs().max() <= 1
    assert torch.equal(model.sample(4, generator=g(), steps=0),
                       torch.rand(4, 1, 16, 16, generator=g()) * 2 - 1)
    model.buffer.images.fill_(0.5)
    assert torch.equal(model.sample(4, generator=g(), steps=0, init="buffer"),
                       torch.full((4, 1, 16, 16), 0.5))
    with torch.inference_mode():  # as in the validation loop's sample grids
        assert torch.isfinite(model.sample(2, generator=g())).all()


def test_the_long_run_grid_continues_the_sample_grids_chains(tmp_path):
    from PIL import Image

    from genlab.callbacks import LongRunGrid, SampleGrid
    from genlab.files.grid import make_grid

    model = tiny_ebm(long_run_steps=7).train()
    callbacks = [SampleGrid(str(tmp_path), n=4), LongRunGrid(str(tmp_path), n=4),
                 LongRunGrid(str(tmp_path / "short"), n=4, steps=2)]
    cpu_trainer(max_steps=1, limit_val_batches=1, callbacks=callbacks).fit(
        model, random_images(8), random_images(8))
    model.eval()
    for folder, steps in ((tmp_path, 7), (tmp_path / "short", 2)):
        saved = np.asarray(Image.open(folder / "long_run.png"))
        expected = model.sample(4, generator=torch.Generator().manual_seed(0), steps=steps)
        assert np.array_equal(saved, make_grid(expected))
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "samples.png")), saved)


def test_conditional_energy_uses_the_label_and_its_marginal_is_a_logsumexp():
    model = tiny_ebm(num_classes=3, conditional=True)
    x = torch.rand(5, 1, 16, 16) * 2 - 1
    per_class = torch.stack([model.energy(x, torch.full((5,), k)) for k in range(3)], 1)
    assert not torch.allclose(per_class[:, 0], per_class[:, 1])
    assert torch.allclose(model.energy(x), -torch.logsumexp(-per_class, 1), atol=1e-6)
    with pytest.raises(GenlabError, match="class-conditional"):
        model.sample(2)


def test_ebm_tasks_keep_known_pixels_and_denoise_deterministically():
    model = tiny_ebm()
    assert offered(model) == ["denoise", "inpaint", "inpaint_half", "inpaint_pixels",
                              "outpaint", "superres_x2", "superres_x4"]
    assert "classify" not in dir(model) and callable(tiny_jem().classify)
    x = torch.rand(8, 1, 16, 16) * 2 - 1
    for name in ("inpaint", "outpaint"):
        result = run_task(name, model, TaskInputs(x, None, torch.Generator().manual_seed(0)))
        assert result.metrics["known_error"] == 0
    first = run_task("denoise", model, TaskInputs(x, None, torch.Generator().manual_seed(0)))
    again = run_task("denoise", model, TaskInputs(x, None, torch.Generator().manual_seed(0)))
    assert torch.equal(first.images, again.images)


@pytest.mark.parametrize("overrides, message", [
    (["model.noise=loud"], "model.noise='loud' is not valid: it must be a number >= 0 or one "
                           "of exact"),
    (["model.noise=-1.0"], "model.noise=-1.0 is out of range"),
    (["model.sample_init=zeros"], "model.sample_init='zeros' is not valid"),
    (["model.train_steps=0"], "model.train_steps=0 is out of range: it must be an integer >= 1"),
    (["model.buffer_size=0"], "model.buffer_size=0 is out of range"),
    (["model.restart_prob=1.5"], r"model.restart_prob=1.5 is out of range: it must be a number "
                                 r"in \[0, 1\]"),
    (["model.step_size=0"], "model.step_size=0 is out of range"),
    (["model.channels=[4,4,4,4,4,4,4]"], "data.image_size must be at least 64"),
    (["model=jem", "data=image_folder", "data.path=x", "data.num_classes=0"],
     "model=jem is a classifier"),
])
def test_bad_options_are_refused_at_start_up(overrides, message, compose, fake_root):
    from genlab.run.validate import validate_train

    overrides = [o.replace("data.path=x", f"data.path={fake_root / 'images.tar.gz'}")
                 for o in overrides]
    with pytest.raises(GenlabError, match=message):
        validate_train(compose(["model=ebm", *overrides]))
    with pytest.raises(GenlabError, match="'exact' for"):  # in Python too
        tiny_ebm(noise="loud")


def test_jem_needs_labels_and_exact_noise_is_sqrt_two_steps():
    with pytest.raises(GenlabError, match="model=jem is a classifier"):
        tiny_jem(num_classes=0)
    assert tiny_ebm(step_size=0.02, noise="exact").noise == pytest.approx(0.2)
    assert tiny_ebm(step_size=0.02, noise="exact").temperature == pytest.approx(1.0)


def test_the_energy_network_is_smooth_and_spectral_norm_bounds_its_layers():
    net = EnergyResNet(1, (4, 8), blocks=2, outputs=3, spectral_norm=True)
    assert net(torch.zeros(2, 1, 16, 16)).shape == (2, 3)
    assert not any(isinstance(m, (torch.nn.ReLU, torch.nn.BatchNorm2d)) for m in net.modules())
    for _ in range(50):  # power iterations in training mode converge to sigma = 1
        net(torch.zeros(1, 1, 16, 16))
    assert torch.linalg.matrix_norm(net.blocks[0].conv1.weight.flatten(1), 2).item() == (
        pytest.approx(1.0, rel=0.02))


@pytest.mark.slow
def test_a_short_mnist_run_keeps_energies_finite_and_data_below_noise(compose, tmp_path):
    """The default model=ebm, 200 steps at batch 16 on real MNIST (seed 42): every logged
    energy is finite, and at the end the validation digits have lower energy than uniform
    noise."""
    root = real_data_dir("MNIST")
    overrides = [o for o in SMALL_RUN if not o.startswith(("logger=", "trainer.max_steps",
                                                            "+trainer.limit_train_batches",
                                                            "data.batch_size",
                                                            "data.eval_batch_size"))]
    cfg = compose(["model=ebm", "data=mnist", f"data.root={root}", *overrides, "logger=csv",
                   "trainer.max_steps=200", "data.batch_size=16", "data.eval_batch_size=128",
                   "data.val_size=256",
                   "+trainer.val_check_interval=100", "trainer.log_every_n_steps=10",
                   "model.buffer_size=1000"])
    train(cfg)
    with open(tmp_path / "csv" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    energies = [float(r[k]) for r in rows for k in ("train/e_pos", "train/e_neg", "val/e_pos",
                                                    "val/e_noise") if r.get(k)]
    assert len(energies) > 40 and all(math.isfinite(e) for e in energies)
    last = [r for r in rows if r.get("val/e_pos")][-1]
    assert float(last["val/e_pos"]) < float(last["val/e_noise"])
