"""Bits-back coding of uint8 images with a VAE and an ANS stack (BB-ANS, Townsend et al. 2019).

**The code.** A VAE gives p(x) = sum_z p(x|z) p(z) only as a bound, but a stack coder (ANS,
last in first out) turns the bound into a code length. Each latent dimension is discretised
into K = 2^P bins of equal prior mass (edges Phi^-1(j/K); bin j is decoded at the prior's
median in it, Phi^-1((j + 1/2)/K)), so the prior P(j) = 1/K, and the posterior q(z|x) =
N(mu, sigma^2) gets the same bins: Q(j|x) = Phi((e_j+1 - mu)/sigma) - Phi((e_j - mu)/sigma).
One chain step codes a batch of images x:

    encode:  j <- pop with Q(.|x)      (bits back: j is a sample from Q, paid for by the stack)
             push x with p(x | z_j)    (the pixel likelihood at the bin's latent)
             push j with P = uniform over K bins
    decode:  j <- pop with P;  x <- pop with p(.|z_j);  push j with Q(.|x)   (bits returned)

so a step adds on average E_Q[-log2 p(x|z_j) - log2 P(j) + log2 Q(j|x)] bits: the negative
ELBO of the discretised model, which approaches the VAE's -ELBO as the bins narrow (P grows)
against the posterior's width. Steps follow each other on one stack (the chain); the file is
the stack after the last step, and the decoder runs the steps backwards.

**Initial bits.** The first pop needs bits already on the stack. The stack starts with
`initial_words(...)` 32-bit words from a generator seeded 0, enough for the first step's pop;
they are part of the file (their cost is in its size, amortised over the chain) and the decoder
finds exactly them left at the end, a check that decoding retraced the encoding.

**Identical probabilities.** The decoder recomputes Q(.|x) and p(.|z_j) from the same inputs in
the same batches (same batch shapes, float32 on one CPU thread, then float64 for the bin
masses); constriction's `Categorical(perfect=False)` turns them into integer frequencies (24
bits, none zero) the same way on both sides.

**Latents in two levels.** Because the coder gives every table entry at least 2^-24, a
posterior coded as one table of all K bins would draw a bin it gives no mass with probability
about K / 2^24 per latent (2.4e-4 for K = 2^12), and such a latent decodes to a far-off image
that costs hundreds of bits. So bin j = c 2^b + f is coded as a coarse bin c (2^a bins, a =
P // 2) with Q(c|x), then a fine bin f within it (2^b bins, b = P - a) with Q(f | c, x) =
Q(j|x) / Q(c|x): the same Q(j|x) overall, but tables of 2^a and 2^b entries, so the
stray draws fall to about (2^a + 2^b) / 2^24 per latent. The prior is coded as one
`Uniform(K)`.
"""

from __future__ import annotations

import math

import constriction
import numpy as np
import torch

from genlab.codec.pixels import coder_probabilities, to_uint8, value_indices
from genlab.errors import GenlabError
from genlab.models.pixelcnn import one_cpu_thread
from genlab.models.vae import VAE

BATCH_SIZE = 1      # images per chain step: the initial bits grow with it, the speed too
LATENT_BITS = 12    # P: 2^P bins of equal prior mass per latent dimension


def check_latent_bits(bits: int) -> None:
    """A GenlabError unless 2 <= bits <= 20 (constriction's uniform prior holds < 2^24 bins)."""
    if not 2 <= bits <= 20:
        raise GenlabError(f"--latent-bits={bits}: give 2 to 20 bits per latent dimension (12, "
                          "the default, gives bins much narrower than a typical posterior).")


class LatentBins:
    """The K = 2^P bins of equal mass under N(0, 1): edges Phi^-1(j / K), j = 0..K (float64,
    -inf and +inf at the ends) and the latent each bin decodes to, Phi^-1((j + 1/2) / K);
    grouped 2^b to a coarse bin (module docstring)."""

    def __init__(self, bits: int):
        check_latent_bits(bits)
        self.bits, self.count = bits, 1 << bits
        self.fine_bits = bits - bits // 2
        grid = torch.arange(self.count + 1, dtype=torch.float64) / self.count
        self.edges = torch.special.ndtri(grid)
        self.centres = torch.special.ndtri(grid[:-1] + 0.5 / self.count)

    def coarse_masses(self, mu: torch.Tensor, sigma: torch.Tensor) -> np.ndarray:
        """Q(c|x) of every coarse bin for posteriors N(mu, sigma^2) given flat (n,) in
        float64: (n, 2^a)."""
        edges = self.edges[::1 << self.fine_bits]
        return _masses(edges[:-1].expand(len(mu), -1), edges[1:].expand(len(mu), -1), mu, sigma)

    def fine_masses(self, mu: torch.Tensor, sigma: torch.Tensor, coarse: np.ndarray
                    ) -> np.ndarray:
        """Q(f | c, x), up to the factor 1 / Q(c|x) the coder's normalisation supplies, of the
        fine bins of each posterior's coarse bin c: (n, 2^b). A coarse bin the posterior gives
        no mass in float64 (drawn through the coder's floor) gets uniform fine masses."""
        bins = torch.from_numpy(coarse)[:, None] * (1 << self.fine_bits) + torch.arange(
            1 << self.fine_bits)
        masses = _masses(self.edges[bins], self.edges[bins + 1], mu, sigma)
        empty = masses.sum(1) == 0
        masses[empty] = 1.0
        return masses


def _masses(lower: torch.Tensor, upper: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor
            ) -> np.ndarray:
    """Phi((upper - mu)/sigma) - Phi((lower - mu)/sigma) for rows of bin edges (n, m) and
    posteriors (n,), float64, each difference taken in the tail where both CDFs are small (no
    cancellation): (n, m) for the coder."""
    a = (lower - mu[:, None]) / sigma[:, None]
    b = (upper - mu[:, None]) / sigma[:, None]
    mass = torch.where(a > 0, _cdf(-a) - _cdf(-b), _cdf(b) - _cdf(a))
    return np.ascontiguousarray(mass.numpy())


def _cdf(x: torch.Tensor) -> torch.Tensor:
    """Phi(x) to full relative precision in the lower tail (torch.special.ndtr flushes to 0
    below x = -9 in float64; its logarithm does not)."""
    return torch.special.log_ndtr(x).exp()


def initial_words(images: int, latent_dim: int, bits: int) -> np.ndarray:
    """The stack's starting content: enough seeded random 32-bit words for the first step's
    pop of `images` x `latent_dim` bins (at most `bits` bits each, on average), the last word
    nonzero as constriction requires."""
    count = math.ceil(images * latent_dim * bits / 32) + 1
    return np.random.default_rng(0).integers(1, 2**32, size=count, dtype=np.uint32)


def _steps(count: int, batch_size: int) -> list[tuple[int, int]]:
    return [(begin, min(count, begin + batch_size)) for begin in range(0, count, batch_size)]


class _Step:
    """The model's side of one chain step: posteriors, and pixel probabilities at bins."""

    def __init__(self, model: VAE, bins: LatentBins):
        self.model, self.bins = model, bins
        self.pixels = constriction.stream.model.Categorical(perfect=False)
        self.prior = constriction.stream.model.Uniform(bins.count)

    @torch.no_grad()
    def posterior(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mu and sigma of q(z|x), flat (n L,) in float64, for images given as value indices
        (n, C, H, W)."""
        mu, logvar = self.model.posterior_params(self.model.pixels.values()[indices])
        return mu.double().reshape(-1), (0.5 * logvar.double()).exp().reshape(-1)

    def pop_bins(self, stack, mu: torch.Tensor, sigma: torch.Tensor) -> np.ndarray:
        """Draw each latent's bin from the stack with Q(.|x): coarse, then fine."""
        coarse = stack.decode(self.pixels, self.bins.coarse_masses(mu, sigma)).astype(np.int64)
        fine = stack.decode(self.pixels, self.bins.fine_masses(mu, sigma, coarse))
        return coarse * (1 << self.bins.fine_bits) + fine

    def push_bins(self, stack, bins: np.ndarray, mu: torch.Tensor, sigma: torch.Tensor) -> None:
        """The inverse of `pop_bins`: push the fine bins, then the coarse ones."""
        coarse, fine = np.divmod(bins, 1 << self.bins.fine_bits)
        stack.encode_reverse(fine.astype(np.int32), self.pixels,
                             self.bins.fine_masses(mu, sigma, coarse))
        stack.encode_reverse(coarse.astype(np.int32), self.pixels,
                             self.bins.coarse_masses(mu, sigma))

    @torch.no_grad()
    def pixel_probabilities(self, bins: np.ndarray) -> np.ndarray:
        z = self.bins.centres[torch.from_numpy(bins).long()].float()
        log_probs = self.model.pixels.value_log_probs(self.model.decoder_params(z))
        return coder_probabilities(log_probs.reshape(-1, log_probs.shape[-1]))


def encode(model: VAE, images: torch.Tensor, batch_size: int = BATCH_SIZE,
           latent_bits: int = LATENT_BITS) -> np.ndarray:
    """The ANS stack (uint32 words) after coding uint8 images (N, C, H, W) in chain steps of
    `batch_size` images, the initial words at its bottom."""
    binary = model.pixels.name == "bernoulli"
    indices = value_indices(images, model.image_shape, binary)
    step = _Step(model, LatentBins(latent_bits))
    stack = constriction.stream.stack.AnsCoder(
        initial_words(min(batch_size, len(images)), model.latent_dim, latent_bits))
    with one_cpu_thread(True):
        for begin, end in _steps(len(images), batch_size):
            x = indices[begin:end]
            bins = step.pop_bins(stack, *step.posterior(x)).reshape(end - begin, -1)
            stack.encode_reverse(x.reshape(-1).numpy().astype(np.int32), step.pixels,
                                 step.pixel_probabilities(bins))
            stack.encode_reverse(bins.reshape(-1).astype(np.int32), step.prior)
    return stack.get_compressed()


def decode(model: VAE, words: np.ndarray, count: int, batch_size: int = BATCH_SIZE,
           latent_bits: int = LATENT_BITS) -> torch.Tensor:
    """The `count` uint8 images (N, C, H, W) that `encode` coded into `words` with the same
    model, `batch_size` and `latent_bits`."""
    binary = model.pixels.name == "bernoulli"
    c, h, w = model.image_shape
    step = _Step(model, LatentBins(latent_bits))
    stack = constriction.stream.stack.AnsCoder(words.copy())
    parts = []
    with one_cpu_thread(True):
        for begin, end in reversed(_steps(count, batch_size)):
            n = end - begin
            bins = stack.decode(step.prior, n * model.latent_dim).reshape(n, model.latent_dim)
            x = torch.from_numpy(stack.decode(step.pixels, step.pixel_probabilities(bins))
                                 .astype(np.int64)).view(n, c, h, w)
            step.push_bins(stack, bins.reshape(-1), *step.posterior(x))
            parts.append(to_uint8(x, binary))
    start = initial_words(min(batch_size, count), model.latent_dim, latent_bits)
    if not np.array_equal(stack.get_compressed(), start):
        raise GenlabError("Bits-back decoding did not retrace the encoding (the stack did not "
                          "return to its initial words): the stream was not written by this "
                          "model with these settings, or the model's probabilities came out "
                          "differently here than when compressing (another torch version or "
                          "CPU). Decompress with the checkpoint, software and machine type that "
                          "compressed it.")
    return torch.cat(parts[::-1])


