"""Denoising images with Gaussian noise of a known standard deviation."""

from __future__ import annotations

import torch

from genlab.tasks.base import TaskInputs, TaskResult, image_quality, task

SIGMA = 0.3  # in [-1, 1] units: about 38 grey levels


@task("denoise", needs=("denoise",))
def denoise(model, inputs: TaskInputs, sigma: float = SIGMA) -> TaskResult:
    """Rows: originals, with Gaussian noise of std 0.3 added, denoised."""
    x = inputs.x[:8]
    labels = None if inputs.labels is None else inputs.labels[:8]
    noisy = x + sigma * torch.randn(x.shape, device=x.device, generator=inputs.generator)
    clean = model.denoise(noisy, sigma, labels, inputs.generator)
    metrics = {**image_quality(noisy.clamp(-1, 1), x, prefix="noisy_"), **image_quality(clean, x)}
    return TaskResult(torch.cat([x, noisy.clamp(-1, 1), clean]), nrow=len(x), metrics=metrics)
