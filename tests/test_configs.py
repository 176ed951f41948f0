"""Every model x dataset config composes and takes a real training step through train()."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import REPO, real_data_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import MissingMandatoryValue

from genlab.errors import GenlabError
from genlab.run import train

MODELS = sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml"))
DATASETS = sorted(p.stem for p in (REPO / "conf" / "data").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))

# a real step, kept small: one training batch, one validation batch, tiny grids, no logger
SMALL_RUN = ["trainer=cpu", "logger=none", "test=false", "trainer.max_steps=1",
             "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1",
             "callbacks.sample_grid.n=4", "callbacks.reconstruction_grid.n=4",
             "~callbacks.progress_bar", "~callbacks.model_summary",
             "+trainer.num_sanity_val_steps=0",
             "+trainer.enable_progress_bar=false", "data.batch_size=8", "data.eval_batch_size=8"]


def fake_data_overrides(dataset: str, root: Path) -> list[str]:
    if dataset == "digits":
        return ["data.val_size=16"]
    overrides = [f"data.root={root}", f"data.cache_dir={root / 'cache'}", "data.download=false",
                 "data.verify=false", "data.val_size=8"]
    if dataset == "image_folder":
        overrides += [f"data.path={root / 'images.tar.gz'}", "data.test_size=4"]
    return overrides


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("model", MODELS)
def test_model_dataset_composes_and_takes_a_training_step(model, dataset, compose, fake_root,
                                                           tmp_path):
    cfg = compose([f"model={model}", f"data={dataset}", *SMALL_RUN,
                   *fake_data_overrides(dataset, fake_root)])
    score = train(cfg)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "samples" / "samples.png").is_file()
    if score is not None:
        assert math.isfinite(score)


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_real_training_steps(dataset, compose, tmp_path):
    root = real_data_dir("MNIST" if dataset == "mnist" else "FashionMNIST")
    cfg = compose(["model=vae", f"data={dataset}", f"data.root={root}", *SMALL_RUN,
                   "trainer.max_steps=3", "++trainer.limit_train_batches=3", "data.val_size=100"])
    assert 0 < train(cfg) < 10  # val/bpd of a barely trained model on real digits


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiments_compose(experiment, compose):
    cfg = compose([f"experiment={experiment}"])
    assert cfg.model._target_ and cfg.data.name


def test_precision_and_memory_format_options_run(compose, fake_root, tmp_path):
    cfg = compose(["model=vae", "data=cifar10", "precision=bf16", "channels_last=true", *SMALL_RUN,
                   *fake_data_overrides("cifar10", fake_root)])
    assert cfg.trainer.precision == "bf16-mixed"
    assert math.isfinite(train(cfg))


def test_unknown_choices_and_keys_are_rejected(compose):
    with pytest.raises(MissingConfigException, match="Available options in 'model'"):
        compose(["model=transformer"])
    with pytest.raises(ConfigCompositionException, match="latent_size"):
        compose(["model.latent_size=3"])
    with pytest.raises(MissingMandatoryValue):
        compose(["data=image_folder"]).data.path  # noqa: B018 - unset ??? value


def test_conditional_model_on_unlabelled_data_is_explained(compose, fake_root):
    cfg = compose(["model=vae", "model.conditional=true", "data=celeba", *SMALL_RUN,
                   *fake_data_overrides("celeba", fake_root)])
    with pytest.raises(GenlabError, match="labelled"):
        train(cfg)


def test_image_folder_classes_reach_a_conditional_model(compose, fake_root, tmp_path):
    cfg = compose(["model=vae", "model.conditional=true", "data=image_folder", *SMALL_RUN,
                   *fake_data_overrides("image_folder", fake_root)])
    train(cfg)
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["genlab_config"]["data"]["num_classes"] == 2


def test_trainer_options_named_in_the_readme_need_no_plus(compose):
    cfg = compose(["trainer.max_time=00:00:10:00", "trainer.max_epochs=50", "trainer=cpu"])
    assert cfg.trainer.max_time == "00:00:10:00" and cfg.trainer.min_epochs is None
