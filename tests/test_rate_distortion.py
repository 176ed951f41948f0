"""The lossy rate-distortion measurement (genlab.codec.rate_distortion): its maths against hand
computations, the Pillow sweeps, the tiling, the named multirun and the errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import REPO
from helpers.models import small_vae

from genlab.codec import rate_distortion as rd
from genlab.files.images import TensorSource
from genlab.maths.autoregressive import pixel_index


def fashion_like(n: int = 16, seed: int = 0) -> np.ndarray:
    """n smooth grey 32x32 images (blurred noise, a zero border like padded Fashion-MNIST)."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 32, 32), dtype=np.uint8)
    noise = rng.uniform(0, 255, (n, 7, 7))
    images[:, 2:30, 2:30] = np.kron(noise, np.ones((4, 4)))
    return images


# -- the maths -----------------------------------------------------------------------------------
def test_kl_rate_is_the_closed_form_in_bits_per_pixel():
    mu = torch.tensor([[0.5, -1.0, 2.0]])
    var = torch.tensor([[0.25, 1.0, 4.0]])
    nats = sum(0.5 * (m ** 2 + v - 1 - math.log(v))
               for m, v in zip(mu[0].tolist(), var[0].tolist()))
    rate = rd.kl_rate_bpp(mu, var.log(), pixels=1024)
    assert rate.item() == pytest.approx(nats / math.log(2) / 1024, rel=1e-6)


def test_kl_rate_is_zero_when_the_posterior_is_the_prior():
    assert rd.kl_rate_bpp(torch.zeros(3, 8), torch.zeros(3, 8), 1024).abs().max() < 1e-7


def test_psnr_and_mse_by_hand():
    reference = np.zeros((2, 2, 2), dtype=np.uint8)
    decoded = reference.copy()
    decoded[0, 0, 0] = 10          # image 0: squared errors 100, 0, 0, 0
    decoded[1] = 255              # image 1: every pixel off by 255
    assert rd.mse(reference, decoded).tolist() == [25.0, 255.0 ** 2]
    assert rd.psnr(reference, decoded).tolist() == pytest.approx(
        [10 * math.log10(255 ** 2 / 25), 0.0])


def test_identical_images_score_the_stated_cap():
    images = fashion_like(2)
    assert rd.psnr(images, images).tolist() == [rd.PSNR_CAP_DB] * 2
    one_level = images.copy()
    one_level[0, 5, 5] += 1        # the smallest error in a 32x32 image stays below the cap
    assert rd.psnr(images, one_level)[0] == pytest.approx(10 * math.log10(255 ** 2 * 1024))
    assert rd.psnr(images, one_level)[0] < rd.PSNR_CAP_DB


def test_reconstructions_round_to_the_nearest_8_bit_value():
    """The VAE's reconstructions become 8-bit values by `pixel_index`: the inverse of the model
    range, rounding to the nearest level."""
    from genlab.data.transforms import to_model_range

    u = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(pixel_index(to_model_range(u)).to(torch.uint8), u)
    step = 2 / 255
    x = to_model_range(torch.tensor([100], dtype=torch.uint8)) + torch.tensor([0.4, 0.6]) * step
    assert pixel_index(x).tolist() == [100, 101]


def test_the_mosaic_tiling_round_trips():
    images = fashion_like(10)
    mosaic = rd.tile(images, columns=4)
    assert mosaic.shape == (3 * 32, 4 * 32)
    assert np.array_equal(mosaic[32:64, 0:32], images[4])      # row by row
    assert not mosaic[64:, 64:].any()                           # blank tiles at the end
    assert np.array_equal(rd.untile(mosaic, 10, 32, 32), images)


# -- JPEG and WebP -------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, qualities", [("JPEG", (5, 30, 60, 95)),
                                            ("WEBP", (0, 30, 60, 100))])
@pytest.mark.parametrize("mosaic", [True, False])
def test_bits_fall_and_psnr_falls_as_the_quality_falls(fmt, qualities, mosaic):
    images = fashion_like(16)
    sweep = rd.codec_sweep(images, fmt, qualities, mosaic)
    rates, db = [p.bpp for p in sweep], [p.psnr for p in sweep]
    assert rates == sorted(rates) and len(set(rates)) == len(rates)
    assert db == sorted(db) and db[-1] > db[0] + 5


def test_one_file_per_image_pays_a_header_each():
    images = fashion_like(16)
    per_file = rd.codec_point(images, "JPEG", 50, mosaic=False)
    mosaic = rd.codec_point(images, "JPEG", 50, mosaic=True)
    assert per_file.bpp > mosaic.bpp + 8 * 100 / 1024     # JPEG headers: hundreds of bytes


def test_psnr_at_rate_interpolates_linearly_in_bpp_and_never_extrapolates():
    sweep = [rd.Point("q=50", 2.0, 30.0, 0), rd.Point("q=10", 1.0, 20.0, 0),
             rd.Point("q=90", 4.0, 40.0, 0)]
    assert rd.psnr_at_rate(sweep, 1.5) == pytest.approx(25.0)
    assert rd.psnr_at_rate(sweep, 3.0) == pytest.approx(35.0)
    assert rd.psnr_at_rate(sweep, 4.0) == pytest.approx(40.0)
    assert rd.psnr_at_rate(sweep, 0.5) is None and rd.psnr_at_rate(sweep, 5.0) is None
    assert rd.rate_at_psnr(sweep, 25.0) == pytest.approx(1.5)
    assert rd.rate_at_psnr(sweep, 35.0) == pytest.approx(3.0)
    assert rd.rate_at_psnr(sweep, 19.0) is None and rd.rate_at_psnr(sweep, 41.0) is None


# -- the VAE and the command ---------------------------------------------------------------------
def save_checkpoint(path, model: torch.nn.Module, node: dict, data: str = "fashion_mnist"):
    """A checkpoint as train.py writes it, as far as the measurement reads one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"genlab_config": {"model": node, "data": {"_target_": "genlab.data.ImageDataModule",
                                                          "name": data}},
                "state_dict": model.state_dict()}, path)
    return path


VAE_NODE = {"_target_": "genlab.models.vae.VAE", "image_shape": [1, 32, 32], "latent_dim": 4,
            "channels": [8, 16], "likelihood": "gaussian"}


def test_the_vae_point_is_its_mean_kl_and_its_reconstructions():
    torch.manual_seed(0)
    model = small_vae(likelihood="gaussian").eval()
    images = torch.from_numpy(fashion_like(6))[:, None]
    sampled, mean = rd.vae_points(model, images, seed=0, batch=4)
    mu, logvar = model.posterior_params(images.float() * 2 / 255 - 1)
    expected = rd.kl_rate_bpp(mu, logvar, 1024).mean().item()
    assert sampled.bpp == pytest.approx(expected, rel=1e-5) and mean.bpp == sampled.bpp
    y = pixel_index(model.pixels.mean(model.decoder_params(mu))).to(torch.uint8).numpy()
    assert mean.psnr == pytest.approx(rd.psnr(images.numpy(), y).mean())
    assert sampled.psnr != mean.psnr       # z ~ q is a different reconstruction


def test_main_measures_a_multirun_and_writes_the_plot(tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    for job, beta in (("0", 0.5), ("1", 2.0)):
        save_checkpoint(tmp_path / "multirun" / job / "checkpoints" / "last.ckpt",
                        small_vae(likelihood="gaussian", beta=beta), {**VAE_NODE, "beta": beta})
    images = torch.from_numpy(fashion_like(4))[:, None]
    monkeypatch.setattr("genlab.metrics.sources.open_images", lambda spec: TensorSource(images))
    monkeypatch.setattr(rd, "JPEG_QUALITIES", (10, 90))
    monkeypatch.setattr(rd, "WEBP_QUALITIES", (10, 90))
    out = tmp_path / "rd.png"
    assert rd.main([str(tmp_path / "multirun"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| 0.5 |" in printed and "| 2 |" in printed and "KL rate" in printed
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_checkpoint_that_is_not_a_vae_is_refused(tmp_path, capsys):
    from helpers.models import tiny_autoencoder

    node = {"_target_": "genlab.models.autoencoder.Autoencoder", "image_shape": [1, 16, 16]}
    save_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", tiny_autoencoder(), node)
    assert rd.main([str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "holds a Autoencoder, not a VAE" in err and "experiment=vae_rate_distortion" in err


def test_a_directory_without_checkpoints_is_refused(tmp_path, capsys):
    assert rd.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "No checkpoints/last.ckpt" in err and "multirun" in err


def test_runs_of_different_datasets_are_refused(tmp_path, capsys):
    """An MNIST VAE among Fashion-MNIST ones would be measured on Fashion-MNIST test images."""
    for job, data in (("0", "fashion_mnist"), ("1", "mnist")):
        save_checkpoint(tmp_path / "multirun" / job / "checkpoints" / "last.ckpt",
                        small_vae(likelihood="gaussian"), VAE_NODE, data)
    assert rd.main([str(tmp_path / "multirun"), "--out", str(tmp_path / "rd.png")]) == 1
    err = capsys.readouterr().err
    assert "different datasets" in err and "1/checkpoints/last.ckpt: mnist" in err
    assert not (tmp_path / "rd.png").exists()


def test_bad_arguments_are_one_paragraph_and_status_1(tmp_path, capsys):
    """A non-positive --num (checked before any checkpoint is read) and a value argparse cannot
    parse: one paragraph on stderr, exit status 1, no plot."""
    assert rd.main([str(tmp_path), "--num", "0", "--out", str(tmp_path / "rd.png")]) == 1
    assert "--num=0: give a positive number" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        rd.main([str(tmp_path), "--num", "x"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 1 and "\n" not in err and "invalid int value: 'x'" in err
    assert not (tmp_path / "rd.png").exists()


# -- the named multirun --------------------------------------------------------------------------
def test_the_named_multirun_composes_with_the_beta_grid():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=vae_rate_distortion"],
                      return_hydra_config=True)
    (sweep,) = OverridesParser.create().parse_overrides(
        [f"model.beta={cfg.hydra.sweeper.params['model.beta']}"])
    betas = [float(b) for b in sweep.sweep_string_iterator()]
    assert betas == pytest.approx([10 ** (k / 2) for k in range(-4, 3)], rel=0.01)
    assert cfg.data.name == "fashion_mnist" and cfg.data.binarize is False
    assert cfg.model.likelihood == "gaussian" and cfg.model.latent_dim == 64
    assert list(cfg.model.channels) == [16, 32, 64] and cfg.test is False
