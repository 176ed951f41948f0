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


@pytest.mark.parametrize("extra", [[], ["trainer.min_epochs=2"],
                                   ["trainer.check_val_every_n_epoch=3"]])
def test_a_max_steps_stop_mid_epoch_validates_and_writes_the_best_checkpoint(extra, compose,
                                                                            fake_root, tmp_path):
    """4 batches per epoch, max_steps=2: Lightning alone would stop without validating, so the
    monitored val/bpd would be missing and no best checkpoint written (also when min_epochs or
    check_val_every_n_epoch would otherwise hold the validation back)."""
    cfg = compose(["model=vae", "data=mnist", *SMALL_RUN, "trainer.max_steps=2",
                   "++trainer.limit_train_batches=4", *extra,
                   *fake_data_overrides("mnist", fake_root)])
    score = train(cfg)
    assert score is not None and 0 < score < 20
    (best,) = tmp_path.glob("checkpoints/best-*.ckpt")
    checkpoint = torch.load(best, weights_only=True)
    assert checkpoint["global_step"] == 2


def test_ema_copies_in_eval_mode_do_not_warn_but_other_eval_modules_do():
    import warnings

    from helpers.models import tiny_ddpm

    from genlab.run.train import expect_ema_in_eval_mode

    def warns(model) -> bool:
        in_eval = sum(not m.training for m in model.modules())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            expect_ema_in_eval_mode(model)
            warnings.warn(f"Found {in_eval} module(s) in eval mode at the start of training. "
                          "This may lead to unexpected behavior during training.", UserWarning,
                          stacklevel=1)
        return bool(caught)

    model = tiny_ddpm().train()
    assert not warns(model)  # only the EMA copy is in eval mode: intended
    model.net.conv_in.eval()
    assert warns(model)      # anything else still warns


def test_library_noise_is_silenced_and_nothing_else(caplog):
    import logging
    import warnings

    from genlab.run.loggers import quiet_library_noise

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_library_noise()
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, "
                      "TreeSpec) and treespec.is_leaf()` instead.", FutureWarning, stacklevel=1)
        warnings.warn("something that matters", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something that matters"]
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with caplog.at_level(logging.INFO):
        rank_zero.info("💡 Tip: For seamless cloud logging ... try installing [litlogger](...)")
        rank_zero.info("GPU available: False, used: False")
    assert "litlogger" not in caplog.text and "GPU available" in caplog.text


def test_the_progress_bar_shows_no_logger_version_and_wandb_gets_no_anonymous(monkeypatch,
                                                                              tmp_path):
    from lightning.pytorch.callbacks import RichProgressBar

    from genlab.callbacks import ProgressBar
    from genlab.run.loggers import WandbLogger

    monkeypatch.setattr(RichProgressBar, "get_metrics",
                        lambda self, trainer, module: {"v_num": "top3", "val/bpd": 1.0})
    assert ProgressBar().get_metrics(None, None) == {"val/bpd": 1.0}
    assert "anonymous" not in WandbLogger(offline=True, save_dir=str(tmp_path))._wandb_init


def test_progress_lines_give_the_share_done_and_the_time_left(caplog, monkeypatch):
    import logging

    from genlab import progress

    clock = iter([0.0, 20.0, 40.0, 41.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="genlab"):
        bar = progress.Progress("test/nll_nats_k100", 100, "decodes", interval=15)
        bar.update(25)   # t=20: a line
        bar.update(25)   # t=40: a line
        bar.close()      # t=41
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["test/nll_nats_k100: 25 of 100 decodes (25%), 20 s so far, about 60 s left",
                     "test/nll_nats_k100: 50 of 100 decodes (50%), 40 s so far, about 40 s left",
                     "test/nll_nats_k100: done in 41 s"]
