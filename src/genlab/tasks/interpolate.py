"""Interpolation: between pairs of real images for models that can encode them, between pairs
of random latents for models that only generate (GANs)."""

from __future__ import annotations

from genlab.tasks.base import TaskInputs, TaskResult, task


@task("interpolate", needs=("interpolate", "interpolate_latents"))
def interpolate(model, inputs: TaskInputs, steps: int = 8, rows: int = 4) -> TaskResult:
    """Rows of `steps` images between image pairs (0, 1), (2, 3), ... or random latents."""
    x, labels = inputs.x, inputs.labels
    pairs = min(len(x) // 2, rows)
    first = None if labels is None else labels[0:2 * pairs:2]
    if callable(getattr(model, "interpolate", None)):
        images = model.interpolate(x[0:2 * pairs:2], x[1:2 * pairs:2], steps, first)
    else:
        z = model.latents(2 * pairs, inputs.generator)
        images = model.interpolate_latents(z[:pairs], z[pairs:], steps, first)
    return TaskResult(images, nrow=steps)
