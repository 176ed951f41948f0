"""Evaluate a checkpoint: test metrics (bits/dim), sample quality (FID, KID, IS, precision /
recall) and tasks, into <run dir>/metrics.json and the logger. README: "Evaluation".

    python evaluate.py ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt   # 50k-sample FID
    python evaluate.py ckpt_path=... fid.num_samples=2000 fid.reference_num=2000 trainer=cpu
    python evaluate.py ckpt_path=... fid.enabled=false tasks=[reconstruct,interpolate]
Runs land in outputs/evaluate/runs/<date>_<time>/.
"""

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
