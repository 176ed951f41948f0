"""Autoregressive image models (PixelCNN and its variants) without networks: the ordering, the
per-sub-pixel likelihoods and the one exact ancestral sampling loop.

**Ordering.** An image x (C, H, W) is a sequence of D = C H W sub-pixels in raster order over
pixels and R -> G -> B inside a pixel (van den Oord et al. 2016a, eq. 2):

    p(x) = prod_t p(x_t | x_<t),      t = (i W + j) C + c   for row i, column j, channel c.

A network maps x to outputs `out` (B, F, H, W) whose values at pixel (i, j) may depend only on
the sub-pixels before (i, j, c) for the channels c they parameterise; a head turns x and `out`
into log p(x_t | x_<t) for every t, (B, C, H, W) ("per sub-pixel", in nats), whose sum over
t is the exact log-likelihood of the image. The heads (`PixelHead`, chosen by name):

- softmax (`categorical_log_prob`): 256 values per sub-pixel (van den Oord et al. 2016a);
  `out` is (B, 256 C, H, W) with feature v C + c the logit of value v for channel c.
- bernoulli (`genlab.maths.distributions.bernoulli_log_prob_per_pixel`): binary sub-pixels,
  one logit each, `out` (B, C, H, W).
- logistic_mixture (`logistic_mixture_log_prob`): the discretized logistic mixture of Salimans
  et al. 2017 over whole pixels, the means of later channels linear in the earlier channels.

**Sampling.** `ancestral_sample` draws x_t ~ p(x_t | x_<t) for t = start .. D - 1 from the
head's conditional at every value a sub-pixel can take (`PixelHead.value_log_probs`, which is
the head's likelihood evaluated at each value: `candidate_log_probs`), so sampler and likelihood
are one definition. Completion given a raster-order prefix of known sub-pixels is the same loop
started after the prefix: exact samples of p(x_rest | x_prefix). It is not exact for any other
set of known pixels, which is why `raster_prefix_length` refuses them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from genlab.errors import GenlabError
from genlab.maths.distributions import (
    bernoulli_log_prob_per_pixel,
    discretized_logistic_log_prob_per_pixel,
)

HeadLogProb = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, out) -> (B, C, H, W)
PixelOutput = Callable[[torch.Tensor, int, int, int], torch.Tensor]  # (x, i, j, c) -> (B, F)
Choose = Callable[[torch.Tensor, int], torch.Tensor]  # (log_probs (B, V), t) -> indices (B,)

NUM_VALUES = 256  # 8-bit sub-pixels


def pixel_index(x: torch.Tensor) -> torch.Tensor:
    """The 8-bit value k of each grid value x = 2k/255 - 1, as a long tensor."""
    return torch.round((x.float() + 1) * 127.5).long().clamp_(0, NUM_VALUES - 1)


# -- heads ---------------------------------------------------------------------------------------
def categorical_log_prob(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[k] per sub-pixel, for x on the 8-bit grid and logits
    (B, 256 C, H, W) laid out as (B, 256, C, H, W)."""
    b, c, h, w = x.shape
    log_probs = F.log_softmax(logits.float().view(b, NUM_VALUES, c, h, w), dim=1)
    return log_probs.gather(1, pixel_index(x)[:, None]).squeeze(1)


def num_mixture_params(channels: int, mixtures: int) -> int:
    """Output features of the logistic mixture head: per component a logit, C means, C log-scales
    and C (C - 1) / 2 channel coefficients (10 per component for RGB, Salimans et al. 2017)."""
    return mixtures * (1 + 2 * channels + channels * (channels - 1) // 2)


def logistic_mixture_log_prob(x: torch.Tensor, params: torch.Tensor,
                              mixtures: int) -> torch.Tensor:
    """log p(x_c | x_<c) per sub-pixel under the discretized logistic mixture over whole pixels
    of Salimans et al. 2017 (eq. 2 and 3), for x on the 8-bit grid:

        p(x_pixel) = sum_k pi_k prod_c P(x_c | mu_kc(x_<c), s_kc),
        mu_kc(x_<c) = m_kc + sum_{c' < c} tanh(a_kcc') x_c'     (G on R; B on R and G),
    P the logistic mass of x_c's bin with the edge bins open (`genlab.maths.distributions`:
    exact log-CDF differences, so the paper's fallback for tiny bin masses is not needed), with
    log s >= -7. The component is shared by the channels of a pixel, so channel c's conditional
    a mixture under the components' posterior given the earlier channels:

        log p(x_c | x_<c) = LSE_k [log softmax_k(S_k(c-1)) + log P_kc],
        S_k(c-1) = log pi_k + sum_{c' < c} log P_kc',
    which is normalised by construction (the difference LSE_k S_kc - LSE_k S_k(c-1) is the
    same number but loses digits in float32 when the earlier channels are improbable); the
    sub-pixels of a pixel sum to its log-probability.
    `params` (B, num_mixture_params(C, K), H, W): K logits, then (2C + C(C-1)/2, K) rows of
    means, log-scales and coefficients for the pairs (1, 0), (2, 0), (2, 1), ..."""
    b, c, h, w = x.shape
    k = mixtures
    params = params.float()
    log_pi = F.log_softmax(params[:, :k], dim=1)  # (B, K, H, W)
    rest = params[:, k:].reshape(b, -1, k, h, w)
    means, log_scales = rest[:, :c], rest[:, c:2 * c].clamp(min=-7.0)  # (B, C, K, H, W)
    coefficients = torch.tanh(rest[:, 2 * c:])
    xf = x.float()
    adjusted, pair = [means[:, 0]], 0
    for channel in range(1, c):
        mean = means[:, channel]
        for earlier in range(channel):
            mean = mean + coefficients[:, pair] * xf[:, earlier, None]
            pair += 1
        adjusted.append(mean)
    means = torch.stack(adjusted, dim=1)
    per_component = discretized_logistic_log_prob_per_pixel(
        xf[:, :, None].expand_as(means), means, log_scales)  # (B, C, K, H, W)
    earlier = torch.cat([torch.zeros_like(per_component[:, :1]),
                         per_component[:, :-1].cumsum(1)], dim=1)  # sum_{c' < c} log P_kc'
    posterior = F.log_softmax(log_pi[:, None] + earlier, dim=2)  # log p(k | x_<c)
    return torch.logsumexp(posterior + per_component, dim=2)


def candidate_log_probs(log_prob: HeadLogProb, x_pixel: torch.Tensor, out_pixel: torch.Tensor,
                        c: int, values: torch.Tensor) -> torch.Tensor:
    """log p(x_c = v | x_<c) (B, V) for every value v, by evaluating a head's log_prob at the
    pixel with channel c set to each v in turn (its earlier channels as in x_pixel (B, C); its
    later channels do not enter channel c's conditional); out_pixel (B, F) are the network's
    outputs at the pixel."""
    v, (b, channels) = len(values), x_pixel.shape
    candidates = x_pixel[None].repeat(v, 1, 1)  # (V, B, C)
    candidates[:, :, c] = values[:, None].to(candidates.dtype)
    outs = out_pixel[None].expand(v, *out_pixel.shape)
    lp = log_prob(candidates.reshape(v * b, channels, 1, 1),
                  outs.reshape(v * b, -1, 1, 1))[:, c, 0, 0]
    return lp.view(v, b).T


HEADS = ("softmax", "bernoulli", "logistic_mixture")


class PixelHead:
    """One of HEADS for images of `channels` channels: the number of network outputs it reads
    (`num_outputs`), log p(x_t | x_<t) per sub-pixel (`log_prob`), the same conditional at every
    value of one sub-pixel for sampling (`value_log_probs`, equal to `candidate_log_probs` of
    `log_prob`; softmax and Bernoulli read it off their logits directly), the values a sub-pixel
    takes (`values`), and whether the network's outputs at a pixel must ignore the whole pixel
    (`whole_pixel`: the mixture models a pixel's channels itself) or may see its earlier
    channels (softmax, Bernoulli: one output group per channel)."""

    def __init__(self, name: str, channels: int, mixtures: int = 10):
        self.name, self.channels, self.mixtures = name, channels, mixtures
        self.binary = name == "bernoulli"
        self.whole_pixel = name == "logistic_mixture"
        self.num_outputs = {"softmax": NUM_VALUES * channels, "bernoulli": channels,
                            "logistic_mixture": num_mixture_params(channels, mixtures)}[name]

    def values(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """The values a sub-pixel takes in [-1, 1]: the 8-bit grid 2k/255 - 1, or {-1, 1}."""
        if self.binary:
            return torch.tensor([-1.0, 1.0], device=device, dtype=dtype)
        return torch.arange(NUM_VALUES, device=device, dtype=dtype) * (2 / 255) - 1

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """log p(x_t | x_<t) (B, C, H, W) in nats, float32, from network outputs (B, F, H, W)."""
        if self.name == "softmax":
            return categorical_log_prob(x, out)
        if self.name == "bernoulli":
            return bernoulli_log_prob_per_pixel(x, out)
        return logistic_mixture_log_prob(x, out, self.mixtures)

    def value_log_probs(self, x_pixel: torch.Tensor, out_pixel: torch.Tensor, c: int
                        ) -> torch.Tensor:
        """log p(x_c = v | x_<c) (B, V) for every value v of `values`, at one pixel: x_pixel
        (B, C) with the channels before c known, out_pixel (B, F) the network's outputs."""
        if self.name == "softmax":
            logits = out_pixel.float().view(len(out_pixel), NUM_VALUES, self.channels)[:, :, c]
            return F.log_softmax(logits, dim=1)
        if self.name == "bernoulli":
            logit = out_pixel[:, c].float()
            return torch.stack([F.logsigmoid(-logit), F.logsigmoid(logit)], dim=1)
        return candidate_log_probs(self.log_prob, x_pixel, out_pixel, c,
                                   self.values(x_pixel.device, x_pixel.dtype))


# -- ordering ------------------------------------------------------------------------------------
def raster_position(t: int, channels: int, width: int) -> tuple[int, int, int]:
    """(row, column, channel) of sub-pixel t in raster-then-channel order."""
    pixel, c = divmod(t, channels)
    i, j = divmod(pixel, width)
    return i, j, c


def raster_prefix_length(mask: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """For a mask (1 where a sub-pixel is known) broadcastable to images `shape` (B, C, H, W):
    the number of known sub-pixels of each image, (B,), when they are a prefix in
    raster-then-channel order (e.g. the top rows). Any other mask is a GenlabError: an
    autoregressive model conditions only on the sub-pixels before the one it predicts, so only a
    prefix can be completed exactly."""
    b, c, h, w = shape
    if (mask.dim() != 4 or mask.shape[0] not in (1, b) or mask.shape[1] not in (1, c)
            or tuple(mask.shape[2:]) != (h, w)):
        raise GenlabError(f"The mask has shape {tuple(mask.shape)}; it must broadcast to the "
                          f"images {tuple(shape)}: (1 or {b}, 1 or {c}, {h}, {w}), with 1 where "
                          "a pixel is known and 0 where it is to be generated.")
    known = mask.expand(b, c, h, w).permute(0, 2, 3, 1).flatten(1)  # raster-then-channel order
    if not ((known == 0) | (known == 1)).all() or (known[:, 1:] > known[:, :-1]).any():
        raise GenlabError(
            "An autoregressive model completes an image exactly only when the known pixels come "
            "first in its generation order (rows top to bottom, each left to right, R before G "
            "before B inside a pixel), e.g. the top rows: it samples each pixel given the ones "
            "before it, and a known pixel after an unknown one would have to be conditioned on, "
            "which needs a sum over every value of the pixels in between. Give a mask of 0s and "
            "1s whose 1s are such a prefix (the 'complete' task keeps the top half).")
    return known.sum(1).long()


# -- sampling ------------------------------------------------------------------------------------
def sample_categorical(log_probs: torch.Tensor, generator: torch.Generator | None = None
                       ) -> torch.Tensor:
    """One draw per row of a categorical distribution given by log-probabilities (B, V), by the
    Gumbel-max trick: argmax_v (log p_v - log E_v) with E_v ~ Exponential(1) from `generator`
    (float64, so that only exact ties of the perturbed values, never rounding, decide)."""
    e = torch.empty(log_probs.shape, dtype=torch.float64, device=log_probs.device)
    e.exponential_(generator=generator)
    return (log_probs.double() - e.clamp_min(1e-300).log()).argmax(-1)


@torch.no_grad()
def ancestral_sample(output_at: PixelOutput, head: PixelHead, x: torch.Tensor,
                     start: torch.Tensor | None = None,
                     generator: torch.Generator | None = None,
                     choose: Choose | None = None) -> torch.Tensor:
    """Exact ancestral sampling: for t = start .. D - 1 in raster-then-channel order, draw
    x_t ~ p(x_t | x_<t) over the head's values and write it into x (in place; x is returned).
    output_at(x, i, j, c) gives the network's outputs at pixel (i, j), (B, F), once every
    sub-pixel before (i, j, c) is in x; `start` (B,) is the number of known sub-pixels of each
    image (default 0): sub-pixels t < start keep their value exactly. One categorical draw per
    sub-pixel and image comes from `generator`, so a fixed generator gives fixed samples. Every
    variant samples and completes through this loop; they differ only in output_at.
    `choose(log_probs, t)`, when given, picks the value index of sub-pixel t (B,) from its
    conditional (B, V) instead of the random draw: the lossless codec (`genlab.codec`) encodes
    the true value there, or decodes it, so coder and sampler are one loop."""
    b, channels, _, width = x.shape
    values = head.values(x.device, x.dtype)
    if start is None:
        start = torch.zeros(b, dtype=torch.long, device=x.device)
    for t in range(int(start.min()), x[0].numel()):
        i, j, c = raster_position(t, channels, width)
        lp = head.value_log_probs(x[:, :, i, j], output_at(x, i, j, c), c)
        drawn = values[sample_categorical(lp, generator) if choose is None else choose(lp, t)]
        x[:, c, i, j] = torch.where(start <= t, drawn, x[:, c, i, j])
    return x
