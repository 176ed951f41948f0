"""train.py and evaluate.py run as a user runs them: as commands, in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, real_weights

from genlab.metrics.inception import WEIGHTS_ENV

pytestmark = pytest.mark.slow


def run(script: str, *overrides: str, cwd=REPO, env=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env or {})}
    return subprocess.run([sys.executable, str(REPO / script), *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


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
    evaluated = run("evaluate.py", f"ckpt_path={last}", "trainer=cpu", "logger=csv",
                    "fid.enabled=false", "tasks=[reconstruct,traversal]",
                    "+model.test_importance_samples=10", f"hydra.run.dir={eval_dir}")
    assert_ok(evaluated)
    assert "model.bound_images=null" in evaluated.stdout + evaluated.stderr  # every test image
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["ckpt_path"] == str(last)
    assert 0 < metrics["test/bpd"] < 10 and metrics["test/nll_nats_k10"] > 0
    assert metrics["test/nll_nats_k10"] <= -metrics["test/elbo"] + 5  # IWAE(10) roughly <= -ELBO
    assert "fid" not in metrics
    for png in ("samples.png", "reconstruct.png", "traversal.png"):
        assert (eval_dir / png).is_file()

    step = torch.load(last, weights_only=True)["global_step"]
    assert_ok(run("train.py", *QUICK, "trainer.max_epochs=3", f"ckpt_path={last}", "test=false",
                  "logger=none", f"hydra.run.dir={tmp_path / 'resumed'}"))
    resumed = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 2 and resumed["global_step"] == step * 3 // 2


def test_evaluate_measures_sample_quality(trained_run, tmp_path):
    """With the weights named as the README says, by a path relative to the repository, from
    another working directory."""
    weights = real_weights()
    eval_dir = tmp_path / "eval"
    relative = os.path.relpath(os.path.abspath(weights), REPO)  # e.g. ../shared/weights/...
    assert_ok(run("evaluate.py", f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}",
                  "trainer=cpu", "logger=none", "fid.num_samples=20", "fid.reference_num=20",
                  "fid.kid_subset_size=10", "fid.kid_subsets=5",
                  "+model.test_importance_samples=10", f"hydra.run.dir={eval_dir}",
                  cwd=tmp_path, env={WEIGHTS_ENV: relative}))
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert metrics["fid"] > 0 and metrics["fid_classifier"] > 0 and metrics["bpd"] > 0
    assert metrics["n_samples"] == 20 and metrics["reference"] == "digits:train"
    with np.load(eval_dir / "samples.npz") as samples:
        assert samples["images"].shape == (20, 32, 32, 1)
        assert samples["images"].dtype == np.uint8


def test_ddp_on_two_cpu_processes_shards_the_batches(tmp_path):
    """trainer=ddp with 2 ranks: each epoch takes half the steps of a single process."""
    run_dir = tmp_path / "ddp"
    assert_ok(run("train.py", *QUICK, "trainer.max_epochs=1", "trainer=ddp",
                  "trainer.accelerator=cpu", "trainer.devices=2", "logger=none", "test=false",
                  f"hydra.run.dir={run_dir}"))
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == (1497 // 2) // 64  # digits: 1497 training images
