"""The loggers of a run (W&B, CSV), closing the W&B run whatever happens, and the library
messages that only alarm a user (`quiet_library_noise`)."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch import loggers as pl_loggers
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf, open_dict


class WandbLogger(pl_loggers.WandbLogger):
    """Lightning's W&B logger without its `anonymous` argument: Lightning passes it to
    `wandb.init` even when unset, and W&B then warns on every run that the deprecated setting
    "has no effect"."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)


class _DropLitLoggerTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


def quiet_library_noise() -> None:
    """Silence library messages that say nothing about the run (each with the reason), leaving
    every other warning alone. The "module(s) in eval mode" warning is handled where the model
    is known (`genlab.run.train`): it is silenced only when the eval-mode modules are EMA
    copies."""
    # Lightning 2.6 uses torch's LeafSpec, which torch >= 2.9 deprecates: a FutureWarning on
    # every run about Lightning's own code, with nothing for a user to change.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    # Lightning's advertisement for its litlogger package, printed at every Trainer start.
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLitLoggerTip) for f in logger.filters):
            logger.addFilter(_DropLitLoggerTip())


def _hydra_choice(group: str) -> str | None:
    return HydraConfig.get().runtime.choices.get(group) if HydraConfig.initialized() else None


def build_loggers(cfg: DictConfig) -> list[Logger]:
    """Instantiate cfg.logger, filling the W&B run name, group and tags when left null."""
    loggers = []
    for name, logger_cfg in (cfg.get("logger") or {}).items():
        if name == "wandb":
            with open_dict(logger_cfg):
                hydra = HydraConfig.get() if HydraConfig.initialized() else None
                if logger_cfg.get("name") is None:
                    logger_cfg.name = (hydra and hydra.job.override_dirname) or cfg.task_name
                if logger_cfg.get("group") is None and hydra and hydra.mode == RunMode.MULTIRUN:
                    logger_cfg.group = Path(hydra.sweep.dir).name
                if logger_cfg.get("tags") is None:
                    logger_cfg.tags = [t for t in (_hydra_choice("model"),
                                                   cfg.get("data", {}).get("name")) if t]
        loggers.append(instantiate(logger_cfg))
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return loggers


def close_wandb(failed: bool) -> None:
    """Finish the W&B run, if one is open, marked failed or not."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=1 if failed else 0)
