"""Checks before Hydra creates the run directory (a Hydra callback, `conf/hydra/default.yaml`).

Hydra makes the run directory, configures the log file in it and writes `.hydra/` before it
calls train.py's or evaluate.py's function, so a mistake found there leaves a run directory
behind, and a run directory that cannot be created ends in Hydra's own traceback ("Unable to
configure handler 'file'"). This callback runs first: it checks that the run (or sweep)
directory can be written, then validates the configuration (`genlab.run.validate`). Either
mistake ends in one paragraph, exit status 1, and nothing written.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from genlab.files.dirs import check_writable
from genlab.run.errors import user_errors


def task_config(config: DictConfig, output_dir: str) -> DictConfig:
    """The task's config (without `hydra`), with the run directory filled in as Hydra will."""
    task = copy.deepcopy(config)
    with open_dict(task):
        del task["hydra"]
        if "paths" in task:
            task.paths.output_dir = os.path.abspath(output_dir)
    return task


class StartupChecks(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from genlab.run.validate import validate

        with user_errors():
            run_dir = str(OmegaConf.select(config, "hydra.run.dir"))  # ${now:...} is cached
            check_writable(run_dir, "hydra.run.dir")
            validate(task_config(config, run_dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Each job's overrides are applied by the sweeper later: its config is validated by
        # train() / evaluate() in the job.
        with user_errors():
            check_writable(str(OmegaConf.select(config, "hydra.sweep.dir")), "hydra.sweep.dir")
