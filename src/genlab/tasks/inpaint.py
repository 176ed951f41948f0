"""Inpainting (the centre square is missing) and outpainting (only the centre is given)."""

from __future__ import annotations

import torch

from genlab.tasks.base import TaskInputs, TaskResult, image_quality, task


def centre_mask(size: int, device: torch.device) -> torch.Tensor:
    """(1, 1, size, size): 1 on the centre square of half the side, 0 elsewhere."""
    mask = torch.zeros(1, 1, size, size, device=device)
    mask[..., size // 4:3 * size // 4, size // 4:3 * size // 4] = 1
    return mask


def _fill(model, inputs: TaskInputs, keep_centre: bool) -> TaskResult:
    x = inputs.x[:8]
    labels = None if inputs.labels is None else inputs.labels[:8]
    mask = centre_mask(x.shape[-1], x.device)
    mask = mask if keep_centre else 1 - mask
    filled = model.inpaint(x, mask, labels, inputs.generator)
    metrics = image_quality(filled, x)
    metrics["known_error"] = float((filled - x).abs()[mask.expand_as(x).bool()].max())
    return TaskResult(torch.cat([x * mask, filled, x]), nrow=len(x), metrics=metrics)


@task("inpaint", needs=("inpaint",))
def inpaint(model, inputs: TaskInputs) -> TaskResult:
    """Rows: images with the centre removed, the centre inpainted, the originals."""
    return _fill(model, inputs, keep_centre=False)


@task("outpaint", needs=("inpaint",))
def outpaint(model, inputs: TaskInputs) -> TaskResult:
    """Rows: the centres kept, the border generated around them, the originals."""
    return _fill(model, inputs, keep_centre=True)
