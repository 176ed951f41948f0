"""The progress bar of train.py and evaluate.py: Lightning's rich bar without the logger's
version number (`v_num`: a W&B run id such as `top3`, which says nothing about progress)."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar


class ProgressBar(RichProgressBar):
    def get_metrics(self, trainer, pl_module):
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics
