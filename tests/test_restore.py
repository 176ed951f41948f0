"""Restoration: the degradation operators, the baselines, the DDPM's projection sampler, latent
optimisation, and every restoration task through evaluate.py."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import REPO
from helpers.models import small_vae, tiny_ddpm
from helpers.runs import SMALL_RUN
from torch import nn
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from genlab.data.transforms import to_uint8
from genlab.errors import GenlabError
from genlab.maths import degradations as deg
from genlab.maths.inversion import map_latent
from genlab.tasks import TaskInputs, run_task
from genlab.tasks.__main__ import restoration_table
from genlab.tasks.base import image_quality
from genlab.tasks.restore import RESTORATION_TASKS

SIZE = 16


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def operators() -> dict[str, deg.Operator]:
    g = torch.Generator().manual_seed(1)
    return {"centre": deg.Mask(1 - deg.centre_known(SIZE)),
            "outpaint": deg.Mask(deg.centre_known(SIZE)),
            "half": deg.Mask(deg.top_rows_known(SIZE // 2, SIZE)),
            "pixels": deg.Mask(deg.random_pixels_known(4, SIZE, 0.6, g)),
            "x2": deg.Downsample(2), "x4": deg.Downsample(4), "noise": deg.GaussianNoise(0.2)}


# -- operators ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(operators()))
def test_the_pseudo_inverse_is_a_right_inverse_on_the_measurements(name):
    """A(A+(A(x))) = A(x), and the null-space projection of any image agrees with y."""
    op, x = operators()[name], images()
    y = op.forward(x)
    assert torch.allclose(op.forward(op.pinv(y)), y, atol=1e-6)
    assert torch.allclose(op.forward(op.project(images(seed=5), y)), y, atol=1e-6)


def test_masks_keep_the_known_pixels_bit_for_bit():
    x, other = images(), images(seed=3) * 1e-3
    for name in ("centre", "outpaint", "half", "pixels"):
        op = operators()[name]
        known = op.known.expand_as(x).bool()
        for restored in (op.project(other, op.forward(x)), deg.mean_fill(op.forward(x), op.known),
                         deg.nearest_fill(op.forward(x), op.known)):
            assert torch.equal(restored[known], x[known]), name
    pixels = operators()["pixels"].known
    assert pixels.shape == (4, 1, SIZE, SIZE)
    assert (1 - pixels).sum((1, 2, 3)).tolist() == [round(0.6 * SIZE * SIZE)] * 4
    assert not torch.equal(pixels[0], pixels[1])  # each image its own pixels


def test_raster_prefix_masks_are_recognised():
    assert operators()["half"].raster_prefix
    assert not operators()["centre"].raster_prefix and not operators()["outpaint"].raster_prefix


def test_the_noise_operator_has_the_stated_sigma():
    """The std of y - x over 2^20 values is sigma within 1% (its own std is sigma / sqrt(2n),
    0.07% of sigma)."""
    x = torch.zeros(16, 1, 256, 256)
    for sigma in (0.1, 0.3):
        residual = deg.GaussianNoise(sigma).measure(x, torch.Generator().manual_seed(0)) - x
        assert float(residual.std()) == pytest.approx(sigma, rel=0.01)
        assert abs(float(residual.mean())) < 0.01 * sigma
    assert torch.equal(deg.Downsample(2).measure(x), deg.Downsample(2).forward(x))  # no noise


def test_area_downsampling_and_its_pseudo_inverse_by_hand():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    y = deg.Downsample(2).forward(x)
    assert y.flatten().tolist() == [2.5, 4.5, 10.5, 12.5]
    assert deg.Downsample(2).pinv(y)[0, 0, :2, :2].flatten().tolist() == [2.5] * 4


# -- baselines ----------------------------------------------------------------------------------
def test_fills_by_hand():
    y = torch.zeros(1, 1, 3, 3)
    y[0, 0, 0, 0], y[0, 0, 2, 2] = 1.0, -1.0
    known = torch.zeros(1, 1, 3, 3)
    known[0, 0, 0, 0] = known[0, 0, 2, 2] = 1
    assert torch.equal(deg.mean_fill(y, known)[0, 0, 1, 1], torch.tensor(0.0))
    nearest = deg.nearest_fill(y, known)[0, 0]
    assert nearest[0, 1] == 1 and nearest[2, 1] == -1 and nearest[1, 1] == 1  # tie: first


def test_bicubic_upsampling_keeps_constants_and_the_gaussian_filter_keeps_its_mean():
    assert torch.allclose(deg.bicubic_upsample(torch.full((1, 1, 4, 4), 0.5), 4),
                          torch.full((1, 1, 16, 16), 0.5))
    x = images()
    blurred = deg.gaussian_filter(x, 1.0)
    assert blurred.shape == x.shape and blurred.std() < x.std()
    assert torch.equal(deg.gaussian_filter(x, 0.0), x)


def test_the_filter_sigma_is_the_best_on_a_toy_case():
    """Constant images: the widest filter removes the most noise; white-noise images: any
    blur destroys them, so the narrowest wins. Both against a brute-force search."""
    candidates = [0.25, 0.5, 1.0, 2.0]
    g = torch.Generator().manual_seed(0)
    smooth = torch.full((8, 1, 16, 16), 0.3)
    rough = torch.rand(8, 1, 16, 16, generator=g) * 2 - 1
    for clean, expected in ((smooth, 2.0), (rough, 0.25)):
        noisy = deg.GaussianNoise(0.1).measure(clean, g)
        assert deg.best_filter_sigma(clean, noisy, candidates) == expected
        errors = {s: float((deg.gaussian_filter(noisy, s).clamp(-1, 1) - clean).pow(2).mean())
                  for s in candidates}
        assert expected == min(errors, key=errors.get)


def test_psnr_and_ssim_match_torchmetrics_on_fixed_images():
    clean, restored = images(), images(seed=1) * 0.5 + images() * 0.5
    quality = image_quality(restored, clean)
    a, b = to_uint8(restored).float(), to_uint8(clean).float()
    mse = (a - b).pow(2).flatten(1).mean(1)
    assert quality["psnr"] == pytest.approx(float((10 * torch.log10(255 ** 2 / mse)).mean()),
                                            rel=1e-5)
    assert quality["psnr"] == pytest.approx(float(peak_signal_noise_ratio(
        a, b, data_range=255.0, dim=(1, 2, 3))), rel=1e-6)
    assert quality["ssim"] == pytest.approx(float(structural_similarity_index_measure(
        a, b, data_range=255.0)), rel=1e-6)


# -- the DDPM's projection sampler --------------------------------------------------------------
def test_zero_noise_ddpm_super_resolution_agrees_with_its_input():
    """DDNM on an untrained DDPM: the output downsampled equals y within 1e-5 (float
    rounding; the last step returns the projected x0 itself)."""
    torch.manual_seed(0)
    model, x = tiny_ddpm(), images()
    for factor in (2, 4):
        op = deg.Downsample(factor)
        y = op.forward(x)
        restored = model.restore(y, op, generator=torch.Generator().manual_seed(0))
        assert (op.forward(restored) - y).abs().max() < 1e-5
    with pytest.raises(GenlabError, match="noise-free"):
        model.restore(x, deg.GaussianNoise(0.1))


def test_ddpm_inpainting_keeps_known_pixels_bit_for_bit():
    torch.manual_seed(0)
    model, x = tiny_ddpm(), images()
    op = operators()["pixels"]
    restored = model.restore(op.forward(x), op, generator=torch.Generator().manual_seed(0))
    known = op.known.expand_as(x).bool()
    assert torch.equal(restored[known], x[known])
    for name in ("inpaint", "inpaint_pixels"):  # RePaint, through the task
        result = run_task(name, model, TaskInputs(x, None, torch.Generator().manual_seed(0),
                                                  options={"images": 4}))
        assert result.metrics["known_error"] == 0 and result.metrics["consistency"] == 0


# -- latent optimisation ------------------------------------------------------------------------
def test_latent_optimisation_lowers_the_measurement_error_monotonically():
    torch.manual_seed(0)
    decoder = nn.Sequential(nn.Linear(3, 32), nn.Tanh(), nn.Linear(32, SIZE * SIZE), nn.Tanh())

    def decode(z):
        return decoder(z).view(-1, 1, SIZE, SIZE)

    truth = decode(torch.randn(4, 3)).detach()
    for op in (deg.Downsample(4), operators()["centre"]):
        y, history = op.forward(truth), []
        map_latent(decode, y, op, torch.zeros(4, 3), prior=None, steps=8, history=history)
        assert len(history) == 9
        assert all(b <= a + 1e-7 for a, b in zip(history, history[1:])), history
        assert history[-1] < 0.01 * history[0]
        assert all(p.grad is None for p in decoder.parameters())  # only z was optimised


def test_latent_optimisation_undoes_a_round_that_leaves_the_decoder_non_finite():
    """A decoder that is NaN beyond |z| = 2, with measurements only |z| = 4 explains: the
    result stays finite and no worse than the start."""
    def decode(z):
        radius = z.pow(2).sum(1, keepdim=True)
        return (z[:, :1] * torch.sqrt(4 - radius)).view(-1, 1, 1, 1).expand(-1, 1, 4, 4)

    y = torch.full((2, 1, 4, 4), 8.0)
    history = []
    start = torch.tensor([[0.1, 0.1], [3.0, 0.0]])  # the second image's start is NaN
    z = map_latent(decode, y, deg.Mask(torch.ones(1, 1, 4, 4)), start, prior=None, steps=5,
                   history=history)
    assert torch.isfinite(decode(z)).all()
    assert all(math.isfinite(h) for h in history) and history[-1] <= history[0]


def test_vae_restoration_is_consistent_with_noise_free_measurements():
    torch.manual_seed(0)
    model, x = small_vae().eval(), torch.rand(2, 1, 32, 32) * 2 - 1
    op = deg.Downsample(4)
    restored = model.restore(op.forward(x), op)
    assert (op.forward(restored) - op.forward(x)).abs().max() < 1e-5


def test_energy_descent_with_a_noise_free_operator_finds_the_constrained_mode():
    """For E(x) = ||x - mu||^2 / 2, the minimiser of E on {x : A(x) = y} is the projection of
    mu, mu - A+(A(mu) - y); projected energy descent reaches it for each operator."""
    from genlab.maths.langevin import descend_posterior_energy

    mu = torch.full((2, 1, SIZE, SIZE), 0.2)

    def energy(x):
        return 0.5 * (x - mu).flatten(1).pow(2).sum(1)

    for name in ("x2", "x4", "centre"):
        op = operators()[name]
        y = op.forward(images(2))
        x = descend_posterior_energy(energy, y, 0.0, 200, 0.1, 1.0, clamp=False, operator=op)
        assert torch.allclose(x, op.project(mu, y), atol=1e-5), name


# -- tasks --------------------------------------------------------------------------------------
def test_restoration_tasks_give_four_rows_and_the_baselines():
    torch.manual_seed(0)
    model, x = tiny_ddpm(), images(10)
    result = run_task("superres_x2", model, TaskInputs(x, None, torch.Generator().manual_seed(0),
                                                       options={"images": 10}))
    assert result.images.shape == (4 * 8, 1, SIZE, SIZE) and result.nrow == 8
    assert torch.equal(result.images[-8:], x[:8])
    assert result.metrics["images"] == 10 and result.metrics["consistency"] < 1e-5
    assert result.metrics["baseline_psnr"] == pytest.approx(
        image_quality(deg.bicubic_upsample(deg.Downsample(2).forward(x), 2), x)["psnr"])
    assert result.metrics["beats_baseline"] == float(
        result.metrics["psnr"] > result.metrics["baseline_psnr"])
    pixels = run_task("inpaint_pixels", model, TaskInputs(  # a mask per image, more than 8
        x, None, torch.Generator().manual_seed(0), options={"images": 10}))
    assert pixels.images.shape == (4 * 8, 1, SIZE, SIZE) and pixels.metrics["known_error"] == 0
    denoised = run_task("denoise", model, TaskInputs(x, None, torch.Generator().manual_seed(0),
                                                     options={"images": 4, "sigma": 0.2}))
    assert {"noisy_psnr", "baseline_filter_sigma", "baseline_psnr"} <= set(denoised.metrics)


def test_the_readme_restoration_table_is_the_generated_one():
    readme = (REPO / "README.md").read_text()
    table = restoration_table()
    assert table in readme, "README.md: paste the output of `python -m genlab.tasks`"
    assert table.count("\n") == 1 + 7  # a row per family


def test_every_restoration_task_runs_through_evaluate(compose, tmp_path):
    """A tiny VAE checkpoint from train.py; evaluate.py runs the seven tasks on 4 images each
    and writes their numbers and grids."""
    from genlab.run import evaluate, train

    run_dir = tmp_path / "train"
    train(compose(["model=vae", "data=digits", "model.channels=[8,16]", "model.latent_dim=4",
                   *SMALL_RUN, "data.val_size=16", f"paths.output_dir={run_dir}"]))
    options = [f"task_options.{t}.images=4" for t in RESTORATION_TASKS]
    metrics = evaluate(compose([f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
                                "trainer=cpu", "logger=none", "fid.enabled=false",
                                "sample_grid=0", f"tasks=[{','.join(RESTORATION_TASKS)}]",
                                *options, "task_options.denoise.sigma=0.2",
                                "+trainer.limit_test_batches=1",
                                "+trainer.enable_progress_bar=false"], config_name="evaluate"))
    for name in RESTORATION_TASKS:
        assert (tmp_path / f"{name}.png").is_file(), name
        for key in ("psnr", "ssim", "consistency", "baseline_psnr", "beats_baseline"):
            assert math.isfinite(metrics[f"task/{name}/{key}"]), (name, key)
        assert metrics[f"task/{name}/images"] == 4
    assert metrics["task/inpaint/known_error"] == 0  # the known pixels pasted back
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics


def test_restoration_options_are_checked_at_start_up():
    from omegaconf import OmegaConf

    from genlab.models.vae import VAE
    from genlab.run.validate import _check_tasks

    for options, message in (({"inpaint_pixels": {"missing": 1.5}}, "missing"),
                             ({"denoise": {"sigma": 0}}, "sigma"),
                             ({"superres_x4": {"images": 0}}, "images"),
                             ({"superres_x4": {"factor": 3}}, "factor")):
        cfg = OmegaConf.create({"tasks": list(options), "task_options": options})
        with pytest.raises(GenlabError, match=message):
            _check_tasks(cfg, VAE)
    _check_tasks(OmegaConf.create({"tasks": ["superres_x2"], "task_options": {
        "superres_x2": {"images": 8}, "inpaint_pixels": {"missing": 0.5}}}), VAE)
