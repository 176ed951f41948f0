"""Tasks run on any model with the capability they need and return grids and metrics."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.models import small_vae, tiny_ddpm, tiny_gan

from genlab.errors import GenlabError
from genlab.tasks import TASKS, TaskInputs, offered, run_task
from genlab.tasks.base import image_quality
from genlab.tasks.edit import attribute_direction


def test_each_family_offers_the_tasks_of_its_capabilities():
    assert offered(small_vae()) == ["edit", "interpolate", "reconstruct", "traversal"]
    assert offered(tiny_ddpm()) == ["denoise", "inpaint", "interpolate", "outpaint"]
    assert offered(tiny_gan()) == ["interpolate"]


@pytest.mark.parametrize("name, rows", [("inpaint", 3), ("outpaint", 3), ("denoise", 3),
                                        ("interpolate", 4)])
def test_ddpm_tasks_give_grids_and_metrics(name, rows):
    torch.manual_seed(0)
    model = tiny_ddpm()
    x = torch.rand(16, 1, 16, 16) * 2 - 1
    result = run_task(name, model, TaskInputs(x, None, torch.Generator().manual_seed(0)))
    assert result.images.shape == (rows * 8, 1, 16, 16)
    assert len(result.images) % result.nrow == 0
    if name in ("inpaint", "outpaint"):
        assert result.metrics["known_error"] == 0  # the known pixels are kept bit for bit
        assert set(result.metrics) == {"psnr", "ssim", "known_error"}
    if name == "denoise":
        assert set(result.metrics) == {"noisy_psnr", "noisy_ssim", "psnr", "ssim"}


def test_vae_reconstruction_task_measures_its_reconstructions():
    torch.manual_seed(0)
    model = small_vae().eval()
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    result = run_task("reconstruct", model, TaskInputs(x))
    assert torch.equal(result.images[0::2], x)
    assert torch.equal(result.images[1::2], model.reconstruct(x))
    assert result.metrics == image_quality(model.reconstruct(x), x)


def test_psnr_and_ssim_by_hand():
    clean = torch.zeros(2, 1, 16, 16)  # pixel 127.5 -> 128 after rounding
    shifted = clean + 10 / 127.5  # every pixel 10 grey levels higher
    quality = image_quality(shifted, clean)
    assert quality["psnr"] == pytest.approx(10 * math.log10(255 ** 2 / 10 ** 2), abs=1e-4)
    assert image_quality(clean, clean)["ssim"] == pytest.approx(1.0)
    assert quality["ssim"] < 1


def test_a_task_the_model_cannot_do_is_explained():
    with pytest.raises(GenlabError, match="offers: interpolate"):
        run_task("inpaint", tiny_gan(), TaskInputs(torch.zeros(2, 1, 16, 16)))
    with pytest.raises(GenlabError, match="not a task"):
        run_task("colourise", tiny_gan(), TaskInputs(torch.zeros(2, 1, 16, 16)))
    assert set(TASKS) == {"bits", "complete", "denoise", "edit", "inpaint", "interpolate",
                          "outpaint", "reconstruct", "traversal"}


def test_the_attribute_direction_recovers_a_known_offset():
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(4000, 6, generator=g)
    has = torch.rand(4000, generator=g) < 0.3
    offset = torch.tensor([2.0, 0.0, -1.0, 0.0, 0.5, 0.0])
    codes[has] += offset
    assert torch.allclose(attribute_direction(codes, has), offset, atol=0.1)
    with pytest.raises(GenlabError, match="with and without"):
        attribute_direction(codes, torch.ones(4000, dtype=torch.bool))


def test_edit_moves_test_images_along_a_class_direction(tmp_path):
    from genlab.data import ImageDataModule

    data = ImageDataModule("digits", str(tmp_path), str(tmp_path), channels=1, val_size=300,
                           test_size=100)
    data.setup()
    torch.manual_seed(0)
    model = small_vae().eval()
    x = data.to_model_input(data.splits["test"][0][:4], train=False)
    result = run_task("edit", model, TaskInputs(x, None, None, data, {"attribute": "3",
                                                                       "examples": 300}))
    rows = result.images.view(4, 7, 1, 32, 32)
    assert torch.allclose(rows[:, 3], model.reconstruct(x), atol=1e-5)  # strength 0
    assert not torch.allclose(rows[:, 0], rows[:, -1])
    assert result.metrics["examples_with"] == int((data.splits["val"][1] == 3).sum())
    with pytest.raises(GenlabError, match="choose one of 0, 1"):
        run_task("edit", model, TaskInputs(x, None, None, data, {"attribute": "cat"}))
