"""The task registry and the shape of a task's result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from genlab.data.transforms import to_uint8
from genlab.errors import GenlabError


@dataclass
class TaskInputs:
    """What a task runs on: real images x (B, C, H, W) in [-1, 1] from the evaluated split,
    their labels (for conditional models), a seeded generator, the datamodule (for tasks that
    need more real data, e.g. codes of training images), the task's options
    (`task_options.<task>` in evaluate.py's config) and the split x comes from."""

    x: torch.Tensor
    labels: torch.Tensor | None = None
    generator: torch.Generator | None = None
    datamodule: object | None = None
    options: dict = field(default_factory=dict)
    split: str = "test"


@dataclass
class TaskResult:
    """Images (N, C, H, W) in [-1, 1] for a grid of `nrow` columns, and named numbers."""

    images: torch.Tensor
    nrow: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    name: str
    needs: tuple[str, ...]  # alternatives: each is a model method, or methods joined by "+"
    run: Callable[..., TaskResult]  # (model, TaskInputs) -> TaskResult
    description: str
    options: dict = field(default_factory=dict)  # option -> type (validated at start-up)

    def supports(self, model) -> bool:
        return any(all(callable(getattr(model, method, None)) for method in need.split("+"))
                   for need in self.needs)


TASKS: dict[str, Task] = {}


def task(name: str, needs: tuple[str, ...], options: dict | None = None):
    """Register `fn(model, inputs: TaskInputs) -> TaskResult` as task `name`, offered to models
    that have one of `needs` (e.g. ("interpolate", "interpolate_latents") or ("encode+decode",)).
    `options` maps each key of `task_options.<name>` to its type (`Annotated[..., Range(...)]`
    for a range), so evaluate.py checks them before anything runs.
    """
    def register(fn: Callable[..., TaskResult]) -> Callable[..., TaskResult]:
        TASKS[name] = Task(name, needs, fn, (fn.__doc__ or "").strip().split("\n")[0],
                           dict(options or {}))
        return fn
    return register


def offered(model) -> list[str]:
    """The names of the tasks `model` has the capabilities for."""
    return sorted(name for name, t in TASKS.items() if t.supports(model))


def check_tasks(names, model) -> None:
    """A GenlabError unless `model` (a model or its class) offers every task in `names`, naming
    those it offers."""
    for name in names:
        if name not in TASKS or not TASKS[name].supports(model):
            why = ("is not a task" if name not in TASKS else
                   f"needs one of the capabilities {' or '.join(TASKS[name].needs)}, which "
                   f"{(model if isinstance(model, type) else type(model)).__name__} lacks")
            raise GenlabError(f"tasks=[{name}]: '{name}' {why}. This model offers: "
                              f"{', '.join(offered(model)) or 'no tasks'} (all tasks: "
                              f"{', '.join(sorted(TASKS))}).")


def run_task(name: str, model, inputs: TaskInputs) -> TaskResult:
    """Run task `name` of `model` on `inputs`."""
    check_tasks([name], model)
    with torch.no_grad():
        return TASKS[name].run(model, inputs)


def image_quality(restored: torch.Tensor, clean: torch.Tensor, prefix: str = "") -> dict:
    """PSNR (dB) and SSIM of restored against clean images, both quantized to 8 bits first as
    saved images are; the mean over images."""
    a, b = to_uint8(restored).float(), to_uint8(clean).float()
    psnr = peak_signal_noise_ratio(a, b, data_range=255.0, dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(a, b, data_range=255.0)
    return {f"{prefix}psnr": float(psnr), f"{prefix}ssim": float(ssim)}
