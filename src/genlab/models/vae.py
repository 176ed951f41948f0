"""Variational autoencoder (Kingma & Welling 2014) with an importance-weighted test bound
(Burda et al. 2016).

    ELBO(x)  = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z))                       <= log p(x)
    L_K(x)   = E[log (1/K) sum_k p(x, z_k) / q(z_k|x)],  z_k ~ q(z|x)            <= log p(x)
with ELBO = L_1 <= L_K <= L_{K+1} -> log p(x) as K grows. Training maximises
E[log p(x|z)] - beta * KL (beta = 1 is the ELBO; beta > 1 is the beta-VAE of Higgins et al.).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from genlab.distributions import (
    bernoulli_log_prob,
    diagonal_normal_log_prob,
    discretized_gaussian_log_prob,
    discretized_logistic_log_prob,
    gaussian_kl_standard,
    standard_normal_log_prob,
)
from genlab.errors import GenlabError, check_choice
from genlab.models.base import GenerativeModule
from genlab.nets.conv import ConvDecoder, ConvEncoder

LIKELIHOODS = ("bernoulli", "gaussian", "logistic")


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, n: int | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + sigma * eps; with `n`, n samples stacked in front: (n, B, L)."""
    shape = mu.shape if n is None else (n, *mu.shape)
    eps = torch.randn(shape, device=mu.device, dtype=mu.dtype, generator=generator)
    return mu + (0.5 * logvar).exp() * eps


def elbo(mu: torch.Tensor, logvar: torch.Tensor,
         log_likelihood: Callable[[torch.Tensor], torch.Tensor]
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """One-sample reconstruction term log p(x|z) and the analytic KL, per image."""
    return log_likelihood(reparameterize(mu, logvar)), gaussian_kl_standard(mu, logvar)


def importance_weighted_bound(mu: torch.Tensor, logvar: torch.Tensor,
                              log_likelihood: Callable[[torch.Tensor], torch.Tensor], k: int,
                              chunk: int) -> torch.Tensor:
    """L_K per image. `log_likelihood` maps z of shape (n, B, L) to log p(x|z) of shape (n, B);
    the K samples are drawn `chunk` at a time."""
    log_weights = []
    for start in range(0, k, chunk):
        z = reparameterize(mu, logvar, n=min(chunk, k - start))
        log_weights.append(log_likelihood(z) + standard_normal_log_prob(z)
                           - diagonal_normal_log_prob(z, mu, logvar))
    return torch.logsumexp(torch.cat(log_weights), dim=0) - math.log(k)


class VAE(GenerativeModule):
    """Convolutional VAE with a diagonal Gaussian posterior and a choice of pixel likelihood:

    - bernoulli: binary pixels (binarized MNIST; set data.binarize);
    - gaussian: a Gaussian per pixel with learned scale, integrated over each 8-bit bin;
    - logistic: a logistic per pixel with learned scale, integrated over each 8-bit bin.
    Class-conditional (labels as one-hot inputs to encoder head and decoder) when `conditional`.
    """

    has_likelihood = True

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int = 0,
                 conditional: bool = False, latent_dim: int = 32,
                 channels: tuple[int, ...] = (32, 64, 128), likelihood: str = "logistic",
                 beta: float = 1.0, test_importance_samples: int = 1000,
                 importance_batch: int = 8192, **base):
        super().__init__(image_shape, num_classes, conditional, **base)
        check_choice("model.likelihood", likelihood, LIKELIHOODS)
        self.save_hyperparameters(logger=False, ignore=["optimizer", "scheduler"])
        c, size, _ = self.image_shape
        self.latent_dim, self.likelihood, self.beta = latent_dim, likelihood, beta
        self.test_importance_samples = test_importance_samples
        self.importance_batch = importance_batch
        cond = num_classes if conditional else 0
        self.encoder = ConvEncoder(c, size, tuple(channels))
        self.posterior = nn.Linear(self.encoder.out_features + cond, 2 * latent_dim)
        out_channels = c if likelihood == "bernoulli" else 2 * c  # mean and log-scale
        self.decoder = ConvDecoder(latent_dim + cond, out_channels, size, tuple(channels))
        self._checked_binary = False

    # -- the model ---------------------------------------------------------------------------
    def _with_labels(self, h: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if not self.conditional:
            return h
        one_hot = F.one_hot(labels, self.num_classes).to(h.dtype)
        return torch.cat([h, one_hot.expand(*h.shape[:-1], -1)], dim=-1)

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior q(z|x) = N(mu, diag(exp(logvar)))."""
        h = self._with_labels(self.encoder(x), self.condition(labels))
        mu, logvar = self.posterior(h).chunk(2, dim=-1)
        return mu, logvar.clamp(-30, 20)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder parameters for latents z (B, L): logits, or mean and log-scale stacked."""
        return self.decoder(self._with_labels(z, self.condition(labels)))

    def log_likelihood(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per image from decoder parameters."""
        if self.likelihood == "bernoulli":
            return bernoulli_log_prob(x, params)
        mean, log_scale = params.chunk(2, dim=1)
        log_scale = log_scale.clamp(min=-7.0)
        if self.likelihood == "gaussian":
            return discretized_gaussian_log_prob(x, mean, log_scale)
        return discretized_logistic_log_prob(x, mean, log_scale)

    def mean_image(self, params: torch.Tensor) -> torch.Tensor:
        """The decoder's expected image, in [-1, 1]."""
        if self.likelihood == "bernoulli":
            return torch.sigmoid(params) * 2 - 1
        return params.chunk(2, dim=1)[0].clamp(-1, 1)

    def _log_likelihood_fn(self, x: torch.Tensor, labels: torch.Tensor | None):
        """z (..., B, L) -> log p(x|z) (..., B), decoding all leading sample dims at once."""
        def fn(z: torch.Tensor) -> torch.Tensor:
            lead = z.shape[:-2]
            n = math.prod(lead)
            xs = x.expand(*lead, *x.shape).reshape(-1, *x.shape[1:])
            ys = None if labels is None else labels.expand(*lead, *labels.shape).reshape(-1)
            return self.log_likelihood(xs, self.decode(z.reshape(n * z.shape[-2], -1), ys)
                                       ).view(*lead, -1)
        return fn

    def negative_elbo(self, x: torch.Tensor, labels: torch.Tensor | None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image: reconstruction NLL -log p(x|z) and KL."""
        mu, logvar = self.encode(x, labels)
        log_px, kl = elbo(mu, logvar, self._log_likelihood_fn(x, labels))
        return -log_px, kl

    # -- training and evaluation -------------------------------------------------------------
    def _check_binary(self, x: torch.Tensor) -> None:
        if self.likelihood == "bernoulli" and not self._checked_binary:
            if not ((x == -1) | (x == 1)).all():
                raise GenlabError("model.likelihood=bernoulli needs binary pixels: set "
                                  "data.binarize=dynamic (or static), or choose "
                                  "model.likelihood=logistic for 8-bit images.")
            self._checked_binary = True

    def training_step(self, batch, batch_idx):
        x, labels = batch
        self._check_binary(x)
        rec, kl = self.negative_elbo(x, self.condition(labels))
        loss = (rec + self.beta * kl).mean()
        self.log_dict({"train/loss": loss, "train/recon_nll": rec.mean(), "train/kl": kl.mean()},
                      prog_bar=False)
        self.log("train/elbo", -(rec + kl).mean(), prog_bar=True)
        return loss

    def _evaluate(self, batch, stage: str) -> torch.Tensor:
        x, labels = batch
        labels = self.condition(labels)
        rec, kl = self.negative_elbo(x, labels)
        neg_elbo = rec + kl
        self.log_dict({f"{stage}/loss": (rec + self.beta * kl).mean(),
                       f"{stage}/elbo": -neg_elbo.mean(), f"{stage}/kl": kl.mean()}, sync_dist=True)
        return neg_elbo

    def validation_step(self, batch, batch_idx):
        self.log_nll("val", self._evaluate(batch, "val"))

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")
        x, labels = batch
        labels = self.condition(labels)
        mu, logvar = self.encode(x, labels)
        k = self.test_importance_samples
        chunk = max(1, self.importance_batch // len(x))
        bound = importance_weighted_bound(mu, logvar, self._log_likelihood_fn(x, labels), k, chunk)
        self.log_nll("test", -bound)

    # -- capabilities ------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Decoder means for z ~ N(0, I)."""
        z = torch.randn(n, self.latent_dim, device=self.device, generator=generator)
        return self.mean_image(self.decode(z, labels))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder mean at the posterior mean."""
        return self.mean_image(self.decode(self.encode(x, labels)[0], labels))

    @torch.no_grad()
    def interpolate(self, x0: torch.Tensor, x1: torch.Tensor, steps: int = 8,
                    labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images along the straight line between two posterior means: (steps, C, H, W)."""
        pair = torch.stack([x0, x1])
        pair_labels = None if labels is None else labels.expand(2)
        mu = self.encode(pair, pair_labels)[0]
        t = torch.linspace(0, 1, steps, device=mu.device)[:, None]
        z = (1 - t) * mu[0] + t * mu[1]
        return self.mean_image(self.decode(z, None if labels is None else labels.expand(steps)))

    @torch.no_grad()
    def latent_traversal(self, x: torch.Tensor | None = None, dims: int | None = None,
                         steps: int = 8, span: float = 3.0,
                         labels: torch.Tensor | None = None) -> torch.Tensor:
        """Vary one latent dimension at a time over [-span, span] around the posterior mean of
        x (or the origin): returns (dims * steps, C, H, W), one row per dimension."""
        dims = min(dims or 8, self.latent_dim)
        origin = (self.encode(x[None], None if labels is None else labels.view(1))[0][0]
                  if x is not None else torch.zeros(self.latent_dim, device=self.device))
        z = origin.repeat(dims, steps, 1)
        values = torch.linspace(-span, span, steps, device=self.device)
        for d in range(dims):
            z[d, :, d] = values
        row_labels = None if labels is None else labels.view(1).expand(dims * steps)
        return self.mean_image(self.decode(z.view(dims * steps, -1), row_labels))

    # -- demos for evaluate.py tasks=[...] -------------------------------------------------
    def demo_reconstruct(self, x, labels=None, generator=None) -> torch.Tensor:
        """Each image followed by its reconstruction."""
        return torch.stack([x, self.reconstruct(x, labels)], dim=1).flatten(0, 1)

    def demo_interpolate(self, x, labels=None, generator=None, steps: int = 8) -> torch.Tensor:
        """Rows of `steps` images between consecutive pairs of images."""
        rows = [self.interpolate(x[i], x[i + 1], steps, None if labels is None else labels[i])
                for i in range(0, min(len(x), 16) - 1, 2)]
        return torch.cat(rows)

    def demo_traversal(self, x, labels=None, generator=None) -> torch.Tensor:
        """One row per latent dimension, varied around the first image's posterior mean."""
        return self.latent_traversal(x[0], labels=None if labels is None else labels[0])
