"""The resolved run config, stored in every checkpoint so evaluate.py can rebuild the run."""

from __future__ import annotations

import lightning as L
from omegaconf import DictConfig, OmegaConf

CONFIG_KEY = "genlab_config"  # where checkpoints keep the resolved run config


class StoreConfig(L.Callback):
    def __init__(self, cfg: DictConfig):
        self.config = OmegaConf.to_container(cfg, resolve=True)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[CONFIG_KEY] = self.config
