"""Tasks of models with an encoder: reconstructions and latent traversals."""

from __future__ import annotations

import torch

from genlab.tasks.base import TaskInputs, TaskResult, image_quality, task


@task("reconstruct", needs=("reconstruct",))
def reconstruct(model, inputs: TaskInputs) -> TaskResult:
    """Each image followed by its reconstruction."""
    x = inputs.x
    rebuilt = model.reconstruct(x, inputs.labels)
    return TaskResult(torch.stack([x, rebuilt], dim=1).flatten(0, 1), nrow=8,
                      metrics=image_quality(rebuilt, x))


@task("traversal", needs=("latent_traversal",))
def traversal(model, inputs: TaskInputs, steps: int = 8) -> TaskResult:
    """One row per latent dimension, varied around the first image's code."""
    labels = None if inputs.labels is None else inputs.labels[0]
    return TaskResult(model.latent_traversal(inputs.x[0], steps=steps, labels=labels),
                      nrow=steps)
