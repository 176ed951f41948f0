"""OmegaConf resolvers the configs use; registered on import of genlab.run."""

from __future__ import annotations

import netrc
import os

from omegaconf import OmegaConf

from genlab.errors import GenlabError, yaml_repr
from genlab.files.dirs import register_resolver as register_path_resolver

# `precision=` as users type it -> Lightning's name. Hydra reads precision=32 and precision=16
# as integers, so a plain key (not a config group) takes them as they are typed.
PRECISIONS = {"32-true": ("32", "fp32", "32-true"), "16-mixed": ("16", "fp16", "16-mixed"),
              "bf16-mixed": ("bf16", "bf16-mixed")}


def lightning_precision(value) -> str:
    """The Lightning Trainer's precision for the top-level `precision` key: 32 | fp32 | 32-true
    -> 32-true; 16 | fp16 | 16-mixed -> 16-mixed (float16 autocast with loss scaling);
    bf16 | bf16-mixed -> bf16-mixed."""
    text = str(value).lower() if isinstance(value, (int, str)) and not isinstance(value, bool) \
        else None
    for name, spellings in PRECISIONS.items():
        if text in spellings:
            return name
    raise GenlabError(f"precision={yaml_repr(value)} is not valid: choose 32 (also fp32, "
                      "32-true), 16 (float16 with loss scaling; also fp16, 16-mixed) or bf16 "
                      "(also bf16-mixed).")


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


def run_dir(resume: str | None, new: str) -> str:
    """The run directory (hydra.run.dir): the one `resume` names, else a new one."""
    return os.path.abspath(os.path.expanduser(resume)) if resume else new


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("run_dir"):
        OmegaConf.register_new_resolver("run_dir", run_dir)
    if not OmegaConf.has_resolver("wandb_offline"):
        OmegaConf.register_new_resolver("wandb_offline", wandb_offline)
    if not OmegaConf.has_resolver("lightning_precision"):
        OmegaConf.register_new_resolver("lightning_precision", lightning_precision)
    register_path_resolver()
