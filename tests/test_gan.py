"""The GAN: its losses and penalties, the manual optimization loop, exact resumes, DiffAugment,
mixed precision and the errors a user can meet."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from helpers.models import tiny_gan
from helpers.runs import cpu_trainer, random_images
from lightning.pytorch.plugins import MixedPrecision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from genlab.errors import GenlabError
from genlab.maths.gan import LOSSES, gan_loss
from genlab.maths.penalties import gradient_penalty, r1_penalty
from genlab.models.gan import GAN
from genlab.nets.augment import POLICIES, diff_augment
from genlab.tasks import TaskInputs, offered, run_task


# -- losses and penalties ----------------------------------------------------------------------
def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


REAL, FAKE = [2.0, -1.0], [0.5, -3.0]
EXPECTED = {  # (L_D, L_G) on the logits above, by hand
    "non_saturating": ((softplus(-2) + softplus(1)) / 2 + (softplus(0.5) + softplus(-3)) / 2,
                       (softplus(-0.5) + softplus(3)) / 2),
    "wasserstein": ((0.5 - 3) / 2 - (2 - 1) / 2, -(0.5 - 3) / 2),
    "hinge": ((0 + 2) / 2 + (1.5 + 0) / 2, -(0.5 - 3) / 2),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_each_loss_gives_the_hand_computed_value(name):
    loss = gan_loss(name)
    d_expected, g_expected = EXPECTED[name]
    assert loss.discriminator(torch.tensor(REAL), torch.tensor(FAKE)).item() == pytest.approx(
        d_expected)
    assert loss.generator(torch.tensor(FAKE)).item() == pytest.approx(g_expected)


def test_unknown_loss_lists_the_valid_ones():
    with pytest.raises(GenlabError, match="hinge, non_saturating, wasserstein|"
                                          "non_saturating, wasserstein, hinge"):
        tiny_gan(loss="least_squares")


def finite_difference_gradient(critic, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Central differences of sum_i critic(x)_i, one coordinate at a time."""
    grad = torch.zeros_like(x)
    flat, grad_flat = x.view(-1), grad.view(-1)
    for j in range(flat.numel()):
        saved = flat[j].item()
        flat[j] = saved + eps
        up = critic(x).sum()
        flat[j] = saved - eps
        down = critic(x).sum()
        flat[j] = saved
        grad_flat[j] = (up - down) / (2 * eps)
    return grad


def test_penalties_equal_finite_difference_estimates():
    torch.manual_seed(0)
    critic_net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.Tanh(), nn.Linear(5, 1)).double()

    def critic(x):
        return critic_net(x).squeeze(1)

    real, fake = torch.randn(3, 3, 2, 2).double(), torch.randn(3, 3, 2, 2).double()
    penalty = gradient_penalty(critic, real, fake, torch.Generator().manual_seed(7))
    e = torch.rand(3, 1, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        norms = finite_difference_gradient(critic, e * real + (1 - e) * fake).flatten(1).norm(
            dim=1)
        r1_norms = finite_difference_gradient(critic, real.clone()).flatten(1).norm(dim=1)
    assert penalty.item() == pytest.approx(((norms - 1) ** 2).mean().item(), rel=1e-6)
    assert r1_penalty(critic, real).item() == pytest.approx((r1_norms ** 2).mean().item(),
                                                            rel=1e-6)
    penalty.backward()  # the penalty trains the critic: it is in the graph
    assert critic_net[1].weight.grad.abs().sum() > 0


# -- the training loop --------------------------------------------------------------------------
def adam_steps(optimizer: torch.optim.Optimizer) -> int:
    return int(next(iter(optimizer.state.values()))["step"])


def test_one_training_step_updates_d_n_critic_times_and_g_once():
    model = tiny_gan(architecture="resnet", loss="wasserstein", n_critic=3, gradient_penalty=10.0,
                     d_batch_norm=False)
    fit = cpu_trainer(max_steps=1)
    fit.fit(model, random_images(8))
    opt_g, opt_d = (o.optimizer for o in model.optimizers())
    assert (adam_steps(opt_g), adam_steps(opt_d)) == (1, 3)
    assert fit.global_step == 4  # Lightning counts every optimizer step: (n_critic + 1) per batch
    assert int(model.ema.updates) == 1
    assert {"train/d_loss", "train/g_loss", "train/gp", "train/d_real",
            "train/d_fake"} <= set(fit.callback_metrics)


RESUME_SETTINGS = {
    "dcgan": dict(conditional=True, spectral_norm=True, d_batch_norm=False, loss="hinge",
                  r1_gamma=1.0, augment=["color", "translation", "cutout"]),
    "resnet": dict(loss="wasserstein", n_critic=2, gradient_penalty=10.0, lr_d=4e-4,
                   scheduler=partial(torch.optim.lr_scheduler.LinearLR, start_factor=1.0,
                                     end_factor=0.1, total_iters=10)),
}


@pytest.mark.parametrize("architecture", sorted(RESUME_SETTINGS))
def test_a_resumed_run_continues_exactly(architecture, tmp_path):
    def fresh() -> GAN:
        torch.manual_seed(0)
        return tiny_gan(architecture=architecture, ema_decay=0.9,
                        **RESUME_SETTINGS[architecture])

    first = cpu_trainer(max_epochs=1)  # k = 2 batches
    first.fit(fresh(), random_images())
    first.save_checkpoint(tmp_path / "k.ckpt")
    resumed, uninterrupted = fresh(), fresh()
    cpu_trainer(max_epochs=2).fit(resumed, random_images(),
                                  ckpt_path=tmp_path / "k.ckpt")  # m = 2 more
    cpu_trainer(max_epochs=2).fit(uninterrupted, random_images())

    before = torch.load(tmp_path / "k.ckpt", weights_only=True)["state_dict"]
    after, expected = resumed.state_dict(), uninterrupted.state_dict()
    assert after.keys() == expected.keys()
    assert any("ema.averaged" in key for key in after)
    for key in expected:
        assert torch.equal(after[key], expected[key]), key
    assert not torch.equal(before["ema.averaged.out.weight"], after["ema.averaged.out.weight"])


def test_a_diverged_run_stops_naming_the_step():
    x = torch.zeros(8, 1, 16, 16)
    x[3] = float("nan")
    data = DataLoader(TensorDataset(x, torch.zeros(8, dtype=torch.long)), batch_size=8)
    with pytest.raises(GenlabError, match=r"diverged at generator step 0 .*d_loss=nan"):
        cpu_trainer(max_steps=2).fit(tiny_gan(num_classes=0), data)


def test_bf16_mixed_precision_takes_a_step_on_cpu():
    model = tiny_gan(architecture="resnet", loss="wasserstein", n_critic=2, d_batch_norm=False,
                     gradient_penalty=10.0, augment=["translation"])
    fit = cpu_trainer(max_steps=1, precision="bf16-mixed")
    fit.fit(model, random_images(8))
    assert math.isfinite(fit.callback_metrics["train/d_loss"])
    assert model.sample(2).dtype == torch.float32


@pytest.mark.parametrize(("init_scale", "steps_taken"), [(2.0 ** 8, (1, 3)), (2.0 ** 40, (0, 0))])
def test_fp16_loss_scaling_covers_both_optimizers(init_scale, steps_taken):
    """A GradScaler on CPU stands in for CUDA's: at a sane scale both optimizers step; at an
    absurd one every fp16 gradient overflows, so the scaler skips all n_critic + 1 steps and
    halves its scale at each, which it only does if every step went through it."""
    model = tiny_gan(architecture="resnet", loss="wasserstein", n_critic=3, d_batch_norm=False,
                     gradient_penalty=10.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    cpu_trainer(max_steps=1, plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)]).fit(
        model, random_images(8))
    opt_g, opt_d = (o.optimizer for o in model.optimizers())
    taken = tuple(adam_steps(o) if o.state else 0 for o in (opt_g, opt_d))
    assert taken == steps_taken
    skipped = 4 - sum(taken)
    assert scaler.get_scale() == init_scale * 0.5 ** skipped


def test_compile_leaves_a_penalized_discriminator_eager():
    """torch.compile has no double backward, which the gradient penalty needs."""
    model = tiny_gan(architecture="resnet", loss="wasserstein", gradient_penalty=10.0,
                     d_batch_norm=False)
    model.compile_networks()
    assert model.generator._compiled_call_impl is not None
    assert model.discriminator._compiled_call_impl is None
    model = tiny_gan(loss="hinge")
    model.compile_networks()
    assert model.discriminator._compiled_call_impl is not None


# -- capabilities --------------------------------------------------------------------------------
def test_samples_come_from_the_ema_generator_and_fixed_noise_gives_fixed_samples():
    model = tiny_gan(num_classes=0).eval()
    with torch.no_grad():
        model.ema.averaged.out.weight.zero_()
        model.ema.averaged.out.bias.fill_(0.5)  # the EMA net now outputs tanh(0.5) everywhere
    assert torch.allclose(model.sample(3), torch.full((3, 1, 16, 16), math.tanh(0.5)))
    model = tiny_gan(num_classes=0, ema_decay=None).eval()
    a = model.sample(4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, model.sample(4, generator=torch.Generator().manual_seed(1)))
    assert a.shape == (4, 1, 16, 16) and a.abs().max() <= 1


def test_interpolation_runs_between_the_two_latents():
    model = tiny_gan(conditional=True).eval()
    z0, z1 = torch.randn(2, 3, 8)
    labels = torch.tensor([2, 0, 1])
    rows = model.interpolate_latents(z0, z1, steps=5, labels=labels)
    assert rows.shape == (15, 1, 16, 16)
    rows = rows.view(3, 5, 1, 16, 16)
    assert torch.allclose(rows[:, 0], model.generate(z0, labels), atol=1e-5)
    assert torch.allclose(rows[:, -1], model.generate(z1, labels), atol=1e-5)
    assert offered(model) == ["denoise", "inpaint", "inpaint_half", "inpaint_pixels",
                              "interpolate", "outpaint", "superres_x2", "superres_x4"]
    x, labels = torch.zeros(6, 1, 16, 16), torch.tensor([0, 0, 1, 1, 2, 2])
    grid = run_task("interpolate", model, TaskInputs(x, labels, torch.Generator().manual_seed(0)))
    assert grid.images.shape == (24, 1, 16, 16) and grid.nrow == 8


def test_conditional_generator_and_discriminator_use_the_label():
    torch.manual_seed(0)
    model = tiny_gan(conditional=True, d_batch_norm=False).eval()
    with torch.no_grad():  # conditional BN gains start at zero: give each class its own
        for module in model.ema.averaged.modules():
            if isinstance(module, nn.Embedding):
                module.weight.normal_()
    z = torch.randn(1, 8).expand(3, 8)
    fakes = model.generate(z, torch.tensor([0, 1, 2]))
    assert not torch.allclose(fakes[0], fakes[1])
    x = torch.randn(1, 1, 16, 16).expand(3, 1, 16, 16)
    scores = model.discriminator(x, torch.tensor([0, 1, 2]))
    assert not torch.allclose(scores[0], scores[1])


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_diff_augment_is_random_per_image_reproducible_and_differentiable(policy):
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    a = diff_augment(x, [policy], torch.Generator().manual_seed(3))
    b = diff_augment(x, [policy], torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, diff_augment(x, [policy], torch.Generator().manual_seed(4)))
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_translation_moves_content_and_cutout_zeroes_a_square():
    x = torch.zeros(64, 1, 16, 16)
    x[:, :, 8, 8] = 1.0
    moved = POLICIES["translation"](x, torch.Generator().manual_seed(0))
    where = moved.flatten(1).argmax(dim=1)
    rows, cols = where // 16, where % 16
    assert moved.flatten(1).sum(1).eq(1).all()  # nothing leaves the image at this shift
    assert (rows - 8).abs().max() == 2 and (cols - 8).abs().max() == 2  # 16 / 8 pixels at most
    ones = torch.ones(64, 1, 16, 16)
    zeroed = (POLICIES["cutout"](ones, torch.Generator().manual_seed(0)) == 0).flatten(1).sum(1)
    assert zeroed.max() == 64 and zeroed.min() >= 16  # an 8x8 square, clipped at the border


# -- bad input ------------------------------------------------------------------------------------
def test_a_conditional_model_on_unlabelled_data_is_explained(compose, fake_root):
    from genlab.run import train

    with pytest.raises(GenlabError, match="labelled dataset"):
        tiny_gan(num_classes=0, conditional=True)
    cfg = compose(["model=gan", "model.conditional=true", "data=celeba", "logger=none",
                   "trainer=cpu", f"data.root={fake_root}", f"data.cache_dir={fake_root}/cache",
                   "data.download=false", "data.verify=false", "data.val_size=8"])
    with pytest.raises(GenlabError, match="unlabelled"):
        train(cfg)


@pytest.mark.parametrize(("options", "message"), [
    (dict(architecture="stylegan"), "dcgan, resnet"),
    (dict(augment=["rotate"]), "color, translation, cutout"),
    (dict(gradient_penalty=10.0), "d_batch_norm=false"),
    (dict(n_critic=0), "at least one"),
])
def test_bad_options_are_explained(options, message):
    with pytest.raises(GenlabError, match=message):
        tiny_gan(**options)


def test_a_batch_smaller_than_n_critic_is_explained():
    model = tiny_gan(loss="hinge", n_critic=5, spectral_norm=True, d_batch_norm=False)
    data = DataLoader(TensorDataset(torch.zeros(4, 1, 16, 16), torch.zeros(4, dtype=torch.long)),
                      batch_size=4)
    with pytest.raises(GenlabError, match="data.batch_size"):
        cpu_trainer(max_steps=1).fit(model, data)


# -- through the entry points ---------------------------------------------------------------------
def test_train_tests_the_last_checkpoint_and_evaluate_draws_interpolations(compose, tmp_path):
    from genlab.run import evaluate, train

    small = ["trainer=cpu", "logger=none", "data=digits", "data.val_size=16",
             "trainer.max_steps=4", "+trainer.limit_train_batches=2",
             "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1",
             "+trainer.num_sanity_val_steps=0", "+trainer.enable_progress_bar=false",
             "~callbacks.progress_bar", "~callbacks.model_summary", "callbacks.sample_grid.n=4",
             "data.batch_size=8", "data.eval_batch_size=8", "model.g_width=8",
             "model.d_width=8"]
    assert train(compose(["model=gan", *small])) is None  # monitor=null: nothing to select on
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    assert ckpt.is_file() and (tmp_path / "samples" / "samples.png").is_file()
    out = tmp_path / "evaluate"
    metrics = evaluate(compose([f"ckpt_path={ckpt}", f"paths.output_dir={out}", "trainer=cpu",
                                "logger=none", "tasks=[interpolate]", "sample_grid=4",
                                "++fid.enabled=false", "+trainer.limit_test_batches=1",
                                "+trainer.enable_progress_bar=false"], config_name="evaluate"))
    assert {"test/d_real", "test/d_fake", "test/d_loss"} <= set(metrics)
    assert not any("bpd" in key for key in metrics)
    assert (out / "interpolate.png").is_file() and (out / "samples.png").is_file()
