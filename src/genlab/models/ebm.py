"""Energy-based models, p(x) proportional to exp(-E(x)), trained by contrastive divergence with
Langevin sampling and a replay buffer: IGEBM (Du & Mordatch 2019; `EBM`, `model=ebm`) and JEM
(Grathwohl et al. 2020; `JEM`, `model=jem`). The maths (Langevin steps, the loss, JEM's energy,
the calibration error) is in `genlab.maths.langevin`, the network and the buffer in
`genlab.nets.energy`.

A training step on a batch x+ of data:
  1. x+ <- x+ + data_noise * N(0, I);
  2. chain starts: states from the replay buffer, each replaced by U(-1, 1) noise with
     probability restart_prob (restarted class-conditional chains take the batch's labels);
  3. train_steps Langevin steps, x <- clamp(x - step_size grad E(x) + noise N(0, I)) (the
     gradient clipped to [-grad_clip, grad_clip] per pixel when set), give x-;
     the final states are written back to the buffer;
  4. L = mean E(x+) - mean E(x-) + alpha (mean E(x+)^2 + mean E(x-)^2)
     (+ the cross-entropy of p(y | x+) for JEM), x- detached.
All of a step's noise (data noise, buffer draws, restarts, Langevin noise) is drawn from a
generator seeded by (seed, rank, global step): a resumed run continues exactly as the
uninterrupted one would have (the buffer is in the checkpoint), and under DDP every rank runs its
own chains on its own buffer. The buffer is left out of DDP's buffer broadcast; checkpoints hold
rank 0's buffer, from which every rank of a resumed DDP run starts.

The usual Langevin setting (step_size 1, noise 0.01) is not exact Langevin dynamics for
exp(-E) (`genlab.maths.langevin` says what that implies); noise: exact gives sqrt(2 step_size).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import torch
import torch.nn.functional as F

from genlab.checks import NonEmpty, OneOf, Range
from genlab.errors import GenlabError, check_choice
from genlab.maths.degradations import Operator
from genlab.maths.langevin import (
    calibration_gaps,
    contrastive_divergence_loss,
    descend_posterior_energy,
    energy_from_logits,
    exact_noise,
    langevin,
    temperature,
    uniform_noise,
)
from genlab.maths.random import randn_like, seeded_generator
from genlab.models.base import GenerativeModule
from genlab.nets.energy import EnergyResNet, ReplayBuffer

SAMPLE_INITS = ("noise", "buffer")


class EBM(GenerativeModule):
    """IGEBM: a ResNet energy E(x) (class-conditional E(x, y) when `conditional`), trained by
    contrastive divergence with the energy-magnitude regulariser alpha."""

    has_likelihood = False
    # the sampler's settings (sample / inpaint / denoise and the long-run grid): the rest shapes
    # the network, the objective or the training chains
    evaluation_keys = frozenset({
        "step_size", "noise", "clamp", "grad_clip", "sample_steps", "long_run_steps",
        "sample_init", "inpaint_steps", "denoise_steps"})
    restoration_methods = {
        "inpaint": "Langevin chains with the known pixels clamped",
        "denoise": "energy descent with a Gaussian measurement term",
        "restore": "energy descent projected onto A(x) = y"}

    def __init__(self, image_shape: Annotated[tuple[int, int, int], Range(1)],
                 num_classes: Annotated[int, Range(0)] = 0, conditional: bool = False,
                 # the energy network
                 channels: Annotated[tuple[int, ...], NonEmpty, Range(1)] = (64, 128, 256),
                 blocks: Annotated[int, Range(1)] = 1, spectral_norm: bool = False,
                 # the objective
                 alpha: Annotated[float, Range(0)] = 1.0,
                 data_noise: Annotated[float, Range(0)] = 0.0,
                 # Langevin sampling
                 step_size: Annotated[float, Range(0, low_open=True)] = 1.0,
                 noise: Annotated[float, Range(0)] | Annotated[str, OneOf(("exact",))] = 0.01,
                 clamp: bool = True,
                 grad_clip: Annotated[float, Range(0, low_open=True)] | None = None,
                 train_steps: Annotated[int, Range(1)] = 20,
                 sample_steps: Annotated[int, Range(1)] = 60,
                 long_run_steps: Annotated[int, Range(0, note="0: no long-run grid")] = 500,
                 sample_init: Annotated[str, OneOf(SAMPLE_INITS)] = "noise",
                 inpaint_steps: Annotated[int, Range(1)] = 60,
                 denoise_steps: Annotated[int, Range(1)] = 20,
                 # the replay buffer
                 buffer_size: Annotated[int, Range(1)] = 10000,
                 restart_prob: Annotated[float, Range(0, 1)] = 0.05,
                 # stability and randomness
                 energy_limit: Annotated[float, Range(0, low_open=True)] | None = 1e4,
                 seed: Annotated[int, Range(0)] = 0, **base):
        super().__init__(image_shape, num_classes, conditional, **base)
        self.save_hyperparameters(logger=False, ignore=["optimizer", "scheduler"])
        self.sample_init = check_choice("model.sample_init", sample_init, SAMPLE_INITS)
        if noise != "exact" and isinstance(noise, str):
            raise GenlabError(f"model.noise={noise}: give the Langevin noise scale as a number "
                              ">= 0 (0.01 is the usual setting), or 'exact' for "
                              "sqrt(2 * model.step_size), exact Langevin dynamics.")
        self.alpha, self.data_noise = alpha, data_noise
        self.step_size, self.clamp, self.grad_clip = step_size, clamp, grad_clip
        self.noise = exact_noise(step_size) if noise == "exact" else float(noise)
        self.train_steps, self.sample_steps = train_steps, sample_steps
        self.long_run_steps = long_run_steps
        self.inpaint_steps, self.denoise_steps = inpaint_steps, denoise_steps
        self.energy_limit, self.seed = energy_limit, seed
        c = self.image_shape[0]
        self.net = EnergyResNet(c, tuple(channels), blocks, self.num_outputs(), spectral_norm)
        self.buffer = ReplayBuffer(buffer_size, self.image_shape, restart_prob, seed)
        # every DDP rank keeps its own chains: DDP must not overwrite them with rank 0's
        self._ddp_params_and_buffers_to_ignore = ["buffer.images", "buffer.labels"]

    @classmethod
    def check_config(cls, model: Mapping[str, Any], data: Mapping[str, Any]) -> None:
        super().check_config(model, data)
        channels, size = list(model.get("channels") or []), data.get("image_size")
        if isinstance(size, int) and channels and size < 2 ** (len(channels) - 1):
            raise GenlabError(f"model.channels={channels} halves the image "
                              f"{len(channels) - 1} times, so data.image_size must be at least "
                              f"{2 ** (len(channels) - 1)}; it is {size}. Use fewer levels.")

    def num_outputs(self) -> int:
        """Outputs of the network: one energy, or one per class for E(x, y)."""
        return self.num_classes if self.conditional else 1

    # -- the energy and the chains -----------------------------------------------------------
    def energy(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """E(x, y) per image (B,) for a class-conditional model given labels, else the
        energy of x, for a conditional model the marginal -logsumexp_y -E(x, y); float32."""
        return energy_from_logits(self.net(x).float(), labels if self.conditional else None)

    @property
    def temperature(self) -> float:
        """The temperature the chains sample at: exp(-E / T) (1 for exact Langevin)."""
        return temperature(self.step_size, self.noise)

    def chains(self, start: torch.Tensor, labels: torch.Tensor | None, steps: int,
               generator: torch.Generator | None = None,
               known: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """`steps` Langevin steps of the model's sampler from `start` (see
        `genlab.maths.langevin.langevin`)."""
        return langevin(lambda x: self.energy(x, labels), start, steps, self.step_size,
                        self.noise, generator, self.clamp, known, self.grad_clip)

    # -- training ----------------------------------------------------------------------------
    def _step_generator(self) -> torch.Generator:
        return seeded_generator(self.seed, self.global_rank, self.global_step,
                                device=self.device)

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor,
                            stats: dict[str, torch.Tensor]) -> torch.Tensor | float:
        """The term that JEM adds to the loss (none for IGEBM)."""
        return 0.0

    def training_step(self, batch, batch_idx):
        x, labels = batch
        condition = self.condition(labels)
        n, rng = len(x), self._step_generator()
        if self.data_noise:
            x = x + self.data_noise * randn_like(x, rng)
        start, chain_labels, index, _ = self.buffer.draw(n, rng, condition)
        chain_labels = chain_labels if self.conditional else None
        negatives = self.chains(start, chain_labels, self.train_steps, rng)
        self.buffer.write(index, negatives, chain_labels)

        logits = self.net(torch.cat([x, negatives])).float()
        e_pos = energy_from_logits(logits[:n], condition)
        e_neg = energy_from_logits(logits[n:], chain_labels)
        self._check_stability(e_pos, e_neg)
        stats = {"train/e_pos": e_pos.mean().detach(), "train/e_neg": e_neg.mean().detach()}
        stats["train/e_gap"] = stats["train/e_neg"] - stats["train/e_pos"]
        loss = (contrastive_divergence_loss(e_pos, e_neg, self.alpha)
                + self.classification_loss(logits[:n], labels, stats))
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/e_gap", stats.pop("train/e_gap"), prog_bar=True)
        self.log_dict(stats)
        return loss

    def _check_stability(self, e_pos: torch.Tensor, e_neg: torch.Tensor) -> None:
        means = torch.stack([e_pos.mean(), e_neg.mean()]).detach()
        finite = bool(torch.isfinite(e_pos).all() and torch.isfinite(e_neg).all())
        limit = self.energy_limit
        if finite and (limit is None or means.abs().max() <= limit):
            return
        why = ("energies became non-finite" if not finite else
               f"energies ran beyond model.energy_limit={limit:g}")
        raise GenlabError(
            f"The energy-based model diverged at training step {self.global_step} (epoch "
            f"{self.current_epoch}): {why} (mean E(data) = {means[0].item():.4g}, mean "
            f"E(samples) = {means[1].item():.4g}). The usual remedies: more Langevin steps per "
            f"training step (model.train_steps={self.train_steps}), a lower learning rate "
            "(model.optimizer.lr), a larger energy regulariser "
            f"(model.alpha={self.alpha:g}), spectral normalisation (model.spectral_norm=true), "
            "gradient clipping (trainer.gradient_clip_val=1.0), precision=32.")

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        stored = checkpoint["state_dict"].get("buffer.images")
        if stored is not None and len(stored) != self.buffer.size:
            raise GenlabError(f"The checkpoint's replay buffer holds {len(stored)} states, but "
                              f"model.buffer_size={self.buffer.size}; resume with "
                              f"model.buffer_size={len(stored)}.")

    # -- validation and test -----------------------------------------------------------------
    def _evaluate(self, batch, batch_idx: int, stage: str) -> torch.Tensor:
        """Log the mean energy of the images (e_pos) and of uniform noise (e_noise, fixed per
        batch); return the images' logits."""
        x, labels = batch
        condition = self.condition(labels)
        generator = torch.Generator(device=x.device).manual_seed(batch_idx)
        noise = uniform_noise(x.shape, generator, x.device)
        logits = self.net(torch.cat([x, noise])).float()
        self.log_dict({f"{stage}/e_pos": energy_from_logits(logits[:len(x)], condition).mean(),
                       f"{stage}/e_noise": energy_from_logits(logits[len(x):], condition).mean()},
                      sync_dist=True)
        return logits[:len(x)]

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "test")

    # -- capabilities ------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None, steps: int | None = None,
               init: str | None = None) -> torch.Tensor:
        """n images from Langevin chains of `steps` steps (default model.sample_steps) started
        from uniform noise (init="noise") or from states of the replay buffer ("buffer");
        default model.sample_init. All noise comes from `generator`."""
        init = check_choice("init", init or self.sample_init, SAMPLE_INITS)
        labels = self.condition(labels)
        if init == "noise":
            start = uniform_noise((n, *self.image_shape), generator, self.device)
        else:
            start = self.buffer.draw(n, generator, restart_prob=0.0)[0]
        return self.chains(start, labels, self.sample_steps if steps is None else steps,
                           generator)

    @torch.no_grad()
    def inpaint(self, x: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor | None = None,
                generator: torch.Generator | None = None, steps: int | None = None
                ) -> torch.Tensor:
        """Fill the pixels where mask = 0 by Langevin chains (model.inpaint_steps) from uniform
        noise, with the pixels where mask = 1 clamped to x after every step (kept bit for
        bit)."""
        known = (x, self.check_mask(x, mask).bool())
        start = uniform_noise(x.shape, generator, x.device)
        return self.chains(start, self.condition(labels),
                           self.inpaint_steps if steps is None else steps, generator, known)

    @torch.no_grad()
    def denoise(self, y: torch.Tensor, sigma: float, labels: torch.Tensor | None = None,
                generator: torch.Generator | None = None, steps: int | None = None
                ) -> torch.Tensor:
        """Denoise y = x + sigma n by energy descent from y (model.denoise_steps steps of the
        sampler's step size, no noise) on E(x) + T ||x - y||^2 / (2 sigma^2), T the sampler's
        temperature (`genlab.maths.langevin.descend_posterior_energy`); deterministic."""
        if sigma <= 0:
            raise GenlabError(f"denoise needs a noise level sigma > 0; got {sigma}.")
        labels = self.condition(labels)
        return descend_posterior_energy(lambda x: self.energy(x, labels), y, sigma,
                                        self.denoise_steps if steps is None else steps,
                                        self.step_size, self.temperature, self.clamp)

    @torch.no_grad()
    def restore(self, y: torch.Tensor, operator: Operator, labels: torch.Tensor | None = None,
                generator: torch.Generator | None = None, steps: int | None = None
                ) -> torch.Tensor:
        """Restore y = A(x) + sigma n for any operator of `genlab.maths.degradations` by the
        descent of `denoise` (model.denoise_steps) with the measurement term ||A(x) - y||^2
        (`genlab.maths.langevin.descend_posterior_energy`): from A+(y), each step a gradient
        step on E and the exact proximal step of the measurement term, which for noise-free
        measurements is the projection onto {x : A(x) = y}, then the clip to [-1, 1] when
        model.clamp (so A(x) = y only approximately where the projection left the range);
        deterministic."""
        labels = self.condition(labels)
        return descend_posterior_energy(lambda x: self.energy(x, labels), y, operator.sigma,
                                        self.denoise_steps if steps is None else steps,
                                        self.step_size, self.temperature, self.clamp, operator)


class JEM(EBM):
    """JEM: a classifier f(x) whose logits are energies (E(x) = -logsumexp_y f(x)[y]), trained
    on the cross-entropy of p(y | x) plus the contrastive term of p(x). Logs `<stage>/acc`,
    `<stage>/ce` and the expected calibration error `<stage>/ece` (Guo et al. 2017,
    `ece_bins` bins); offers `classify`."""

    evaluation_keys = EBM.evaluation_keys | {"ece_bins"}

    def __init__(self, image_shape: Annotated[tuple[int, int, int], Range(1)],
                 num_classes: Annotated[int, Range(0)] = 0,
                 classifier_weight: Annotated[float, Range(0)] = 1.0,
                 ece_bins: Annotated[int, Range(1)] = 15, **ebm):
        if not num_classes:
            raise GenlabError("model=jem is a classifier: it needs a labelled dataset (a class "
                              "for every image), but this data is unlabelled. Use labelled data "
                              "or model=ebm.")
        self.classifier_weight, self.ece_bins = classifier_weight, ece_bins
        super().__init__(image_shape, num_classes, **ebm)
        self._calibration = torch.zeros(ece_bins + 1)

    @classmethod
    def check_config(cls, model: Mapping[str, Any], data: Mapping[str, Any]) -> None:
        super().check_config(model, data)
        if data.get("num_classes") == 0:
            raise GenlabError(f"model=jem is a classifier: it needs a labelled dataset, but "
                              f"data={data.get('name')} is unlabelled (it has no classes). Use "
                              "labelled data or model=ebm.")

    def num_outputs(self) -> int:
        return self.num_classes

    def classification_loss(self, logits, labels, stats):
        ce = F.cross_entropy(logits, labels)
        stats["train/ce"] = ce.detach()
        stats["train/acc"] = (logits.argmax(-1) == labels).float().mean()
        return self.classifier_weight * ce

    @torch.no_grad()
    def classify(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The class logits f(x) (B, K), float32; softmax gives p(y | x)."""
        return self.net(x).float()

    def _evaluate(self, batch, batch_idx, stage):
        logits = super()._evaluate(batch, batch_idx, stage)
        labels = batch[1]
        self.log_dict({f"{stage}/ce": F.cross_entropy(logits, labels),
                       f"{stage}/acc": (logits.argmax(-1) == labels).float().mean()},
                      sync_dist=True)
        gaps = calibration_gaps(logits, labels, self.ece_bins)
        self._calibration = self._calibration.to(gaps.device) + torch.cat(
            [gaps, gaps.new_tensor([len(labels)])])
        return logits

    def _log_calibration(self, stage: str) -> None:
        """ECE over the whole epoch, from bin sums added over batches and ranks."""
        totals = self.all_gather(self._calibration)
        totals = totals.sum(0) if totals.dim() == 2 else totals
        self.log(f"{stage}/ece", totals[:-1].abs().sum() / totals[-1].clamp(min=1))
        self._calibration = torch.zeros_like(self._calibration)

    def on_validation_epoch_start(self) -> None:
        self._calibration = torch.zeros_like(self._calibration)

    def on_validation_epoch_end(self) -> None:
        self._log_calibration("val")

    def on_test_epoch_start(self) -> None:
        self._calibration = torch.zeros_like(self._calibration)

    def on_test_epoch_end(self) -> None:
        self._log_calibration("test")
