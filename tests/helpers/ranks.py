"""A callback that writes, from every DDP rank, what that rank saw and ended with: the sum of the
validation images it was given (ranks given the same images would write the same sum) and its
epoch-level validation metrics (synchronised across ranks when every rank holds the same values).
For the DDP tests: train.py ... +callbacks.ranks._target_=helpers.ranks.RecordRanks
+callbacks.ranks.folder=<dir>, with tests/ on PYTHONPATH."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L


class RecordRanks(L.Callback):
    def __init__(self, folder: str):
        self.folder = Path(folder)
        self.image_sum = 0.0

    def on_validation_batch_start(self, trainer: L.Trainer, model, batch, *args) -> None:
        if not trainer.sanity_checking:
            self.image_sum += float(batch[0].double().sum())

    def on_fit_end(self, trainer: L.Trainer, model) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                   if k.startswith("val/")}
        record = {"world_size": trainer.world_size, "image_sum": self.image_sum,
                  "metrics": metrics}
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
