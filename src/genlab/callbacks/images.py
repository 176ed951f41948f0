"""Sample and reconstruction grids each validation epoch: PNG files in the run directory and
images in W&B."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from genlab.checks import Range
from genlab.files.grid import make_grid, save_png


def log_image(trainer: L.Trainer, key: str, array: np.ndarray, caption: str) -> None:
    # Lightning logs metrics at the count of training batches, not at global_step (which
    # counts optimizer steps: n_critic + 1 per batch for a GAN); images go on the same axis.
    step = trainer.fit_loop.epoch_loop._batches_that_stepped
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key, [array], step=step, caption=[caption])


class _GridCallback(L.Callback):
    key = "grid"

    def __init__(self, dirpath: str, n: Annotated[int, Range(1)] = 64,
                 every_n_epochs: Annotated[int, Range(1)] = 1):
        self.dirpath, self.n, self.every_n_epochs = Path(dirpath), n, every_n_epochs

    def make(self, trainer: L.Trainer, model) -> torch.Tensor | None:
        raise NotImplementedError

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: L.Trainer, model) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        with torch.no_grad():
            images = self.make(trainer, model)
        if images is None:
            return
        grid = make_grid(images)
        caption = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
        save_png(grid, self.dirpath / f"{self.key}_epoch{trainer.current_epoch:04d}.png")
        save_png(grid, self.dirpath / f"{self.key}.png")
        log_image(trainer, self.key, grid, caption)


class SampleGrid(_GridCallback):
    """`n` samples from the same noise every time (a generator seeded with `seed`), so the
    grids show the model's progress on fixed latents. Saved as `samples.png` (the latest) and
    `samples_epochNNNN.png`."""

    key = "samples"

    def __init__(self, dirpath: str, n: Annotated[int, Range(1)] = 64,
                 every_n_epochs: Annotated[int, Range(1)] = 1, seed: Annotated[int, Range(0)] = 0):
        super().__init__(dirpath, n, every_n_epochs)
        self.seed = seed

    def make(self, trainer, model):
        generator = torch.Generator(device=model.device).manual_seed(self.seed)
        return model.sample(self.n, labels=model.grid_labels(self.n), generator=generator)


class ReconstructionGrid(_GridCallback):
    """For models that reconstruct: the first n/2 validation images, each followed by its
    reconstruction. Saved as `reconstructions.png`."""

    key = "reconstructions"

    def __init__(self, dirpath: str, n: Annotated[int, Range(2)] = 64,
                 every_n_epochs: Annotated[int, Range(1)] = 1):
        super().__init__(dirpath, n, every_n_epochs)

    def make(self, trainer, model):
        if not hasattr(model, "reconstruct") or trainer.datamodule is None:
            return None
        images, labels = trainer.datamodule.splits["val"]
        half = self.n // 2
        x = trainer.datamodule.to_model_input(images[:half].to(model.device), train=False)
        labels = labels[:half].to(model.device) if model.conditional else None
        pairs = torch.stack([x, model.reconstruct(x, labels)], dim=1)
        return pairs.flatten(0, 1)
