"""train.py and evaluate.py run as a user runs them: as commands, in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO

from genlab.metrics.inception import WEIGHTS_ENV

SHARED_WEIGHTS = REPO.parent / "shared" / "weights" / "pt_inception-2015-12-05-fc-zeroed.pth"

pytestmark = pytest.mark.slow


def run(script: str, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run([sys.executable, str(REPO / script), *overrides], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def assert_user_error(result: subprocess.CompletedProcess, *phrases: str) -> None:
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr[-3000:]


QUICK = ["experiment=quickstart", "trainer.max_epochs=2", "model.test_importance_samples=10",
         "~callbacks.progress_bar"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A quickstart run trained by train.py, shared by the tests below."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    assert_ok(run("train.py", *QUICK, f"hydra.run.dir={run_dir}"))
    return run_dir


def test_train_evaluate_and_resume_like_a_user(trained_run, tmp_path):
    run_dir = trained_run
    last = run_dir / "checkpoints" / "last.ckpt"
    assert last.is_file() and list(run_dir.glob("checkpoints/best-*.ckpt"))
    assert (run_dir / "samples" / "samples.png").is_file()
    assert (run_dir / "samples" / "reconstructions.png").is_file()
    (wandb_run,) = run_dir.glob("wandb/offline-run-*")
    assert list(wandb_run.glob("files/media/images/samples_*.png"))
    assert list(wandb_run.glob("*.wandb"))

    eval_dir = tmp_path / "eval"
    assert_ok(run("evaluate.py", f"ckpt_path={last}", "trainer=cpu", "logger=csv",
                  "fid.enabled=false", "tasks=[reconstruct,traversal]",
                  f"hydra.run.dir={eval_dir}"))
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["ckpt_path"] == str(last)
    assert 0 < metrics["test/bpd"] < 10 and metrics["test/nll_nats"] > 0
    assert metrics["test/nll_nats"] <= -metrics["test/elbo"] + 5  # IWAE(10) roughly <= -ELBO
    assert "fid" not in metrics
    for png in ("samples.png", "reconstruct.png", "traversal.png"):
        assert (eval_dir / png).is_file()

    step = torch.load(last, weights_only=False)["global_step"]
    assert_ok(run("train.py", *QUICK, "trainer.max_epochs=3", f"ckpt_path={last}", "test=false",
                  "logger=none", f"hydra.run.dir={tmp_path / 'resumed'}"))
    resumed = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=False)
    assert resumed["epoch"] == 2 and resumed["global_step"] == step * 3 // 2


def test_evaluate_measures_sample_quality(trained_run, tmp_path):
    weights = os.environ.get(WEIGHTS_ENV) or SHARED_WEIGHTS
    if not os.path.isfile(weights):
        pytest.skip(f"no FID Inception weights: set {WEIGHTS_ENV} to run this test")
    eval_dir = tmp_path / "eval"
    assert_ok(run("evaluate.py", f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}",
                  "trainer=cpu", "logger=none", f"fid.weights={weights}", "fid.num_samples=20",
                  "fid.reference_num=20", "fid.kid_subset_size=10", "fid.kid_subsets=5",
                  f"hydra.run.dir={eval_dir}"))
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert metrics["fid"] > 0 and metrics["fid_classifier"] > 0 and metrics["bpd"] > 0
    assert metrics["n_samples"] == 20 and metrics["reference"] == "digits:train"
    with np.load(eval_dir / "samples.npz") as samples:
        assert samples["images"].shape == (20, 32, 32, 1)
        assert samples["images"].dtype == np.uint8


def test_bad_input_gets_a_one_paragraph_error(tmp_path):
    assert_user_error(run("evaluate.py", f"ckpt_path={tmp_path / 'missing.ckpt'}"),
                      "does not exist")
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    assert_user_error(run("evaluate.py", f"ckpt_path={corrupt}"), "corrupt or truncated")
    assert_user_error(run("train.py", "data=mnist", "data.name=imagenet",
                          f"hydra.run.dir={tmp_path / 'bad'}"), "data.name='imagenet' is not valid")
    wrong_group = run("train.py", "model=transformer")
    assert wrong_group.returncode == 1 and "Traceback" not in wrong_group.stderr
    assert "Available options in 'model'" in wrong_group.stderr
    assert_user_error(run("train.py", "data=image_folder", f"hydra.run.dir={tmp_path / 'if'}"),
                      "data.path must be set")
    missing = run("train.py", "data=svhn", "data.download=false", "logger=none",
                  f"paths.data_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'svhn'}")
    assert_user_error(missing, str(tmp_path / "svhn"), "train_32x32.mat")


def test_ddp_on_two_cpu_processes_shards_the_batches(tmp_path):
    """trainer=ddp with 2 ranks: each epoch takes half the steps of a single process."""
    run_dir = tmp_path / "ddp"
    assert_ok(run("train.py", *QUICK, "trainer.max_epochs=1", "trainer=ddp",
                  "trainer.accelerator=cpu", "trainer.devices=2", "logger=none", "test=false",
                  f"hydra.run.dir={run_dir}"))
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == (1497 // 2) // 64  # digits: 1497 training images
