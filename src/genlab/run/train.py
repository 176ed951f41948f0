"""train.py: fit a model, test its best checkpoint, return the optimized metric."""

from __future__ import annotations

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig

from genlab.callbacks.config import StoreConfig
from genlab.callbacks.record import RunRecord
from genlab.config import register_resolvers
from genlab.run.build import build_data_and_model
from genlab.run.loggers import build_loggers, close_wandb

register_resolvers()


def train(cfg: DictConfig) -> float | None:
    """Fit the model, test the best checkpoint, and return `optimized_metric` (null: the
    model's monitored metric; its best value when the checkpoint callback tracks it, else its
    last value), for Hydra's sweepers."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule, model = build_data_and_model(cfg)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.compile:
        model.compile_networks()

    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks += [StoreConfig(cfg), RunRecord(cfg.paths.output_dir)]  # run.json: genlab-review
    failed = True
    try:
        loggers = build_loggers(cfg)
        if not loggers:  # logger=none: there is nowhere to log learning rates to
            callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metric = cfg.get("optimized_metric") or model.monitor
        checkpoint = trainer.checkpoint_callback
        score = None
        if checkpoint is not None and checkpoint.monitor == metric:
            score = checkpoint.best_model_score
        if score is None and metric is not None:
            score = trainer.callback_metrics.get(metric)
        if cfg.get("test") and not trainer.interrupted:
            best = checkpoint.best_model_path if checkpoint is not None else ""
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
        failed = trainer.interrupted
        return None if score is None else float(score)
    finally:
        close_wandb(failed)
