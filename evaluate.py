"""Evaluate a checkpoint: python evaluate.py ckpt_path=outputs/runs/<run>/checkpoints/last.ckpt"""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

from genlab.run import evaluate, report_user_errors  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@report_user_errors
def main(cfg: DictConfig) -> dict:
    return evaluate(cfg)


if __name__ == "__main__":
    main()
