"""The contract every family honours; the callbacks and evaluate.py rely on it.

- Images cross every boundary as float tensors in [-1, 1], shape (B, C, H, W); batches are
  (images, labels) with label -1 for unlabelled images.
- `sample(n, labels=None, generator=None)` returns n images (EMA weights where a family has
  them). All noise is drawn from `generator` when given, so a fixed generator gives fixed
  samples.
- Likelihood families (`has_likelihood = True`) log a per-image NLL as `<stage>/nll_nats` and
  `<stage>/bpd` through `log_nll`, on the 8-bit scale of `genlab.maths.bpd`.
- Optional capabilities are plain methods where the family supports them; the tasks, the
  representation evaluation and later tools rely on these names and shapes:
    encode(x, labels) -> z           a deterministic code of each image, (B, ...) (VAE: the
                                     posterior mean; autoencoders: the code; flows: z,
                                     (B, C*H*W), every level's)
    decode(z, labels) -> x           images in [-1, 1] for codes from encode
    log_prob(x, labels) -> (B,)      log p(x) per image in nats on the 8-bit scale, exact or a
                                     lower bound (say which in the docstring)
    reconstruct(x, labels)           decode(encode(x)) or the family's own reconstruction
    interpolate(x0, x1, steps, labels) -> (B * steps, C, H, W), one row per pair of images
    interpolate_latents(z0, z1, steps, labels)   the same between latents (GANs)
    latent_traversal(x, labels=...)  one row per latent dimension
    inpaint(x, mask, labels, generator)   fill where mask = 0, keep where mask = 1 exactly
    complete(x, mask, labels, generator)  the same for masks whose known pixels come first in
                                     the model's generation order (autoregressive models:
                                     the top rows), sampled exactly; other masks are refused
    log_prob_per_pixel(x, labels) -> (B, C, H, W)   log p(x_t | x_<t) in nats per sub-pixel,
                                     summing to log_prob (autoregressive models)
    denoise(y, sigma, labels, generator)  clean images from y = x + sigma * noise
    restore(y, operator, labels, generator)   images x with operator.measure(x) ~ y for any
                                     degradation of `genlab.maths.degradations` (masks,
                                     downsampling, noise) the family can invert
    sample_at_temperature(n, temperature, labels, generator)   samples from a code scaled by
                                     the temperature (flows: z ~ N(0, T^2 I))
    energy(x, labels) -> (B,)        an unnormalised energy, p(x) proportional to exp(-E(x))
                                     (EBMs; without labels the marginal energy of x)
    classify(x) -> (B, K)            class logits (JEM)
- The tasks of `genlab.tasks` (reconstruct, interpolate, inpaint, ...) run on any model that
  has the capability they need; `python evaluate.py tasks=[<task>,...]` runs them.
- Configuration: every constructor parameter states its valid values in its annotation
  (`latent_dim: Annotated[int, Range(1)]`, see `genlab.checks`), and `check_config` adds the
  rules that relate several keys; `genlab.run.validate` applies both at start-up, before any
  data is decoded. `evaluation_keys` names the keys `evaluate.py` may change on a trained model
  (sampling and evaluation settings; the others shape the network), `full_evaluation` the
  settings it applies for the rigorous numbers (e.g. the VAE's K=1000),
  `accepts_dequantized_data` whether the family's likelihood allows `data.dequantize=true`, and
  `leaves_parameters_unused` whether some backward passes leave parameters without a gradient
  (a GAN's alternating steps), which DDP must then look for (`genlab.run.train`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, ClassVar

import lightning as L
import torch
import torch.nn.functional as F

from genlab.checks import OneOf, Range
from genlab.errors import GenlabError
from genlab.maths.bpd import bits_per_dim


class GenerativeModule(L.LightningModule):
    has_likelihood: ClassVar[bool] = False
    # A discrete likelihood (bits/dim on the 8-bit grid) is wrong on dequantized data.
    accepts_dequantized_data: ClassVar[bool] = True
    # Keys evaluate.py may override on a trained model (+model.<key>=...).
    evaluation_keys: ClassVar[frozenset[str]] = frozenset()
    # What evaluate.py sets over the stored config for its rigorous numbers, unless overridden.
    full_evaluation: ClassVar[Mapping[str, Any]] = {}
    # Some backward passes leave parameters without a gradient: DDP must look for them.
    leaves_parameters_unused: ClassVar[bool] = False
    # The method behind each restoring capability (inpaint, complete, denoise, restore), in a
    # few words: the README's restoration table (`python -m genlab.tasks`) prints them.
    restoration_methods: ClassVar[Mapping[str, str]] = {}

    def __init__(self, image_shape: Annotated[tuple[int, int, int], Range(1)],
                 num_classes: Annotated[int, Range(0)] = 0, conditional: bool = False,
                 optimizer: Callable[..., torch.optim.Optimizer] | None = None,
                 scheduler: Callable[..., object] | None = None,
                 monitor: str | None = "val/loss",
                 monitor_mode: Annotated[str, OneOf(("min", "max"))] = "min"):
        super().__init__()
        if conditional and not num_classes:
            raise GenlabError("model.conditional=true needs a labelled dataset (a class for every "
                              "image), but this data is unlabelled (no classes). Use labelled "
                              "data (class sub-folders for data=image_folder) or "
                              "model.conditional=false.")
        self.image_shape = tuple(image_shape)
        self.num_classes, self.conditional = num_classes, conditional
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.monitor, self.monitor_mode = monitor, monitor_mode

    @classmethod
    def check_config(cls, model: Mapping[str, Any], data: Mapping[str, Any]) -> None:
        """Rules between keys, checked at start-up on the resolved `model` and `data` configs
        (each key's own range is in the constructor's annotations). `data.num_classes` is None
        when it is read from the data later. Raise GenlabError naming the keys."""
        if model.get("conditional") and data.get("num_classes") == 0:
            raise GenlabError(f"model.conditional=true needs a labelled dataset, but "
                              f"data={data.get('name')} is unlabelled (it has no classes). Use "
                              "labelled data or model.conditional=false.")
        if data.get("dequantize") and not cls.accepts_dequantized_data:
            raise GenlabError(f"data.dequantize=true does not suit {cls.__name__}: its "
                              "likelihood is discrete (bits/dim are computed on the 8-bit grid), "
                              "so dequantized inputs would make its bits/dim meaningless. Set "
                              "data.dequantize=false.")

    @property
    def num_dims(self) -> int:
        c, h, w = self.image_shape
        return c * h * w

    def sample(self, n: int, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def grid_labels(self, n: int) -> torch.Tensor | None:
        """Labels for a sample grid: every class in turn for conditional models."""
        if not self.conditional:
            return None
        return torch.arange(n, device=self.device) % self.num_classes

    def condition(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        """The labels a conditional model uses; None for unconditional ones."""
        if not self.conditional:
            return None
        if labels is None or (labels < 0).any():
            raise GenlabError("This model is class-conditional: pass labels in 0.."
                              f"{self.num_classes - 1}.")
        return labels

    def with_labels(self, h: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Features h (..., F) with the one-hot labels appended for conditional models (labels
        as returned by `condition`); h itself for unconditional ones."""
        if not self.conditional:
            return h
        one_hot = F.one_hot(labels, self.num_classes).to(h.dtype)
        return torch.cat([h, one_hot.expand(*h.shape[:-1], -1)], dim=-1)

    def check_mask(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """An inpainting mask (1 where a pixel is known, 0 where it is to be generated)
        expanded to the images x; a GenlabError unless it broadcasts to them."""
        c, h, w = self.image_shape
        if (mask.dim() != 4 or mask.shape[0] not in (1, len(x)) or mask.shape[1] not in (1, c)
                or tuple(mask.shape[2:]) != (h, w)):
            raise GenlabError(f"The mask has shape {tuple(mask.shape)}; it must broadcast to the "
                              f"images {tuple(x.shape)}: (1 or {len(x)}, 1 or {c}, {h}, {w}), "
                              "with 1 where a pixel is known and 0 where it is to be generated.")
        return mask.to(x.dtype).expand_as(x)

    def log_nll(self, stage: str, nll_nats: torch.Tensor, name: str = "nll_nats") -> None:
        """Log the mean per-image NLL in nats (as `<stage>/<name>`: a bound whose value depends
        on an estimator setting names it, e.g. `nll_nats_k100`) and in bits/dim."""
        nll = nll_nats.mean()
        self.log(f"{stage}/{name}", nll, sync_dist=True)
        self.log(f"{stage}/bpd", bits_per_dim(nll, self.num_dims), sync_dist=True,
                 prog_bar=stage == "val")

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss).all():
            raise GenlabError(f"The training loss became {loss.item()} in batch {batch_idx} of "
                              f"epoch {self.current_epoch} (global step {self.global_step}). "
                              "Lower the learning rate, clip gradients "
                              "(trainer.gradient_clip_val=1.0) or use precision=32.")

    def make_optimizer(self, params: Iterable[torch.nn.Parameter], **overrides
                       ) -> torch.optim.Optimizer:
        """model.optimizer over `params` (with `overrides`, e.g. a learning rate)."""
        if self.optimizer_factory is None:
            raise GenlabError("model.optimizer is not set: give it, e.g. "
                              "model.optimizer._target_=torch.optim.Adam.")
        return self.optimizer_factory(params=params, **overrides)

    def configure_optimizers(self):
        optimizer = self.make_optimizer(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def compile_networks(self) -> None:
        """torch.compile every direct sub-network in place (state-dict keys are unchanged, so
        checkpoints move freely between compiled and eager runs)."""
        for module in self.children():
            module.compile()


@torch.no_grad()
def interpolate_codes(model: GenerativeModule, x0: torch.Tensor, x1: torch.Tensor, steps: int,
                      labels: torch.Tensor | None = None) -> torch.Tensor:
    """The `interpolate` capability of a model with flat codes (`encode` -> (B, D), `decode`):
    for pairs of images (B, C, H, W), decoded points along the straight line between their
    codes; (B * steps, C, H, W), one row of `steps` images per pair."""
    b = len(x0)
    pair_labels = None if labels is None else labels.repeat(2)
    z = model.encode(torch.cat([x0, x1]), pair_labels)
    t = torch.linspace(0, 1, steps, device=z.device)[None, :, None]
    line = (1 - t) * z[:b, None] + t * z[b:, None]
    row_labels = None if labels is None else labels.repeat_interleave(steps)
    return model.decode(line.flatten(0, 1), row_labels)


@torch.no_grad()
def encode_all(model: GenerativeModule, images: torch.Tensor, labels: torch.Tensor | None,
               datamodule, batch_size: int = 256,
               reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Codes `model.encode` of uint8 images (N, C, H, W) (and labels, for conditional models),
    `batch_size` at a time, each batch's codes passed through `reduce` when given (e.g. pooled
    and moved to the CPU)."""
    codes = []
    for start in range(0, len(images), batch_size):
        x = datamodule.to_model_input(images[start:start + batch_size].to(model.device),
                                      train=False)
        y = None if labels is None else labels[start:start + batch_size].to(model.device)
        z = model.encode(x, y)
        codes.append(z if reduce is None else reduce(z))
    return torch.cat(codes)
