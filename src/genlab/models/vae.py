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
from torch import nn

from genlab.checks import NonEmpty, OneOf, Range
from genlab.maths.degradations import Operator
from genlab.maths.distributions import PixelLikelihood
from genlab.maths.inversion import latent_restoration
from genlab.maths.vae import elbo, importance_weighted_bound
from genlab.models.base import GenerativeModule, interpolate_codes
from genlab.nets.conv import ConvDecoder, ConvEncoder, check_conv_config
from genlab.progress import Progress

log = logging.getLogger(__name__)
LIKELIHOODS = PixelLikelihood.NAMES


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
    restoration_methods = {"restore": "MAP latent optimisation from the posterior mean of A+(y)"}

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
        self.pixels = PixelLikelihood(likelihood)
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
        self.decoder = ConvDecoder(latent_dim + cond, self.pixels.channels(c), size,
                                   tuple(channels))

    @classmethod
    def check_config(cls, model: Mapping[str, Any], data: Mapping[str, Any]) -> None:
        super().check_config(model, data)
        check_conv_config(model, data)

    # -- the model ---------------------------------------------------------------------------
    def posterior_params(self, x: torch.Tensor, labels: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior q(z|x) = N(mu, diag(exp(logvar))), in float32 also under bf16 / fp16
        autocast: the KL, the importance weights and every log-density sum stay float32."""
        h = self.with_labels(self.encoder(x), self.condition(labels))
        mu, logvar = self.posterior(h).float().chunk(2, dim=-1)
        return mu, logvar.clamp(-30, 20)

    def decoder_params(self, z: torch.Tensor, labels: torch.Tensor | None = None
                       ) -> torch.Tensor:
        """Decoder parameters for latents z (B, L): logits, or mean and log-scale stacked
        (float32, also under autocast)."""
        return self.decoder(self.with_labels(z, self.condition(labels))).float()

    def _log_likelihood_fn(self, x: torch.Tensor, labels: torch.Tensor | None):
        """z (..., B, L) -> log p(x|z) (..., B), decoding all leading sample dims at once."""
        def fn(z: torch.Tensor) -> torch.Tensor:
            lead = z.shape[:-2]
            n = math.prod(lead)
            xs = x.expand(*lead, *x.shape).reshape(-1, *x.shape[1:])
            ys = None if labels is None else labels.expand(*lead, *labels.shape).reshape(-1)
            return self.pixels.log_prob(xs, self.decoder_params(z.reshape(n * z.shape[-2], -1), ys)
                                       ).view(*lead, -1)
        return fn

    def negative_elbo(self, x: torch.Tensor, labels: torch.Tensor | None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image: reconstruction NLL -log p(x|z) and KL."""
        mu, logvar = self.posterior_params(x, labels)
        log_px, kl = elbo(mu, logvar, self._log_likelihood_fn(x, labels))
        return -log_px, kl

    # -- training and evaluation -------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x, labels = batch
        self.pixels.check_input(x)
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
        return self.pixels.mean(self.decoder_params(z, labels))

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

    def interpolate(self, x0: torch.Tensor, x1: torch.Tensor, steps: int = 8,
                    labels: torch.Tensor | None = None) -> torch.Tensor:
        """For pairs of images (B, C, H, W): images along the straight line between their
        posterior means; (B * steps, C, H, W), one row of `steps` images per pair."""
        return interpolate_codes(self, x0, x1, steps, labels)

    @torch.no_grad()
    @torch.no_grad()
    def restore(self, y: torch.Tensor, operator: Operator, labels: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """The decoder mean at the MAP code of y under the N(0, I) prior, from the posterior
        mean of A+(y) (`genlab.maths.inversion.latent_restoration`)."""
        return latent_restoration(lambda z: self.pixels.mean(self.decoder_params(z, labels)),
                                  y, operator, self.encode(operator.pinv(y), labels))

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
