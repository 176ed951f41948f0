"""Train any model on any dataset. README: "Training".

    python train.py model=vae data=mnist                      # one process (GPU if present)
    python train.py experiment=ddpm_cifar10 trainer=gpu precision=bf16    # a paper recipe
    python train.py experiment=ddpm_cifar10 trainer=ddp      # every GPU of the machine
    python train.py experiment=ddpm_cifar10 trainer=ddp trainer.num_nodes=2   # several machines
    python train.py -m model=vae,ddpm data=mnist,cifar10     # a Hydra multirun
    python train.py ... ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt   # resume
Runs land in outputs/train/runs/<date>_<time>/ (checkpoints/, samples/, wandb/).
"""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

from genlab.run import report_user_errors, train  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@report_user_errors
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()
