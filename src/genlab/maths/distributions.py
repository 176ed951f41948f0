"""Per-pixel likelihoods of images in [-1, 1], summed to one log-probability per image.

The 8-bit pixel value k in {0..255} sits at the bin centre x_k = 2k/255 - 1 with bin edges
x_k +- 1/255; the lowest and highest bins extend to -inf and +inf. Discretized densities give
the probability mass of the bin (Salimans et al. 2017, eq. 2; Ho et al. 2020, eq. 13):

    P(k) = F((x_k + 1/255 - mean) / s) - F((x_k - 1/255 - mean) / s)

for the CDF F of the standard logistic or normal. It is computed as a difference of logarithms,
never of probabilities, so it stays exact (and keeps its gradient) far into both tails, where
F underflows to 0 or rounds to 1 in float32:
    logistic  log P = log sigmoid(b) + log sigmoid(-a) + log(1 - e^(a - b))
    Gaussian  log P = log Phi(b) + log(1 - e^(log Phi(a) - log Phi(b)))       (b <= -a)
              and the same for the mirror image Phi(-a) - Phi(-b) when the bin lies in the upper
              half (a + b > 0), so that no CDF is ever near 1.
A Gaussian bin that is narrow against the scale (b - a < 1e-3) uses the density at its centre
times its width instead, as PixelCNN++ does: there the log-CDF difference would cancel (the
logistic form above needs no such fallback: log(1 - e^(a - b)) is exact for small b - a).
All of it runs in float32 even under bf16 / fp16 autocast. `PixelLikelihood` reads a decoder's
output as one of these per-pixel likelihoods (log-probability, mean image, a draw), for every
family with a pixel decoder.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from genlab.errors import GenlabError, check_choice

_NARROW = 1e-3  # standardised bin width below which the density x width form is used


def _sum_pixels(log_prob: torch.Tensor) -> torch.Tensor:
    return log_prob.flatten(1).sum(1)


def bernoulli_log_prob_per_pixel(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log p(x) per pixel for binary pixels (x in {-1, 1}, i.e. off / on), in float32."""
    logits = logits.float()
    target = (x > 0).to(logits.dtype)
    return -F.binary_cross_entropy_with_logits(logits, target, reduction="none")


def bernoulli_log_prob(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log p(x) for binary images (x in {-1, 1}, i.e. pixels off / on)."""
    return _sum_pixels(bernoulli_log_prob_per_pixel(x, logits))


def _standardised_edges(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor
                        ) -> tuple[torch.Tensor, ...]:
    """(a, b): the edges of x's bin in standard units; its width b - a = (2/255) / scale,
    computed as such (as a difference of a and b its gradient with respect to the mean would be
    two large terms cancelling in float32); and the masks of the lowest and highest bins (whose
    outer edges are -inf and +inf: the callers select their own formula there). The edges come
    from the integer pixel value k, (2k -+ 1)/255 - 1, so that a bin's upper edge and the next
    bin's lower edge are the same float and the masses sum to one."""
    k = torch.round((x.float() + 1) * 127.5)
    mean, log_scale = mean.float(), log_scale.float()
    inv_scale = torch.exp(-log_scale)
    a = inv_scale * ((2 * k - 1) / 255 - 1 - mean)
    b = inv_scale * ((2 * k + 1) / 255 - 1 - mean)
    return a, b, (2 / 255) * inv_scale, k <= 0, k >= 255


class _LogNdtr(torch.autograd.Function):
    """log Phi(z) with the derivative phi(z) / Phi(z) = sqrt(2 / pi) / erfcx(-z / sqrt(2)),
    which stays exact far into the lower tail (torch's own backward subtracts two numbers of
    order z^2 / 2 there and loses most digits in float32)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(z)
        return torch.special.log_ndtr(z)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (z,) = ctx.saved_tensors
        return grad * math.sqrt(2 / math.pi) / torch.special.erfcx(-z / math.sqrt(2))


def log_ndtr(z: torch.Tensor) -> torch.Tensor:
    """log Phi(z), the standard normal log-CDF, with a gradient accurate in both tails."""
    return _LogNdtr.apply(z)


def log_one_minus_exp(d: torch.Tensor) -> torch.Tensor:
    """log(1 - e^d) for d <= 0, accurate for d near 0 and far below it (Maechler 2012)."""
    return torch.where(d > -math.log(2), torch.log(-torch.expm1(d)), torch.log1p(-torch.exp(d)))


def discretized_logistic_log_prob_per_pixel(x: torch.Tensor, mean: torch.Tensor,
                                            log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) per pixel under a logistic(mean, exp(log_scale)) integrated over x's bin."""
    a, b, width, lowest, highest = _standardised_edges(x, mean, log_scale)
    log_upper = F.logsigmoid(b)        # log F(b): 0 for the highest bin's open end
    log_above_lower = F.logsigmoid(-a)  # log (1 - F(a)): 0 for the lowest bin's open end
    bin_term = log_one_minus_exp(-width)
    return torch.where(lowest, log_upper,
                       torch.where(highest, log_above_lower, log_upper + log_above_lower
                                   + bin_term))


def discretized_gaussian_log_prob_per_pixel(x: torch.Tensor, mean: torch.Tensor,
                                            log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) per pixel under a Gaussian(mean, exp(log_scale)^2) integrated over x's bin."""
    a, b, width, lowest, highest = _standardised_edges(x, mean, log_scale)
    upper_half = a + b > 0
    lo, hi = torch.where(upper_half, -b, a), torch.where(upper_half, -a, b)  # hi <= -lo
    log_hi = log_ndtr(hi)
    inner = log_hi + log_one_minus_exp(torch.minimum(log_ndtr(lo) - log_hi,
                                                     torch.full_like(lo, -1e-30)))
    centre = 0.5 * (a + b)
    narrow = (-0.5 * centre.square() - 0.5 * math.log(2 * math.pi)
              + math.log(2 / 255) - log_scale.float())
    inner = torch.where(width < _NARROW, narrow, inner)
    return torch.where(lowest, log_ndtr(b),
                       torch.where(highest, log_ndtr(-a), inner))


def discretized_logistic_log_prob(x: torch.Tensor, mean: torch.Tensor,
                                  log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) of 8-bit images under a logistic(mean, exp(log_scale)) per pixel, integrated
    over each pixel's bin."""
    return _sum_pixels(discretized_logistic_log_prob_per_pixel(x, mean, log_scale))


def discretized_gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor,
                                  log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) of 8-bit images under a Gaussian(mean, exp(log_scale)^2) per pixel, integrated
    over each pixel's bin (the DDPM decoder, Ho et al. 2020 eq. 13)."""
    return _sum_pixels(discretized_gaussian_log_prob_per_pixel(x, mean, log_scale))


def gaussian_kl_standard(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per row: 0.5 * sum(mu^2 + var - 1 - logvar)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)


def diagonal_normal_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
                             ) -> torch.Tensor:
    return -0.5 * ((z - mu).pow(2) / logvar.exp() + logvar + math.log(2 * math.pi)).sum(-1)


def normal_kl(mean1: torch.Tensor, log_var1: torch.Tensor, mean2: torch.Tensor,
              log_var2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^log_var1) || N(mean2, e^log_var2)) per element."""
    return 0.5 * (log_var2 - log_var1 + (log_var1.exp() + (mean1 - mean2) ** 2)
                  * torch.exp(-log_var2) - 1)


def slerp(z0: torch.Tensor, z1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985) between rows of z0 and z1 (B, D) at each weight
    w in `weights` (S,): sin((1 - w) theta) / sin(theta) z0 + sin(w theta) / sin(theta) z1,
    theta the angle between the rows; returns (B, S, D). It keeps Gaussian latents at a typical
    norm (White 2016); rows at an angle near 0 use the straight line instead."""
    cos = (z0 * z1).sum(1) / (z0.norm(dim=1) * z1.norm(dim=1))
    theta = torch.arccos(cos.clamp(-1, 1))[:, None, None]
    w = weights[None, :, None]
    a, b = z0[:, None], z1[:, None]
    sin = torch.sin(theta)
    parallel = sin.abs() < 1e-4
    safe = torch.where(parallel, torch.ones_like(sin), sin)
    curved = (torch.sin((1 - w) * theta) * a + torch.sin(w * theta) * b) / safe
    return torch.where(parallel, (1 - w) * a + w * b, curved)


class PixelLikelihood:
    """A decoder's output read as a per-pixel likelihood p(x | params), shared by every family
    with a pixel decoder (the VAE, the autoencoders):

    - bernoulli: C logits per pixel, for binary images (x in {-1, 1});
    - gaussian / logistic: a mean and a log-scale per pixel channel (2C outputs), the density
      integrated over each 8-bit bin (`discretized_*_log_prob`); log-scales below -7 are
      clamped (a bin is 2/255 wide, so narrower densities buy nothing but overflow).
    """

    NAMES = ("bernoulli", "gaussian", "logistic")
    MIN_LOG_SCALE = -7.0

    def __init__(self, name: str, option: str = "model.likelihood"):
        self.name = check_choice(option, name, self.NAMES)
        self._checked = False

    def channels(self, image_channels: int) -> int:
        """Decoder output channels for images of `image_channels` channels."""
        return image_channels if self.name == "bernoulli" else 2 * image_channels

    def _mean_and_log_scale(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_scale = params.float().chunk(2, dim=1)
        return mean, log_scale.clamp(min=self.MIN_LOG_SCALE)

    def log_prob_per_pixel(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p(x | params) per pixel channel (B, C, H, W), float32; `x` may carry leading
        dimensions in front of params' (B, C, H, W), which broadcast."""
        if self.name == "bernoulli":
            return bernoulli_log_prob_per_pixel(x, params.expand_as(x))
        mean, log_scale = self._mean_and_log_scale(params)
        if self.name == "gaussian":
            return discretized_gaussian_log_prob_per_pixel(x, mean, log_scale)
        return discretized_logistic_log_prob_per_pixel(x, mean, log_scale)

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p(x | params) per image (B,), float32."""
        return _sum_pixels(self.log_prob_per_pixel(x, params))

    def values(self) -> torch.Tensor:
        """Every value a pixel channel can take, in [-1, 1]: (-1, 1) for bernoulli, the 256
        bin centres 2k/255 - 1 otherwise; value index k is what an entropy coder codes."""
        if self.name == "bernoulli":
            return torch.tensor([-1.0, 1.0])
        return torch.arange(256) * (2 / 255) - 1

    def value_log_probs(self, params: torch.Tensor) -> torch.Tensor:
        """log p(x_i = v | params) for every pixel channel i and every value v of `values()`:
        (B, C, H, W, V), float32; each row sums to one in probability."""
        values = self.values().to(params.device)
        shape = (len(values), *self.mean(params).shape)
        return self.log_prob_per_pixel(values.view(-1, 1, 1, 1, 1).expand(shape),
                                       params).movedim(0, -1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The expected image, in [-1, 1] (for the discretized densities: their location,
        clamped)."""
        if self.name == "bernoulli":
            return torch.sigmoid(params.float()) * 2 - 1
        return params.float().chunk(2, dim=1)[0].clamp(-1, 1)

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None
               ) -> torch.Tensor:
        """One image from p(x | params), in [-1, 1]: binary pixels for bernoulli; for the
        discretized densities a continuous draw mean + scale * F^-1(u), clamped to [-1, 1]
        (its 8-bit bin is the discrete draw)."""
        u = torch.rand(self.mean(params).shape, device=params.device, generator=generator)
        if self.name == "bernoulli":
            return torch.where(u < torch.sigmoid(params.float()), 1.0, -1.0)
        mean, log_scale = self._mean_and_log_scale(params)
        u = u.clamp(1e-6, 1 - 1e-6)
        if self.name == "gaussian":
            standard = math.sqrt(2) * torch.special.erfinv(2 * u - 1)
        else:
            standard = torch.log(u) - torch.log1p(-u)
        return (mean + log_scale.exp() * standard).clamp(-1, 1)

    def check_input(self, x: torch.Tensor) -> None:
        """A GenlabError when a bernoulli likelihood is given 8-bit (non-binary) images; call it
        on training batches: only the first one is checked."""
        if self._checked:
            return
        if self.name == "bernoulli" and not ((x == -1) | (x == 1)).all():
            raise GenlabError("model.likelihood=bernoulli needs binary pixels: set "
                              "data.binarize=dynamic (or static), or choose "
                              "model.likelihood=logistic for 8-bit images.")
        self._checked = True
