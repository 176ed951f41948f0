"""OmegaConf resolvers the configs use; registered on import of genlab.run."""

from __future__ import annotations

import netrc
import os

from omegaconf import OmegaConf

from genlab.files.dirs import register_resolver as register_path_resolver


def wandb_offline() -> bool:
    """Offline unless the user is logged in to W&B (WANDB_API_KEY, or `wandb login`'s netrc
    entry); WANDB_MODE=online / offline decides outright."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "dryrun", "disabled"):
        return True
    if mode == "online" or os.environ.get("WANDB_API_KEY"):
        return False
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is None
    except (OSError, netrc.NetrcParseError):
        return True


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("wandb_offline"):
        OmegaConf.register_new_resolver("wandb_offline", wandb_offline)
    register_path_resolver()
