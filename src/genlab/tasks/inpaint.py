"""Inpainting (the centre square is missing) and outpainting (only the centre is given)."""

from __future__ import annotations

import torch

from genlab.tasks.base import TaskResult, image_quality, task


def centre_mask(size: int, device: torch.device) -> torch.Tensor:
    """(1, 1, size, size): 1 on the centre square of half the side, 0 elsewhere."""
    mask = torch.zeros(1, 1, size, size, device=device)
    mask[..., size // 4:3 * size // 4, size // 4:3 * size // 4] = 1
    return mask


def _fill(model, x, labels, generator, mask) -> TaskResult:
    x, labels = x[:8], None if labels is None else labels[:8]
    filled = model.inpaint(x, mask, labels, generator)
    known = mask.expand_as(x).bool()
    metrics = image_quality(filled, x)
    metrics["known_error"] = float((filled - x).abs()[known].max())
    return TaskResult(torch.cat([x * mask, filled, x]), nrow=len(x), metrics=metrics)


@task("inpaint", needs=("inpaint",))
def inpaint(model, x, labels, generator) -> TaskResult:
    """Rows: images with the centre removed, the centre inpainted, the originals."""
    return _fill(model, x, labels, generator, 1 - centre_mask(x.shape[-1], x.device))


@task("outpaint", needs=("inpaint",))
def outpaint(model, x, labels, generator) -> TaskResult:
    """Rows: the centres kept, the border generated around them, the originals."""
    return _fill(model, x, labels, generator, centre_mask(x.shape[-1], x.device))
