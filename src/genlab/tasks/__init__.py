"""Tasks: what a trained model is for beyond drawing samples. Each task declares the capability
(a model method, see `genlab.models.base`) it needs, runs on a batch of real test images
(`TaskInputs`) and returns a grid of images and its metrics; `python evaluate.py ckpt_path=...
tasks=[...]` runs the ones a model offers, writes `<task>.png` and puts `task/<name>/<metric>`
into metrics.json; `task_options.<name>.<key>=...` sets a task's options.

    task         needs                                  metrics
    reconstruct  reconstruct(x, labels)                 psnr, ssim
    interpolate  interpolate(x0, x1, steps, labels)     -
                 or interpolate_latents(z0, z1, ...)
    traversal    latent_traversal(x, labels=...)        -
    restoration (genlab.tasks.restore: a degradation y = A(x) + noise, the model's restoration
    and a classical baseline measured by the same code):
    inpaint      inpaint, or restore(y, operator,     psnr, ssim, consistency, baseline_psnr,
    outpaint     labels, generator)                   baseline_ssim, baseline_consistency,
    inpaint_pixels                                    beats_baseline, images, known_error
    inpaint_half inpaint, complete, or restore        (the same)
    denoise      denoise(y, sigma, labels,            (the same without known_error) +
                 generator), or restore               noisy_psnr, noisy_ssim,
                                                      baseline_filter_sigma
    superres_x2  restore                              (the same without known_error)
    superres_x4
    edit         encode(x, labels) + decode(z, labels)  direction_norm, examples_with/without
    temperature  sample_at_temperature(n, T, labels,    -
                 generator)
    complete     complete(x, mask, labels, generator)   known_error, rows_given
                 (known pixels a raster-order prefix: autoregressive models)
    bits         log_prob_per_pixel(x, labels)          bpd, max_pixel_bits
"""

from genlab.tasks import (  # noqa: F401 (registers)
    bits,
    complete,
    edit,
    interpolate,
    reconstruct,
    restore,
    temperature,
)
from genlab.tasks.base import (
    TASKS,
    Task,
    TaskInputs,
    TaskResult,
    check_tasks,
    offered,
    run_task,
)

__all__ = ["TASKS", "Task", "TaskInputs", "TaskResult", "check_tasks", "offered", "run_task"]
