"""Two-process DDP end to end on the CPU (gloo), through train.py as a user runs it
(`trainer=ddp trainer.accelerator=cpu trainer.devices=2`), for the VAE, the DDPM and the GAN:
one run directory, one W&B run, one set of checkpoints, validation images sharded across the
ranks and epoch metrics synchronised across them; and the FID callback under two ranks logs the
FID that one process computes from the same samples."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import real_weights
from helpers.runs import run_train
from omegaconf import OmegaConf

# one epoch of two batches of 8 digits per rank; 32 validation images: 16 per rank, 2 batches
DDP_RUN = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data=digits",
           "data.batch_size=8", "data.val_size=32", "data.eval_batch_size=8", "test=false",
           "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
           "+trainer.limit_val_batches=2", "+trainer.num_sanity_val_steps=0",
           "~callbacks.progress_bar", "~callbacks.model_summary",
           "+trainer.enable_progress_bar=false", "callbacks.sample_grid.n=4",
           "callbacks.reconstruction_grid.n=4", "logger=[wandb,csv]",
           "+callbacks.ranks._target_=helpers.ranks.RecordRanks"]
MODEL = {"vae": ["model=vae"], "gan": ["model=gan"],
         "ddpm": ["model=ddpm", "model.sampling_steps=5"]}
# the VAE run also measures FID at the end of its epoch: 5 samples per rank
FID = {"num_samples": 10, "reference_num": 20, "batch_size": 5, "kid_subsets": 2,
       "kid_subset_size": 5}


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    """ddp_runs(model) -> the folder of that model's two-process run (trained at the first call):
    the run directory `run/`, the ranks' records `ranks/`, the FID cache `cache/`."""
    folders = {}

    def train(model: str) -> Path:
        if model not in folders:
            folder = tmp_path_factory.mktemp(f"ddp-{model}")
            overrides = [*DDP_RUN, *MODEL[model], f"hydra.run.dir={folder / 'run'}",
                         f"+callbacks.ranks.folder={folder / 'ranks'}"]
            if model == "vae":
                overrides += ["callbacks=fid", "callbacks.fid.every_n_epochs=1",
                              f"callbacks.fid.weights={real_weights()}",
                              f"callbacks.fid.cache_dir={folder / 'cache'}",
                              *(f"callbacks.fid.{k}={v}" for k, v in FID.items())]
            result = run_train(*overrides)
            assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
            folders[model] = folder
        return folders[model]

    return train


@pytest.mark.slow
@pytest.mark.parametrize("model", ["vae", "ddpm", "gan"])
def test_two_processes_write_one_run_directory_one_wandb_run_and_one_set_of_checkpoints(
        ddp_runs, model):
    folder = ddp_runs(model)
    assert sorted(p.name for p in folder.iterdir()) == ["cache", "ranks", "run"][model != "vae":]
    run = folder / "run"
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert len(list(folder.rglob("run.json"))) == 1
    offline_runs = [p for p in folder.rglob("offline-run-*") if p.is_dir()]
    assert len(offline_runs) == 1, offline_runs  # rank 0 logs; rank 1 has no W&B run
    assert len(list(folder.rglob("metrics.csv"))) == 1
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints[-1] == "last.ckpt" and len(checkpoints) == 2, checkpoints
    assert checkpoints[0].startswith("best-"), checkpoints  # and no temporary file left
    for name in checkpoints:
        state = torch.load(run / "checkpoints" / name, map_location="cpu", weights_only=True)
        assert state["global_step"] == 2 * (2 if model == "gan" else 1)  # two batches per rank


@pytest.mark.slow
@pytest.mark.parametrize("model", ["vae", "ddpm", "gan"])
def test_each_rank_validates_its_own_images_and_every_rank_logs_the_synchronised_means(
        ddp_runs, model):
    """The ranks are given different validation images (their sums differ), yet end with the
    same epoch metrics: each one is the mean over both ranks (sync_dist), which rank 0 logs."""
    folder = ddp_runs(model)
    ranks = [json.loads((folder / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["image_sum"] != ranks[1]["image_sum"]
    metrics = ranks[0]["metrics"]
    assert metrics and metrics.keys() == ranks[1]["metrics"].keys()
    for key, value in metrics.items():
        assert ranks[1]["metrics"][key] == pytest.approx(value, rel=1e-6), key
    with open(next(folder.rglob("metrics.csv"))) as f:
        logged = {k: float(v) for row in csv.DictReader(f) for k, v in row.items()
                  if k in metrics and v}
    assert logged == pytest.approx(metrics, rel=1e-6)


@pytest.mark.slow
def test_val_fid_under_two_ranks_is_the_fid_of_both_ranks_samples(ddp_runs):
    """Rank r draws num_samples / 2 samples with seed r; the logged val/fid equals the FID that
    one process computes from those same samples (the final weights are the ones the callback
    sampled: it ran after the last training step)."""
    from genlab.callbacks.config import CONFIG_KEY
    from genlab.metrics.fid import FeatureStats
    from genlab.metrics.inception import FeatureExtractor
    from genlab.metrics.protocol import model_samples, reference_statistics
    from genlab.metrics.reference import InceptionStats, compare
    from genlab.run.build import build_data_and_model

    folder = ddp_runs("vae")
    checkpoint = torch.load(folder / "run" / "checkpoints" / "last.ckpt", map_location="cpu",
                            weights_only=True)
    datamodule, model = build_data_and_model(OmegaConf.create(checkpoint[CONFIG_KEY]))
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    extractor = FeatureExtractor(real_weights())
    per_rank = FID["num_samples"] // 2
    features = torch.cat([pool for rank in (0, 1) for pool, _ in extractor.iter_features(
        model_samples(model, per_rank, FID["batch_size"], seed=rank, offset=rank * per_rank),
        total=per_rank)])
    moments = FeatureStats().update(features)
    samples = InceptionStats(mu=moments.mean, sigma=moments.cov, n=moments.n,
                             features=features.numpy())
    images, _ = datamodule.reference_images("train")
    reference = reference_statistics(datamodule.name, "train", images, FID["reference_num"],
                                     extractor, folder / "cache")
    expected = compare(samples, reference, pr=False, kid_subsets=FID["kid_subsets"],
                       kid_subset_size=FID["kid_subset_size"])
    ranks = [json.loads((folder / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["metrics"]["val/fid"] == pytest.approx(expected["fid"], rel=1e-4)
    assert ranks[0]["metrics"]["val/kid"] == pytest.approx(expected["kid_mean"], rel=1e-3,
                                                           abs=1e-6)
