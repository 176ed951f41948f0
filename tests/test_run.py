"""What train() and evaluate() guarantee around a run: NaN losses stop it, crashes close the
W&B run, checkpoints of earlier releases still evaluate."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO
from helpers.runs import SMALL_RUN, fake_data_overrides

from genlab.errors import GenlabError
from genlab.models.vae import VAE
from genlab.run import evaluate, train


def test_nan_loss_stops_training_naming_the_step(compose, fake_root, monkeypatch):
    real_step = VAE.training_step

    def nan_at_step_two(self, batch, batch_idx):
        loss = real_step(self, batch, batch_idx)
        return loss * float("nan") if self.global_step == 2 else loss

    monkeypatch.setattr(VAE, "training_step", nan_at_step_two)
    cfg = compose(["model=vae", "data=mnist", *SMALL_RUN, "trainer.max_steps=5",
                   "++trainer.limit_train_batches=5", *fake_data_overrides("mnist", fake_root)])
    with pytest.raises(GenlabError, match="became nan in batch 2 of epoch 0"):
        train(cfg)


def test_a_crash_still_closes_the_wandb_run(compose, fake_root, tmp_path, monkeypatch):
    import wandb

    def crash(self, batch, batch_idx):
        raise RuntimeError("boom")

    monkeypatch.setattr(VAE, "training_step", crash)
    overrides = [o for o in SMALL_RUN if o != "logger=none"]
    cfg = compose(["model=vae", "data=mnist", *overrides, *fake_data_overrides("mnist", fake_root)])
    assert cfg.logger.wandb.offline
    with pytest.raises(RuntimeError, match="boom"):
        train(cfg)
    assert wandb.run is None
    (run_dir,) = tmp_path.glob("wandb/offline-run-*")
    assert list(run_dir.glob("*.wandb"))


@pytest.mark.slow
def test_compiled_networks_match_eager_and_keep_checkpoint_keys():
    model = VAE((1, 32, 32), channels=(8, 16), latent_dim=2).eval()
    keys = set(model.state_dict())
    eager = model.sample(2, generator=torch.Generator().manual_seed(0))
    model.compile_networks()
    assert set(model.state_dict()) == keys
    compiled = model.sample(2, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(eager, compiled, atol=1e-5)


@pytest.mark.parametrize("family, tasks, overrides", [
    ("vae", ["reconstruct", "interpolate", "traversal"], ["+model.test_importance_samples=10"]),
    ("ddpm", ["inpaint", "outpaint", "denoise", "interpolate"], []),
    ("gan", ["interpolate"], []),
])
def test_checkpoints_written_before_the_layout_change_still_evaluate(family, tasks, overrides,
                                                                      compose, tmp_path):
    ckpt = REPO / "tests" / "fixtures" / "checkpoints" / f"{family}-53273f2.ckpt"
    metrics = evaluate(compose([f"ckpt_path={ckpt}", "trainer=cpu", "logger=none",
                                f"tasks=[{','.join(tasks)}]", "sample_grid=4", "fid.enabled=false",
                                "+trainer.limit_test_batches=1",
                                "+trainer.enable_progress_bar=false", *overrides],
                               config_name="evaluate"))
    assert metrics["split"] == "test" and any(key.startswith("test/") for key in metrics)
    for task in tasks:
        assert (tmp_path / f"{task}.png").is_file()
    assert (tmp_path / "samples.png").is_file() and (tmp_path / "metrics.json").is_file()
