"""Tasks: what a trained model is for beyond drawing samples. Each task declares the capability
(a model method) it needs, runs on a batch of real test images and returns a grid of images and
its metrics; `python evaluate.py ckpt_path=... tasks=[...]` runs the ones a model offers, writes
`<task>.png` and puts `task/<name>/<metric>` into metrics.json.

    task         needs                                  metrics
    reconstruct  reconstruct(x, labels)                 psnr, ssim
    interpolate  interpolate(x0, x1, steps, labels)     -
                 or interpolate_latents(z0, z1, ...)
    traversal    latent_traversal(x, labels=...)        -
    inpaint      inpaint(x, mask, labels, generator)    psnr, ssim, known_error
    outpaint     inpaint(x, mask, labels, generator)    psnr, ssim, known_error
    denoise      denoise(y, sigma, labels, generator)   noisy_psnr, noisy_ssim, psnr, ssim
"""

from genlab.tasks import denoise, inpaint, interpolate, reconstruct  # noqa: F401 (registers)
from genlab.tasks.base import TASKS, Task, TaskResult, check_tasks, offered, run_task

__all__ = ["TASKS", "Task", "TaskResult", "check_tasks", "offered", "run_task"]
