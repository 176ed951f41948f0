"""train.py: fit a model, test its best checkpoint, return the optimized metric."""

from __future__ import annotations

import errno
import logging
import re
import shlex
import sys
import warnings

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from genlab.callbacks.config import StoreConfig
from genlab.callbacks.interruption import StopOnSignal
from genlab.callbacks.randomness import RandomState
from genlab.callbacks.record import RunRecord
from genlab.callbacks.validation import ValidateAtMaxSteps
from genlab.config import register_resolvers
from genlab.errors import GenlabError
from genlab.nets.ema import EMA
from genlab.run.build import build_data_and_model
from genlab.run.checkpoint import AtomicCheckpointIO, newest_checkpoint, resume_checkpoint
from genlab.run.loggers import (
    build_loggers,
    close_wandb,
    continued_wandb_run,
    quiet_library_noise,
)
from genlab.run.validate import validate_train

register_resolvers()
log = logging.getLogger(__name__)


def expect_ema_in_eval_mode(model: torch.nn.Module) -> None:
    """Lightning warns "Found N module(s) in eval mode at the start of training" for any module
    in eval mode. The EMA copies of a network are in eval mode by design (they are only ever
    evaluated), so the warning is silenced when they are the only ones, and left alone when any
    other module is in eval mode."""
    in_eval = [m for m in model.modules() if not m.training]
    averaged = {id(m) for ema in model.modules() if isinstance(ema, EMA)
                for m in ema.averaged.modules()}
    if in_eval and all(id(m) in averaged for m in in_eval):
        warnings.filterwarnings("ignore", message=re.escape(
            f"Found {len(in_eval)} module(s) in eval mode at the start of training."))


def resume_command(cfg: DictConfig) -> str:
    """The command that continues this run: its command-line overrides and resume=<run dir>."""
    given = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    keep = [o for o in given if o.split("=")[0].lstrip("+~") not in ("resume", "ckpt_path")]
    return shlex.join(["python", sys.argv[0] or "train.py", *keep,
                       f"resume={cfg.paths.output_dir}"])


def no_space_left(err: BaseException | None) -> OSError | None:
    """The "no space left on device" error behind `err`, if any (torch.save reports a failed
    write of its file as a RuntimeError, with the OSError as its context)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def disk_full(cfg: DictConfig, err: OSError) -> str:
    """What to do when the disk filled up during training."""
    where = f"writing {err.filename} failed" if err.filename else "a write failed"
    why = err.strerror or "no space left on device"
    newest = newest_checkpoint(cfg.paths.output_dir)
    if newest is None:
        return (f"The disk is full: training stopped because {where} ({why}), before the first "
                f"checkpoint of {cfg.paths.output_dir} was written. Free some space and start "
                "the run again.")
    return (f"The disk is full: training stopped because {where} ({why}). The newest complete "
            f"checkpoint, {newest}, is intact: checkpoints are written to a temporary file that "
            "replaces the previous one only once complete. Free some space, then continue the "
            f"run with: {resume_command(cfg)}")


def ddp_strategy(cfg: DictConfig, model) -> dict:
    """`strategy=ddp` for a model whose backward passes leave some parameters without a gradient
    (a GAN: G in the discriminator step, D in the generator step) becomes Lightning's
    `ddp_find_unused_parameters_true`: plain DDP stops at the first such step ("parameters
    that were not used in producing the loss")."""
    if cfg.trainer.get("strategy") == "ddp" and model.leaves_parameters_unused:
        if rank_zero_only.rank == 0:
            log.info("%s leaves some parameters without gradients in a step: DDP looks for "
                     "them (strategy=ddp_find_unused_parameters_true)", type(model).__name__)
        return {"strategy": "ddp_find_unused_parameters_true"}
    return {}


def train(cfg: DictConfig) -> float | None:
    """Fit the model, test the best checkpoint, and return `optimized_metric` (null: the
    model's monitored metric; its best value when the checkpoint callback tracks it, else its
    last value), for Hydra's sweepers."""
    validate_train(cfg)
    quiet_library_noise()
    L.seed_everything(cfg.seed, workers=True)
    datamodule, model = build_data_and_model(cfg)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.compile:
        model.compile_networks()
    expect_ema_in_eval_mode(model)

    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks += [StoreConfig(cfg), RandomState(), ValidateAtMaxSteps(),
                  StopOnSignal(cfg.paths.output_dir, resume_command(cfg)),
                  RunRecord(cfg.paths.output_dir)]  # run.json: genlab-review
    failed = True
    try:
        ckpt_path = resume_checkpoint(cfg.get("ckpt_path"), cfg.get("resume"),
                                      cfg.paths.output_dir)
        loggers = build_loggers(cfg, continue_wandb=continued_wandb_run(ckpt_path,
                                                                        cfg.paths.output_dir))
        if not loggers:  # logger=none: there is nowhere to log learning rates to
            callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                              plugins=[AtomicCheckpointIO()], **ddp_strategy(cfg, model))
        # weights_only: Lightning's torch.load of ckpt_path (checked by validate_train with the
        # same setting) and of the best checkpoint never unpickles anything but tensors and
        # plain containers (genlab.run.checkpoint).
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except Exception as err:
            full = no_space_left(err)
            if full is None:
                raise
            raise GenlabError(disk_full(cfg, full)) from None
        metric = cfg.get("optimized_metric") or model.monitor
        checkpoint = trainer.checkpoint_callback
        score = None
        if checkpoint is not None and checkpoint.monitor == metric:
            score = checkpoint.best_model_score
        if score is None and metric is not None:
            score = trainer.callback_metrics.get(metric)
        if cfg.get("test") and not trainer.interrupted:
            best = checkpoint.best_model_path if checkpoint is not None else ""
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        failed = trainer.interrupted
        return None if score is None else float(score)
    finally:
        close_wandb(failed)
