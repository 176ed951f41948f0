"""Reading checkpoints written by train.py."""

from __future__ import annotations

from pathlib import Path

import torch

from genlab.callbacks.config import CONFIG_KEY
from genlab.errors import GenlabError


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise GenlabError(f"ckpt_path={path} does not exist. Give the path of a checkpoint "
                          "written by train.py, e.g. outputs/train/runs/<run>/checkpoints/"
                          "last.ckpt.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise GenlabError(f"{path} cannot be read as a checkpoint ({type(err).__name__}: {err}). "
                          "It is corrupt or truncated; use another one, such as last.ckpt or "
                          "best-*.ckpt from the same run.") from None
    if not isinstance(checkpoint, dict) or CONFIG_KEY not in checkpoint:
        raise GenlabError(f"{path} is not a genlab checkpoint (it holds no run config); "
                          "evaluate.py needs a checkpoint written by train.py.")
    return checkpoint
