"""Short real training runs in the tests: config overrides, and a loader and a Trainer for
models trained directly in Python."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

# a real step, kept small: one training batch, one validation batch, tiny grids, no logger
SMALL_RUN = ["trainer=cpu", "logger=none", "test=false", "trainer.max_steps=1",
             "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1",
             "callbacks.sample_grid.n=4", "callbacks.reconstruction_grid.n=4",
             "callbacks.long_run_grid.n=4", "callbacks.long_run_grid.steps=3",
             "~callbacks.progress_bar", "~callbacks.model_summary",
             "+trainer.num_sanity_val_steps=0",
             "+trainer.enable_progress_bar=false", "data.batch_size=8", "data.eval_batch_size=8"]


def _train_process(overrides: tuple[str, ...]) -> dict:
    tests = Path(__file__).resolve().parents[1]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tests), os.environ.get("PYTHONPATH")]))}
    return {"args": [sys.executable, str(tests.parent / "train.py"), *overrides],
            "cwd": tests.parent, "env": env}


def run_train(*overrides: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """python train.py <overrides> in the repository, W&B offline, with tests/ on PYTHONPATH so
    that the config can name the helpers' callbacks (helpers.kill.KillAt)."""
    return subprocess.run(**_train_process(overrides), capture_output=True, text=True,
                          timeout=timeout)


def start_train(*overrides: str, log: Path) -> subprocess.Popen:
    """run_train, started in the background (its output into the file `log`): wait() for it."""
    with open(log, "w") as out:
        return subprocess.Popen(**_train_process(overrides), stdout=out,
                                stderr=subprocess.STDOUT, text=True)


def fake_data_overrides(dataset: str, root: Path) -> list[str]:
    if dataset == "digits":
        return ["data.val_size=16"]
    overrides = [f"data.root={root}", f"data.cache_dir={root / 'cache'}", "data.download=false",
                 "data.verify=false", "data.val_size=8"]
    if dataset == "image_folder":
        overrides += [f"data.path={root / 'images.tar.gz'}", "data.test_size=4"]
    return overrides


def random_images(n: int = 16, seed: int = 0, classes: int = 3) -> DataLoader:
    """n seeded 1x16x16 images in [-1, 1] with labels in 0..classes-1, in batches of 8."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 16, 16, generator=g) * 2 - 1
    y = torch.randint(0, classes, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False)


def cpu_trainer(**options) -> L.Trainer:
    """A quiet one-epoch CPU Trainer without validation, logger or checkpoints."""
    settings = dict(accelerator="cpu", logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, max_epochs=1,
                    limit_val_batches=0)
    settings.update(options)
    return L.Trainer(**settings)
