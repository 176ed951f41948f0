"""What train.py and evaluate.py do, given their composed configs.

    train      fit, test the best checkpoint, return the optimized metric (for sweepers)
    evaluate   rebuild a run from its checkpoint: test metrics, sample quality, tasks
    validate   start-up checks of a config: values in range, known keys, rules between keys,
               evaluate.py's overrides (before any data is decoded or anything written)
    startup    the Hydra callback that runs them before the run directory is made
    build      instantiate configs (datamodule, model) with our errors
    checkpoint read checkpoints safely (weights_only: a checkpoint never runs code)
    loggers    W&B / CSV loggers and closing them
    layout     what a run directory holds
    errors     user errors as one paragraph, exit status 1
"""

from genlab.run.errors import report_user_errors
from genlab.run.evaluate import evaluate
from genlab.run.train import train

__all__ = ["evaluate", "report_user_errors", "train"]
