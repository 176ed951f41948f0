"""Samples at reduced temperatures (Kingma & Dhariwal 2018, sec. 5; Parmar et al. 2018): codes
drawn from N(0, T^2 I) instead of N(0, I) trade diversity for fidelity. For models whose samples
are decoded from a Gaussian code (flows).

Options (`task_options.temperature.*` in evaluate.py): `temperatures` (default
[0, 0.5, 0.7, 0.85, 1]), `columns` (samples per row, default 8).
"""

from __future__ import annotations

from typing import Annotated

import torch

from genlab.checks import NonEmpty, Range
from genlab.tasks.base import TaskInputs, TaskResult, task

TEMPERATURES = (0.0, 0.5, 0.7, 0.85, 1.0)


@task("temperature", needs=("sample_at_temperature",),
      options={"temperatures": Annotated[list[float], NonEmpty, Range(0)],
               "columns": Annotated[int, Range(1)]})
def temperature(model, inputs: TaskInputs) -> TaskResult:
    """Rows: samples at temperatures 0, 0.5, 0.7, 0.85 and 1, from the same noise in every
    row (so each column is one code, scaled)."""
    temperatures = [float(t) for t in inputs.options.get("temperatures", TEMPERATURES)]
    n = int(inputs.options.get("columns", 8))
    seed = (0 if inputs.generator is None
            else int(torch.randint(2**62, (1,), generator=inputs.generator,
                                   device=inputs.generator.device)))
    labels = model.grid_labels(n)
    rows = [model.sample_at_temperature(
                n, t, labels, torch.Generator(device=model.device).manual_seed(seed))
            for t in temperatures]
    return TaskResult(torch.cat(rows), nrow=n)
