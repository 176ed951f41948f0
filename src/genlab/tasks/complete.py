"""Completion: the top rows of real images are given and the rest is sampled exactly from
p(x_rest | x_top) by an autoregressive model (`complete(x, mask, labels, generator)`, known
pixels a raster-order prefix). Several completions per image show the spread of the
conditional. The generic `inpaint` / `outpaint` tasks need arbitrary masks, which an
autoregressive model cannot complete exactly; it offers this task instead (and the measured
`inpaint_half` of `genlab.tasks.restore`, whose mask is such a prefix).

Options (`task_options.complete.*`): `rows` (given rows, default half the image), `samples`
(completions per image, default 5), `images` (default 8).
"""

from __future__ import annotations

from typing import Annotated

import torch

from genlab.checks import Range
from genlab.errors import GenlabError
from genlab.maths.degradations import top_rows_known
from genlab.tasks.base import TaskInputs, TaskResult, task


@task("complete", needs=("complete",),
      options={"rows": Annotated[int, Range(0)] | None, "samples": Annotated[int, Range(1)],
               "images": Annotated[int, Range(1)]})
def complete(model, inputs: TaskInputs) -> TaskResult:
    """Rows: the given top half, several completions of the bottom half, the original."""
    options = inputs.options
    n, k = int(options.get("images", 8)), int(options.get("samples", 5))
    x = inputs.x[:n]
    size = x.shape[-1]
    rows = int(options.get("rows") or size // 2)
    if not 0 <= rows <= size:
        raise GenlabError(f"task_options.complete.rows={rows} must be between 0 and {size}.")
    mask = top_rows_known(rows, size, x.device)
    labels = None if inputs.labels is None else inputs.labels[:n].repeat_interleave(k)
    completed = model.complete(x.repeat_interleave(k, dim=0), mask, labels, inputs.generator)
    known = mask.expand_as(completed).bool()
    error = (completed - x.repeat_interleave(k, dim=0)).abs()[known]
    given = x * mask + (1 - mask) * -1  # the unknown rows shown black
    grid = torch.cat([given[:, None], completed.view(len(x), k, *x.shape[1:]), x[:, None]], 1)
    return TaskResult(grid.flatten(0, 1), nrow=k + 2,
                      metrics={"known_error": float(error.max()) if error.numel() else 0.0,
                               "rows_given": rows})
