"""Where an image's information is: the bits each pixel costs under a likelihood model,
-log2 p(pixel | pixels before), from `log_prob_per_pixel(x, labels)` (B, C, H, W) summed over
the channels. Edges and strokes cost many bits, flat background almost none.

The heat map is black (0 bits) -> red -> yellow -> white (the most expensive pixel of the shown
images); grayscale images are shown in RGB beside it.
"""

from __future__ import annotations

import math

import torch

from genlab.tasks.base import TaskInputs, TaskResult, task


def heat_map(values: torch.Tensor, top: float) -> torch.Tensor:
    """(B, H, W) values in [0, top] -> (B, 3, H, W) images in [-1, 1], black-red-yellow-white."""
    t = (values / max(top, 1e-12)).clamp(0, 1)
    rgb = torch.stack([(3 * t).clamp(0, 1), (3 * t - 1).clamp(0, 1), (3 * t - 2).clamp(0, 1)], 1)
    return rgb * 2 - 1


@task("bits", needs=("log_prob_per_pixel",))
def bits(model, inputs: TaskInputs) -> TaskResult:
    """Rows: images, then the bits per pixel each costs under the model as a heat map."""
    x = inputs.x[:8]
    labels = None if inputs.labels is None else inputs.labels[:8]
    per_pixel = -model.log_prob_per_pixel(x, labels).sum(1) / math.log(2)  # (B, H, W) bits
    top = float(per_pixel.max())
    images = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    return TaskResult(torch.cat([images, heat_map(per_pixel, top)]), nrow=len(x),
                      metrics={"bpd": float(per_pixel.mean() / x.shape[1]),
                               "max_pixel_bits": top})
