"""The loggers of a run (W&B, CSV), and closing the W&B run whatever happens."""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf, open_dict


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
