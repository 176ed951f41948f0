"""What train.py and evaluate.py do, given their composed configs.

    train      fit, test the best checkpoint, return the optimized metric (for sweepers)
    evaluate   rebuild a run from its checkpoint: test metrics, sample quality, tasks
    validate   start-up checks of a config: values in range, known keys, rules between keys,
               evaluate.py's overrides (before any data is decoded or anything written)
    startup    the Hydra callback that runs them before the run directory is made
    build      instantiate configs (datamodule, model) with our errors
    checkpoint read checkpoints safely (weights_only: a checkpoint never runs code)
    loggers    W&B / CSV / TensorBoard loggers and closing them
    layout     what a run directory holds
    errors     user errors as one paragraph, exit status 1
`train` and `evaluate` are imported on first use, so reading a run's layout (genlab-review)
does not load torch and Lightning.
"""

import importlib

from genlab.run.errors import report_user_errors

__all__ = ["evaluate", "report_user_errors", "train"]


def __getattr__(name: str):
    if name in ("train", "evaluate"):
        # the function replaces the submodule of the same name, as an eager import would
        globals()[name] = getattr(importlib.import_module(f"genlab.run.{name}"), name)
        return globals()[name]
    raise AttributeError(f"module 'genlab.run' has no attribute {name!r}")
