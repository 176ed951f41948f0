"""Known degradations y = A(x) + sigma n (n ~ N(0, I)) of images x in [-1, 1], for restoration:
each operator has `forward` (A), `pinv` (a pseudo-inverse A+ with A(A+(y)) = y), `measure` (A(x)
plus its noise) and `sigma` (the noise std in [-1, 1] units, 0 if none); masks also have `known`
(1 where a pixel is measured). Restoration methods only use these, so every method serves every
operator it can (`genlab.tasks.restore`). Also the classical baselines that need no model:
bicubic upsampling, mean and nearest fill, and a Gaussian filter.

    operator              A                               A+                              gram
    Mask(known)           x -> known * x                  y -> y (A+ = A; A is a projection)  1
    Downsample(f)         mean of each f x f block        nearest upsampling (each block = y) 1/f^2
    GaussianNoise(sigma)  identity, y = x + sigma n       identity                            1
(`gram` is g with A A^T = g I on the measurements, so A+ = A^T / g.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genlab.maths.random import randn_like


class Operator:
    """A linear degradation A with a pseudo-inverse; `sigma` > 0 adds Gaussian noise."""

    sigma: float = 0.0
    gram: float = 1.0  # g with A A^T = g I on the measurements, so that A+ = A^T / g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def measure(self, x: torch.Tensor, generator: torch.Generator | None = None
                ) -> torch.Tensor:
        """y = A(x) + sigma n, the noise drawn from `generator`."""
        y = self.forward(x)
        return y + self.sigma * randn_like(y, generator) if self.sigma > 0 else y

    def project(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The null-space projection x - A+(A(x) - y) of DDNM (Wang et al. 2023, eq. 11): x's
        component in the null space of A, with the range-space component that y fixes, so
        A(project(x, y)) = y for y in the range of A (A A+ = I there)."""
        return x - self.pinv(self.forward(x) - y)


@dataclass
class Mask(Operator):
    """Inpainting: the pixels where `known` (1 or 0, broadcasting to the images) is 1 are
    measured exactly, the others are missing (zero in y)."""

    known: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.known * x

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        return self.known * y

    def project(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """y where a pixel is known, bit for bit, x elsewhere (the projection, exactly)."""
        return torch.where(self.known.bool(), y, x)

    @property
    def raster_prefix(self) -> bool:
        """True when the known pixels of every image come first in raster order (top rows,
        then the left part of one row): what autoregressive models complete exactly."""
        flat = self.known.amax(1).flatten(1)  # (B or 1, H*W)
        return bool((flat[:, 1:] <= flat[:, :-1]).all())


@dataclass
class Downsample(Operator):
    """Super-resolution: the mean of each `factor` x `factor` block (area averaging)."""

    factor: int

    @property
    def gram(self) -> float:
        return 1 / self.factor ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.factor)

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """Nearest upsampling: every pixel of a block set to the block's value. A+ is the
        Moore-Penrose pseudo-inverse, A^T (A A^T)^-1 with A A^T = I / f^2 and A^T y = the
        value / f^2 on each pixel of the block."""
        return F.interpolate(y, scale_factor=self.factor, mode="nearest")


@dataclass
class GaussianNoise(Operator):
    """Denoising: A is the identity, y = x + sigma n."""

    sigma: float

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        return y


# -- masks -------------------------------------------------------------------------------------
def centre_known(size: int, device: torch.device | None = None) -> torch.Tensor:
    """(1, 1, size, size): 1 on the centre square of half the side, 0 elsewhere."""
    known = torch.zeros(1, 1, size, size, device=device)
    known[..., size // 4:3 * size // 4, size // 4:3 * size // 4] = 1
    return known


def top_rows_known(rows: int, size: int, device: torch.device | None = None) -> torch.Tensor:
    """(1, 1, size, size): 1 on the first `rows` rows, 0 below (a raster-order prefix)."""
    known = torch.zeros(1, 1, size, size, device=device)
    known[..., :rows, :] = 1
    return known


def random_pixels_known(n: int, size: int, missing: float,
                        generator: torch.Generator | None = None,
                        device: torch.device | None = None) -> torch.Tensor:
    """(n, 1, size, size): for each image its own random set of round(missing * size^2) missing
    pixels (0), drawn from `generator`; the rest 1."""
    scores = torch.rand(n, size * size, generator=generator, device=device)
    missing_idx = scores.argsort(1)[:, :round(missing * size * size)]
    known = torch.ones(n, size * size, device=device)
    known.scatter_(1, missing_idx, 0.0)
    return known.view(n, 1, size, size)


# -- classical baselines -------------------------------------------------------------------------
def bicubic_upsample(y: torch.Tensor, factor: int) -> torch.Tensor:
    """Bicubic interpolation (torch's, a = -0.75, half-pixel centres), clipped to [-1, 1]."""
    return F.interpolate(y, scale_factor=factor, mode="bicubic", align_corners=False).clamp(-1, 1)


def mean_fill(y: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """The known pixels kept, each missing one set to the mean of its image's known pixels
    (per channel)."""
    known = known.expand_as(y)
    mean = (y * known).sum((2, 3), keepdim=True) / known.sum((2, 3), keepdim=True).clamp(min=1)
    return torch.where(known.bool(), y, mean.expand_as(y))


def nearest_fill(y: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """The known pixels kept, each missing one set to the value of the nearest known pixel of
    its image (Euclidean distance between pixel centres; ties to the first in raster order)."""
    b, c, h, w = y.shape
    known = known.expand(b, 1, h, w).reshape(b, h * w).bool()
    rows, cols = torch.meshgrid(torch.arange(h, device=y.device),
                                torch.arange(w, device=y.device), indexing="ij")
    where = torch.stack([rows.flatten(), cols.flatten()], 1).float()
    distance = torch.cdist(where, where)  # (HW, HW)
    filled = y.flatten(2).clone()
    for i in range(b):
        nearest = distance[:, known[i]].argmin(1)  # for each pixel, its nearest known pixel
        source = known[i].nonzero().squeeze(1)[nearest]
        filled[i] = y[i].flatten(1)[:, source]
    return filled.view(b, c, h, w)


def gaussian_filter(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x blurred by a normalised Gaussian kernel of std `sigma` pixels (radius ceil(3 sigma),
    at most the image side - 1; separable, reflected at the border); x itself for sigma = 0."""
    if sigma <= 0:
        return x
    radius = max(1, min(math.ceil(3 * sigma), min(x.shape[-2:]) - 1))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def best_filter_sigma(clean: torch.Tensor, noisy: torch.Tensor, candidates: list[float]
                      ) -> float:
    """The candidate Gaussian-filter sigma whose filtered `noisy` images have the lowest mean
    squared error to `clean` (choose it on validation images, not on the test images)."""
    errors = [float((gaussian_filter(noisy, s).clamp(-1, 1) - clean).pow(2).mean())
              for s in candidates]
    return candidates[min(range(len(candidates)), key=errors.__getitem__)]
