"""Restoration: a known degradation y = A(x) + sigma n of real test images
(`genlab.maths.degradations`), the model's restoration x_hat and a classical baseline, both
measured against the clean images by the same code.

    task            A (32x32 images)                           baseline
    inpaint         the centre square of half the side missing  mean fill
    outpaint        only that centre square known               mean fill
    inpaint_half    the bottom half missing (a raster prefix)   mean fill
    inpaint_pixels  a random `missing` fraction of pixels       nearest fill
                    missing, drawn for each image
    denoise         y = x + sigma n, sigma (`sigma`) in          the noisy input, and a Gaussian
                    [-1, 1] units                               filter whose std is chosen on
                                                                the validation split
    superres_x2/x4  the mean of each 2x2 / 4x4 block            bicubic upsampling

A task's `needs` lists the model capabilities that can restore it in order of preference; a
model uses the first it has (`method_of`): `inpaint(x, mask, ...)`, `complete(x, mask, ...)`
(raster-prefix masks, exact), `denoise(y, sigma, ...)`, or the general
`restore(y, operator, labels, generator)`. Each family names its methods in
`restoration_methods`, and `python -m genlab.tasks` prints the family x task table of the
README from them.

Metrics: `psnr`, `ssim` of the restorations (`image_quality`), `consistency` (the RMS of
A(x_hat) - y over the measured values, mean over images: 0 for a restoration that agrees with
its measurements; about sigma for a good denoiser), the same three as `baseline_*`,
`beats_baseline` (1 when the PSNR is higher than the baseline's, else 0) and `images`; masks
add `known_error` (the largest change to a known pixel), denoising `noisy_psnr`, `noisy_ssim`
and `baseline_filter_sigma`. The grid's rows, for the first 8 images: degraded (A+(y)),
restored, baseline, clean.

Options (`task_options.<task>.*`): `images` (test images restored, default 64), and
`inpaint_pixels.missing` (fraction of pixels missing, default 0.6), `denoise.sigma` (default
0.3, about 38 grey levels).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import torch

from genlab.checks import Range
from genlab.maths import degradations as deg
from genlab.maths.random import seeded_generator
from genlab.tasks.base import TASKS, TaskInputs, TaskResult, image_quality, task

FILTER_SIGMAS = [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0]  # pixels, the baseline's choices
GRID_IMAGES = 8
COMMON_OPTIONS = {"images": Annotated[int, Range(1)]}
RESTORATION_TASKS = ("inpaint", "outpaint", "inpaint_half", "inpaint_pixels", "denoise",
                     "superres_x2", "superres_x4")


@dataclass(frozen=True)
class Degradation:
    """How a task degrades images, (x, options, generator) -> Operator, and its baseline,
    (y, operator, validation images) -> (x_hat, metrics of the baseline's settings)."""

    operator: Callable[[torch.Tensor, dict, torch.Generator | None], deg.Operator]
    baseline: Callable[[torch.Tensor, deg.Operator, torch.Tensor],
                       tuple[torch.Tensor, dict[str, float]]]


def method_of(model, name: str) -> str | None:
    """The capability `model` (a model or its class) restores task `name` with: the first of
    the task's needs it has; None if it has none."""
    return next((need for need in TASKS[name].needs if callable(getattr(model, need, None))),
                None)


def restore_with(model, capability: str, y: torch.Tensor, operator: deg.Operator,
                 labels: torch.Tensor | None, generator: torch.Generator | None
                 ) -> torch.Tensor:
    """x_hat from y by `capability`: inpaint, complete, denoise or restore."""
    if capability in ("inpaint", "complete"):
        return getattr(model, capability)(y, operator.known, labels, generator)
    if capability == "denoise":
        return model.denoise(y, operator.sigma, labels, generator)
    return model.restore(y, operator, labels, generator)


def _images(inputs: TaskInputs, n: int, split: str | None = None
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first n images of `split` (default the evaluated one) in [-1, 1], and their labels
    when the inputs have labels; inputs.x itself when there is no datamodule (a task called
    directly, as in the tests: then the denoising baseline's filter is chosen on them too)."""
    if inputs.datamodule is None:
        labels = None if inputs.labels is None else inputs.labels[:n]
        return inputs.x[:n], labels
    images, labels = inputs.datamodule.splits[split or inputs.split]
    x = inputs.datamodule.to_model_input(images[:n].to(inputs.x.device), train=False)
    return x, None if inputs.labels is None else labels[:n].to(inputs.x.device)


def consistency(x_hat: torch.Tensor, y: torch.Tensor, operator: deg.Operator) -> float:
    """The RMS of A(x_hat) - y over the measured values of each image (A of an image of ones
    sums to their number: the known pixels, the low-resolution pixels), mean over images."""
    count = operator.forward(torch.ones_like(x_hat)).flatten(1).sum(1)
    squared = (operator.forward(x_hat) - y).flatten(1).pow(2).sum(1)
    return float((squared / count).sqrt().mean())


def _run(name: str, degradation: Degradation, model, inputs: TaskInputs) -> TaskResult:
    options = inputs.options
    x, labels = _images(inputs, int(options.get("images", 64)))
    operator = degradation.operator(x, options, inputs.generator)
    y = operator.measure(x, inputs.generator)
    restored = restore_with(model, method_of(model, name), y, operator, labels,
                            inputs.generator).float()
    baseline, settings = degradation.baseline(y, operator, _images(inputs, len(x), "val")[0])
    metrics = {**image_quality(restored, x), "consistency": consistency(restored, y, operator)}
    metrics.update({f"baseline_{k}": v for k, v in image_quality(baseline, x).items()})
    metrics["baseline_consistency"] = consistency(baseline, y, operator)
    metrics["beats_baseline"] = float(metrics["psnr"] > metrics["baseline_psnr"])
    metrics.update(images=len(x), **settings)
    if isinstance(operator, deg.Mask):
        known = operator.known.expand_as(x).bool()
        metrics["known_error"] = float((restored - x).abs()[known].max()) if known.any() else 0.0
    if isinstance(operator, deg.GaussianNoise):
        metrics.update(image_quality(y.clamp(-1, 1), x, prefix="noisy_"))
    k = GRID_IMAGES
    rows = [operator.pinv(y)[:k].clamp(-1, 1), restored[:k].clamp(-1, 1), baseline[:k], x[:k]]
    return TaskResult(torch.cat(rows), nrow=len(rows[0]), metrics=metrics)


def _register(name: str, needs: tuple[str, ...], degradation: Degradation, doc: str,
              options: dict | None = None) -> None:
    def run(model, inputs: TaskInputs) -> TaskResult:
        return _run(name, degradation, model, inputs)
    run.__doc__ = doc
    task(name, needs, {**COMMON_OPTIONS, **(options or {})})(run)


def _mask(known: Callable[[torch.Tensor, dict, torch.Generator | None], torch.Tensor]):
    return lambda x, options, generator: deg.Mask(known(x, options, generator))


def _mean_fill(y, operator, _val):
    return deg.mean_fill(y, operator.known), {}


def _nearest_fill(y, operator, _val):
    return deg.nearest_fill(y, operator.known), {}


def _noise(x: torch.Tensor, options: dict, generator) -> deg.GaussianNoise:
    return deg.GaussianNoise(float(options.get("sigma", 0.3)))


def _gaussian_filter(y: torch.Tensor, operator: deg.GaussianNoise, val: torch.Tensor
                     ) -> tuple[torch.Tensor, dict[str, float]]:
    """The Gaussian filter whose std (of FILTER_SIGMAS, in pixels) restores noisy validation
    images (fixed noise at the same sigma) with the lowest squared error."""
    noisy_val = operator.measure(val, seeded_generator(0, device=val.device))
    sigma = deg.best_filter_sigma(val, noisy_val, FILTER_SIGMAS)
    return deg.gaussian_filter(y, sigma).clamp(-1, 1), {"baseline_filter_sigma": sigma}


def _superres(factor: int) -> Degradation:
    return Degradation(lambda x, options, generator: deg.Downsample(factor),
                       lambda y, operator, _val: (deg.bicubic_upsample(y, factor), {}))


_register("inpaint", ("inpaint", "restore"),
          Degradation(_mask(lambda x, o, g: 1 - deg.centre_known(x.shape[-1], x.device)),
                      _mean_fill),
          "Rows: the centre square removed, inpainted, mean fill, the originals.")
_register("outpaint", ("inpaint", "restore"),
          Degradation(_mask(lambda x, o, g: deg.centre_known(x.shape[-1], x.device)), _mean_fill),
          "Rows: the centre kept, the border generated around it, mean fill, the originals.")
_register("inpaint_half", ("inpaint", "complete", "restore"),
          Degradation(_mask(lambda x, o, g: deg.top_rows_known(x.shape[-1] // 2, x.shape[-1],
                                                               x.device)), _mean_fill),
          "Rows: the bottom half removed, completed, mean fill, the originals.")
_register("inpaint_pixels", ("inpaint", "restore"),
          Degradation(_mask(lambda x, o, g: deg.random_pixels_known(
              len(x), x.shape[-1], float(o.get("missing", 0.6)), g, x.device)), _nearest_fill),
          "Rows: a random 60% of pixels removed, inpainted, nearest fill, the originals.",
          {"missing": Annotated[float, Range(0, 1, low_open=True, high_open=True)]})
_register("denoise", ("denoise", "restore"), Degradation(_noise, _gaussian_filter),
          "Rows: noisy, denoised, the best Gaussian filter, the originals.",
          {"sigma": Annotated[float, Range(0, low_open=True)]})
_register("superres_x2", ("restore",), _superres(2),
          "Rows: 16x16 (area average) shown enlarged, restored, bicubic, the originals.")
_register("superres_x4", ("restore",), _superres(4),
          "Rows: 8x8 (area average) shown enlarged, restored, bicubic, the originals.")
