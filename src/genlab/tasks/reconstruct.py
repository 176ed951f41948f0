"""Tasks of models with an encoder: reconstructions and latent traversals."""

from __future__ import annotations

import torch

from genlab.tasks.base import TaskResult, image_quality, task


@task("reconstruct", needs=("reconstruct",))
def reconstruct(model, x, labels, generator) -> TaskResult:
    """Each image followed by its reconstruction."""
    rebuilt = model.reconstruct(x, labels)
    return TaskResult(torch.stack([x, rebuilt], dim=1).flatten(0, 1), nrow=8,
                      metrics=image_quality(rebuilt, x))


@task("traversal", needs=("latent_traversal",))
def traversal(model, x, labels, generator, steps: int = 8) -> TaskResult:
    """One row per latent dimension, varied around the first image's code."""
    images = model.latent_traversal(x[0], steps=steps,
                                    labels=None if labels is None else labels[0])
    return TaskResult(images, nrow=steps)
