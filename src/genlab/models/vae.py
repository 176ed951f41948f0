"""Variational autoencoder (Kingma & Welling 2014) with an importance-weighted test bound
(Burda et al. 2016); the bounds are in `genlab.maths.vae`. Training maximises
E[log p(x|z)] - beta * KL (beta = 1 is the ELBO; beta > 1 is the beta-VAE of Higgins et al.).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab.checks import NonEmpty, OneOf, Range
from genlab.errors import GenlabError, check_choice
from genlab.maths.distributions import (
    bernoulli_log_prob,
    discretized_gaussian_log_prob,
    discretized_logistic_log_prob,
)
from genlab.maths.vae import elbo, importance_weighted_bound
from genlab.models.base import GenerativeModule
from genlab.nets.conv import ConvDecoder, ConvEncoder
from genlab.progress import Progress

log = logging.getLogger(__name__)
LIKELIHOODS = ("bernoulli", "gaussian", "logistic")


class VAE(GenerativeModule):
    """Convolutional VAE with a diagonal Gaussian posterior and a choice of pixel likelihood:

    - bernoulli: binary pixels (binarized MNIST; set data.binarize);
    - gaussian: a Gaussian per pixel with learned scale, integrated over each 8-bit bin;
    - logistic: a logistic per pixel with learned scale, integrated over each 8-bit bin.
    Class-conditional (labels as one-hot inputs to encoder head and decoder) when `conditional`.

    The test step logs the ELBO of every test image and the importance-weighted bound L_K
    (K = `test_importance_samples`) of the first `bound_images` (None: all) as
    `test/nll_nats_k<K>` and `test/bpd`. The defaults (K=100, 256 images) keep the test at the
    end of training short; evaluate.py computes K=1000 on every image (`full_evaluation`).
    """

    has_likelihood = True
    accepts_dequantized_data = False
    evaluation_keys = frozenset({"test_importance_samples", "importance_batch", "bound_images"})
    full_evaluation = {"test_importance_samples": 1000, "bound_images": None}

    def __init__(self, image_shape: Annotated[tuple[int, int, int], Range(1)],
                 num_classes: Annotated[int, Range(0)] = 0, conditional: bool = False,
                 latent_dim: Annotated[int, Range(1)] = 32,
                 channels: Annotated[tuple[int, ...], NonEmpty, Range(4)] = (32, 64, 128),
                 likelihood: Annotated[str, OneOf(LIKELIHOODS)] = "logistic",
                 beta: Annotated[float, Range(0)] = 1.0,
                 test_importance_samples: Annotated[int, Range(1)] = 100,
                 importance_batch: Annotated[int, Range(1)] = 8192,
                 bound_images: Annotated[int, Range(1)] | None = 256, **base):
        super().__init__(image_shape, num_classes, conditional, **base)
        check_choice("model.likelihood", likelihood, LIKELIHOODS)
        self.save_hyperparameters(logger=False, ignore=["optimizer", "scheduler"])
        c, size, _ = self.image_shape
        self.latent_dim, self.likelihood, self.beta = latent_dim, likelihood, beta
        self.test_importance_samples = test_importance_samples
        self.importance_batch, self.bound_images = importance_batch, bound_images
        self._bound_nats: list[torch.Tensor] = []
        self._bound_progress: Progress | None = None
        cond = num_classes if conditional else 0
        self.encoder = ConvEncoder(c, size, tuple(channels))
        self.posterior = nn.Linear(self.encoder.out_features + cond, 2 * latent_dim)
        out_channels = c if likelihood == "bernoulli" else 2 * c  # mean and log-scale
        self.decoder = ConvDecoder(latent_dim + cond, out_channels, size, tuple(channels))
        self._checked_binary = False

    @classmethod
    def check_config(cls, model: Mapping[str, Any], data: Mapping[str, Any]) -> None:
        super().check_config(model, data)
        if model.get("likelihood") == "bernoulli" and not data.get("binarize"):
            raise GenlabError("model.likelihood=bernoulli needs binary pixels: set "
                              "data.binarize=dynamic (or static), or choose "
                              "model.likelihood=logistic for 8-bit images.")
        channels, size = list(model.get("channels") or []), data.get("image_size")
        if odd := [w for w in channels if w % 4 or (w > 128 and w % 32)]:
            raise GenlabError(f"model.channels={channels}: every width must be a multiple of 4 "
                              f"(of 32 above 128) for the group norms; {odd[0]} is not.")
        if isinstance(size, int) and channels and (size % 2 ** len(channels)
                                                   or size < 2 ** len(channels)):
            raise GenlabError(f"model.channels={channels} halves the image {len(channels)} "
                              f"times, so data.image_size must be a multiple of "
                              f"{2 ** len(channels)}; it is {size}. Use fewer levels or another "
                              "image size.")

    # -- the model ---------------------------------------------------------------------------
    def _with_labels(self, h: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if not self.conditional:
            return h
        one_hot = F.one_hot(labels, self.num_classes).to(h.dtype)
        return torch.cat([h, one_hot.expand(*h.shape[:-1], -1)], dim=-1)

    def posterior_params(self, x: torch.Tensor, labels: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior q(z|x) = N(mu, diag(exp(logvar))), in float32 also under bf16 / fp16
        autocast: the KL, the importance weights and every log-density sum stay float32."""
        h = self._with_labels(self.encoder(x), self.condition(labels))
        mu, logvar = self.posterior(h).float().chunk(2, dim=-1)
        return mu, logvar.clamp(-30, 20)

    def decoder_params(self, z: torch.Tensor, labels: torch.Tensor | None = None
                       ) -> torch.Tensor:
        """Decoder parameters for latents z (B, L): logits, or mean and log-scale stacked
        (float32, also under autocast)."""
        return self.decoder(self._with_labels(z, self.condition(labels))).float()

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
            return self.log_likelihood(xs, self.decoder_params(z.reshape(n * z.shape[-2], -1), ys)
                                       ).view(*lead, -1)
        return fn

    def negative_elbo(self, x: torch.Tensor, labels: torch.Tensor | None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image: reconstruction NLL -log p(x|z) and KL."""
        mu, logvar = self.posterior_params(x, labels)
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

    def _evaluate(self, batch, stage: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log the loss, ELBO and KL; return the posterior (mu, logvar) and -ELBO per image."""
        x, labels = batch
        labels = self.condition(labels)
        mu, logvar = self.posterior_params(x, labels)
        log_px, kl = elbo(mu, logvar, self._log_likelihood_fn(x, labels))
        neg_elbo = kl - log_px
        self.log_dict({f"{stage}/loss": (self.beta * kl - log_px).mean(),
                       f"{stage}/elbo": -neg_elbo.mean(), f"{stage}/kl": kl.mean()}, sync_dist=True)
        return mu, logvar, neg_elbo

    def validation_step(self, batch, batch_idx):
        self.log_nll("val", self._evaluate(batch, "val")[2])

    @property
    def bound_name(self) -> str:
        """The name of the test bound, which depends on K: nll_nats_k<K>."""
        return f"nll_nats_k{self.test_importance_samples}"

    def on_test_epoch_start(self) -> None:
        self._bound_nats = []
        images = self.bound_images  # at most: the test split may hold fewer (for the ETA)
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        if "test" in getattr(datamodule, "splits", {}):
            available = len(datamodule.splits["test"][0])
            images = available if images is None else min(images, available)
        k = self.test_importance_samples
        where = (f"the first {self.bound_images} test images" if self.bound_images is not None
                 else "every test image")
        log.info("test/%s, test/bpd: the importance-weighted bound with K=%d samples on %s "
                 "(evaluate.py: K=%d on every image)", self.bound_name, k, where,
                 self.full_evaluation["test_importance_samples"])
        self._bound_progress = Progress(f"test/{self.bound_name}",
                                        images * k if images else None, "decodes")

    def test_step(self, batch, batch_idx):
        mu, logvar, _ = self._evaluate(batch, "test")
        x, labels = batch
        if self.bound_images is not None:
            remaining = self.bound_images - sum(len(b) for b in self._bound_nats)
            if remaining <= 0:
                return
            x, mu, logvar = x[:remaining], mu[:remaining], logvar[:remaining]
            labels = labels[:remaining]
        chunk = max(1, self.importance_batch // len(x))
        log_likelihood = self._log_likelihood_fn(x, self.condition(labels))
        progress = self._bound_progress.update if self._bound_progress is not None else None
        bound = importance_weighted_bound(mu, logvar, log_likelihood,
                                          self.test_importance_samples, chunk, progress)
        self._bound_nats.append(-bound)

    def on_test_epoch_end(self) -> None:
        if self._bound_progress is not None:
            self._bound_progress.close()
        if self._bound_nats:
            self.log_nll("test", torch.cat(self._bound_nats), self.bound_name)
        self._bound_nats = []

    # -- capabilities ------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The code of x: the posterior mean (B, latent_dim)."""
        return self.posterior_params(x, labels)[0]

    @torch.no_grad()
    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's expected image for codes z (B, latent_dim), in [-1, 1]."""
        return self.mean_image(self.decoder_params(z, labels))

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """A lower bound on log p(x) per image in nats: the importance-weighted bound with
        K = test_importance_samples (Burda et al. 2016)."""
        mu, logvar = self.posterior_params(x, labels)
        chunk = max(1, self.importance_batch // len(x))
        return importance_weighted_bound(mu, logvar, self._log_likelihood_fn(x, labels),
                                         self.test_importance_samples, chunk)

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Decoder means for z ~ N(0, I)."""
        z = torch.randn(n, self.latent_dim, device=self.device, generator=generator)
        return self.decode(z, labels)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder mean at the posterior mean."""
        return self.decode(self.encode(x, labels), labels)

    @torch.no_grad()
    def interpolate(self, x0: torch.Tensor, x1: torch.Tensor, steps: int = 8,
                    labels: torch.Tensor | None = None) -> torch.Tensor:
        """For pairs of images (B, C, H, W): images along the straight line between their
        posterior means; (B * steps, C, H, W), one row of `steps` images per pair."""
        b = len(x0)
        pair_labels = None if labels is None else labels.repeat(2)
        mu = self.encode(torch.cat([x0, x1]), pair_labels)
        t = torch.linspace(0, 1, steps, device=mu.device)[None, :, None]
        z = (1 - t) * mu[:b, None] + t * mu[b:, None]
        row_labels = None if labels is None else labels.repeat_interleave(steps)
        return self.decode(z.flatten(0, 1), row_labels)

    @torch.no_grad()
    def latent_traversal(self, x: torch.Tensor | None = None, dims: int | None = None,
                         steps: int = 8, span: float = 3.0,
                         labels: torch.Tensor | None = None) -> torch.Tensor:
        """Vary one latent dimension at a time over [-span, span] around the posterior mean of
        x (or the origin): returns (dims * steps, C, H, W), one row per dimension."""
        dims = min(dims or 8, self.latent_dim)
        origin = (self.encode(x[None], None if labels is None else labels.view(1))[0]
                  if x is not None else torch.zeros(self.latent_dim, device=self.device))
        z = origin.repeat(dims, steps, 1)
        values = torch.linspace(-span, span, steps, device=self.device)
        for d in range(dims):
            z[d, :, d] = values
        row_labels = None if labels is None else labels.view(1).expand(dims * steps)
        return self.decode(z.view(dims * steps, -1), row_labels)
