"""Every model x dataset config composes and takes a real training step through train(): by
default every dataset once and every model on each image shape (1 and 3 channels); the full
matrix is marked slow. Configs write where the run layout says."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import REPO, real_data_dir
from helpers.runs import SMALL_RUN, fake_data_overrides
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import open_dict
from omegaconf.errors import MissingMandatoryValue

from genlab.errors import GenlabError
from genlab.models.base import GenerativeModule
from genlab.run import train
from genlab.run.build import build
from genlab.run.layout import RunLayout

MODELS = sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml"))
DATASETS = sorted(p.stem for p in (REPO / "conf" / "data").glob("[!_]*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
SHAPES = {"mnist": "1x32x32", "cifar10": "3x32x32"}  # one dataset of each image shape
PAIRS = sorted({("vae", d) for d in DATASETS} | {(m, d) for m in MODELS for d in SHAPES})
SLOW_PAIRS = [(m, d) for m in MODELS for d in DATASETS if (m, d) not in PAIRS]


def take_a_training_step(model: str, dataset: str, compose, fake_root, tmp_path) -> None:
    cfg = compose([f"model={model}", f"data={dataset}", *SMALL_RUN,
                   *fake_data_overrides(dataset, fake_root)])
    score = train(cfg)
    layout = RunLayout(tmp_path)
    assert layout.last_checkpoint.is_file() and (layout.samples / "samples.png").is_file()
    if score is not None:
        assert math.isfinite(score)


@pytest.mark.parametrize("model, dataset", PAIRS)
def test_model_dataset_composes_and_takes_a_training_step(model, dataset, compose, fake_root,
                                                           tmp_path):
    take_a_training_step(model, dataset, compose, fake_root, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("model, dataset", SLOW_PAIRS)
def test_the_rest_of_the_model_dataset_matrix(model, dataset, compose, fake_root, tmp_path):
    take_a_training_step(model, dataset, compose, fake_root, tmp_path)


def test_configs_write_where_the_run_layout_says(compose, tmp_path):
    layout = RunLayout(tmp_path)
    cfg = compose(["logger=csv"])
    assert Path(cfg.callbacks.model_checkpoint.dirpath) == layout.checkpoints
    assert Path(cfg.callbacks.sample_grid.dirpath) == layout.samples
    assert Path(cfg.logger.csv.save_dir) / cfg.logger.csv.name == layout.csv
    assert Path(compose([]).logger.wandb.save_dir) / "wandb" == layout.wandb


@pytest.mark.parametrize("config_name", ["train", "evaluate"])
def test_train_and_evaluate_runs_live_in_separate_folders(config_name):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name, overrides=["ckpt_path=x"] * (config_name == "evaluate"),
                            return_hydra_config=True)
    assert f"/outputs/{config_name}/runs/" in cfg.hydra.run.dir
    assert f"/outputs/{config_name}/multiruns/" in cfg.hydra.sweep.dir


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_real_training_steps(dataset, compose, tmp_path):
    root = real_data_dir("MNIST" if dataset == "mnist" else "FashionMNIST")
    cfg = compose(["model=vae", f"data={dataset}", f"data.root={root}", *SMALL_RUN,
                   "trainer.max_steps=3", "++trainer.limit_train_batches=3", "data.val_size=100"])
    assert 0 < train(cfg) < 10  # val/bpd of a barely trained model on real digits


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiments_compose_and_build_their_model(experiment, compose):
    """A recipe with a wrong or misspelt model key fails here, not after hours on a GPU."""
    cfg = compose([f"experiment={experiment}"])
    assert cfg.data.name
    with open_dict(cfg):
        cfg.data.num_classes = cfg.data.num_classes or 0
    model = build(cfg.model)
    assert isinstance(model, GenerativeModule)
    assert model.image_shape == (cfg.data.channels, cfg.data.image_size, cfg.data.image_size)


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
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["genlab_config"]["data"]["num_classes"] == 2


def test_trainer_options_named_in_the_readme_need_no_plus(compose):
    cfg = compose(["trainer.max_time=00:00:10:00", "trainer.max_epochs=50", "trainer=cpu"])
    assert cfg.trainer.max_time == "00:00:10:00" and cfg.trainer.min_epochs is None


def test_optimized_metric_is_what_train_returns(compose, fake_root):
    """A sweeper optimises `optimized_metric`, independent of the checkpoint monitor."""
    gan = ["model=gan", "data=mnist", *SMALL_RUN, *fake_data_overrides("mnist", fake_root)]
    assert train(compose(gan)) is None  # a GAN monitors nothing by default
    assert math.isfinite(train(compose([*gan, "optimized_metric=train/d_loss"])))
    vae = ["model=vae", "data=mnist", *SMALL_RUN, *fake_data_overrides("mnist", fake_root)]
    assert train(compose([*vae, "optimized_metric=val/elbo"])) < 0 < train(compose(vae))
