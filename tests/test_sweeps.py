"""Sweeps and clusters through Hydra's plugins, as a user runs them: Optuna searches
(hparams_search=...), the SLURM launcher's sbatch parameters, submitit's local launcher, and a
failing job that does not end the others."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from omegaconf import OmegaConf

# tiny trainings on the built-in digits: two steps, one validation batch, no test, no logger
TINY = ["data=digits", "trainer=cpu", "logger=none", "test=false", "trainer.max_steps=2",
        "+trainer.limit_val_batches=1", "~callbacks.progress_bar", "data.eval_batch_size=64"]


def train(*overrides: str, path_prefix: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}{os.pathsep}{env['PATH']}"
    return subprocess.run([sys.executable, str(REPO / "train.py"), "-m", *overrides], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_an_optuna_search_stores_its_study_survives_a_failed_trial_and_continues(tmp_path):
    """Four TPE trials (seeded), one of which asks for a batch larger than the data: it is FAIL
    in the study, the others complete, the returned best is the best completed value; running
    the sweep again in the same directory adds to the same study."""
    optuna = pytest.importorskip("optuna")
    sweep = tmp_path / "sweep"
    search = ["hparams_search=vae_optuna", "hydra.sweeper.params=null",
              "model.beta=interval(0.5,1.0)", "data.batch_size=choice(8,5000)",
              f"hydra.sweep.dir={sweep}", *TINY]
    result = train(*search, "hydra.sweeper.n_trials=4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "genlab: data.batch_size=5000 is more than the" in result.stderr

    study = optuna.load_study(study_name="vae_optuna", storage=f"sqlite:///{sweep}/optuna.db")
    states = [t.state.name for t in study.trials]
    assert sorted(states) == ["COMPLETE", "COMPLETE", "COMPLETE", "FAIL"], states
    failed = next(t for t in study.trials if t.state.name == "FAIL")
    assert failed.params["data.batch_size"] == 5000
    values = [t.value for t in study.trials if t.state.name == "COMPLETE"]
    assert all(math.isfinite(v) and 0 < v < 8 for v in values)  # val/bpd of an 8-bit image
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == pytest.approx(min(values))
    assert (sweep / "0" / "checkpoints").is_dir()

    result = train(*search, "hydra.sweeper.n_trials=1")
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="vae_optuna", storage=f"sqlite:///{sweep}/optuna.db")
    assert len(study.trials) == 5


@pytest.mark.slow
def test_a_failing_job_of_a_grid_sweep_does_not_end_the_others(tmp_path):
    result = train("data.batch_size=5000,8", f"hydra.sweep.dir={tmp_path}", *TINY)
    assert result.returncode == 1
    assert "genlab: data.batch_size=5000 is more than the" in result.stderr
    assert not (tmp_path / "0" / "checkpoints").exists()
    assert (tmp_path / "1" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_submitit_local_runs_a_two_point_multirun(tmp_path):
    pytest.importorskip("submitit")
    result = train("hydra/launcher=submitit_local", "model.beta=0.5,1.0",
                   f"hydra.sweep.dir={tmp_path}", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    for job in ("0", "1"):
        assert (tmp_path / job / "checkpoints" / "last.ckpt").is_file(), job
    assert list((tmp_path / ".submitit").glob("*/*_result.pkl"))


def test_the_slurm_launcher_submits_the_configured_resources(tmp_path):
    """hydra/launcher=slurm with a fake sbatch that keeps the submission script and refuses the
    job: the script asks for what the config says (one task per GPU, the account, the QoS, the
    time limit) and runs the job through srun."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    bin_dir, script = tmp_path / "bin", tmp_path / "submitted.sh"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {script}\nexit 1\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit looks for it
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    result = train("hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                   "hydra.launcher.account=lab", "hydra.launcher.qos=high",
                   "hydra.launcher.nodes=2", "hydra.launcher.gpus_per_node=4",
                   "hydra.launcher.timeout_min=600", "trainer=ddp", "trainer.devices=4",
                   "trainer.num_nodes=2", f"hydra.sweep.dir={tmp_path / 'sweep'}", "data=digits",
                   path_prefix=bin_dir)
    assert result.returncode != 0  # the fake sbatch refused it
    lines = set(script.read_text().splitlines())
    for expected in ("#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --qos=high",
                     "#SBATCH --nodes=2", "#SBATCH --gpus-per-node=4",
                     "#SBATCH --ntasks-per-node=4", "#SBATCH --time=600",
                     "#SBATCH --cpus-per-task=8", "#SBATCH --mem=64GB"):
        assert expected in lines, expected
    assert any(line.startswith("srun ") for line in lines)
