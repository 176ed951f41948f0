"""Autoregressive models of the PixelCNN family: PixelCNN (van den Oord et al. 2016a), Gated
PixelCNN (van den Oord et al. 2016b) and PixelCNN++ (Salimans et al. 2017), chosen by
`architecture`, with a choice of pixel likelihood (`head`).

    p(x) = prod_t p(x_t | x_<t)      over sub-pixels in raster-then-channel order,
trained by exact maximum likelihood: the loss is the NLL in bits/dim. The ordering, the heads
and the one ancestral sampling loop are in `genlab.maths.autoregressive`, the networks (and the
cached fast sampler of Ramachandran et al. 2017) in `genlab.nets.pixelcnn`. With `ema_decay`
set, an EMA of the weights (`genlab.nets.ema.EMA`) makes validation, test, samples and tasks.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager
from typing import Annotated, Any

import torch

from genlab.checks import OneOf, Range
from genlab.errors import GenlabError, check_choice
from genlab.maths.autoregressive import (
    HEADS,
    Choose,
    PixelHead,
    PixelOutput,
    ancestral_sample,
    pixel_index,
    raster_prefix_length,
)
from genlab.maths.bpd import bits_per_dim
from genlab.models.base import GenerativeModule
from genlab.nets.ema import EMA
from genlab.nets.pixelcnn import GatedPixelCNNNet, PixelCNNNet, PixelCNNPlusPlusNet

ARCHITECTURES = ("pixelcnn", "gated", "pixelcnn_pp")
SAMPLERS = ("naive", "cached")


@contextmanager
def one_cpu_thread(active: bool):
    """One intra-op thread for the cached sampler on a CPU: its operations are a few thousand
    numbers each, where splitting across threads costs more than it saves (on our 2-core
    machine, 2 threads were slower than 1)."""
    threads = torch.get_num_threads()
    if active:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class PixelCNN(GenerativeModule):
    """One LightningModule for the three networks:

    - architecture: pixelcnn (masked convolutions, residual blocks; `channels` h, `layers`
      blocks, `first_kernel_size`, `kernel_size`), gated (vertical and horizontal stacks;
      `channels`, `layers`, `first_kernel_size`, `kernel_size`) or pixelcnn_pp (`channels`
      filters, `resnets` per resolution, `dropout`);
    - head: softmax (256 values per sub-pixel), bernoulli (binary pixels: data.binarize) or
      logistic_mixture (`num_mixtures` components over whole pixels);
    - sampler: naive (the whole network for every sub-pixel) or cached (only what the new
      pixel changes, Ramachandran et al. 2017; the same samples);
    - conditional: a learned bias per class in every block.

    The likelihood is discrete on the 8-bit grid (or on binary pixels), so dequantized data is
    refused. The test after training is the exact NLL, as cheap as validation, so evaluate.py
    has no fuller setting to apply; it may change only the sampling settings.
    """

    has_likelihood = True
    accepts_dequantized_data = False
    evaluation_keys = frozenset({"sampler", "sample_batch_size"})
    restoration_methods = {"complete": "exact sampling of the rest (raster-prefix masks only)"}

    def __init__(self, image_shape: Annotated[tuple[int, int, int], Range(1)],
                 num_classes: Annotated[int, Range(0)] = 0, conditional: bool = False,
                 architecture: Annotated[str, OneOf(ARCHITECTURES)] = "pixelcnn",
                 head: Annotated[str, OneOf(HEADS)] = "softmax",
                 channels: Annotated[int, Range(1)] = 36,
                 layers: Annotated[int, Range(1)] = 6,
                 first_kernel_size: Annotated[int, Range(1)] = 7,
                 kernel_size: Annotated[int, Range(1)] = 3,
                 resnets: Annotated[int, Range(1)] = 1,
                 dropout: Annotated[float, Range(0, 1, high_open=True)] = 0.0,
                 num_mixtures: Annotated[int, Range(1)] = 10,
                 ema_decay: Annotated[float, Range(0, 1)] | None = None,
                 ema_warmup: bool = True,
                 ema_start_step: Annotated[int, Range(0)] = 0,
                 sampler: Annotated[str, OneOf(SAMPLERS)] = "cached",
                 sample_batch_size: Annotated[int, Range(1)] = 256, **base):
        super().__init__(image_shape, num_classes, conditional, **base)
        self.save_hyperparameters(logger=False, ignore=["optimizer", "scheduler"])
        check_choice("model.architecture", architecture, ARCHITECTURES)
        check_choice("model.head", head, HEADS)
        self.sampler = check_choice("model.sampler", sampler, SAMPLERS)
        c, height, width = self.image_shape
        self.architecture, self.sample_batch_size = architecture, sample_batch_size
        self.head = PixelHead(head, c, num_mixtures)
        colours = 1 if self.head.whole_pixel else c
        self._check_options(architecture, channels, colours, dropout, height, width,
                            first_kernel_size, kernel_size)
        classes = num_classes if conditional else 0
        out = self.head.num_outputs
        if architecture == "pixelcnn_pp":
            self.net = PixelCNNPlusPlusNet(c, out, channels, resnets, dropout, colours, classes)
        else:
            net_cls = PixelCNNNet if architecture == "pixelcnn" else GatedPixelCNNNet
            self.net = net_cls(c, out, channels, layers, first_kernel_size, kernel_size,
                               colours, classes)
        self.ema = (EMA(self.net, ema_decay, ema_warmup, ema_start_step)
                    if ema_decay is not None else None)
        self._checked_pixels = False

    @staticmethod
    def _check_options(architecture: str, channels: int, colours: int, dropout: float,
                       height: int, width: int, first_kernel_size: int = 7,
                       kernel_size: int = 3) -> None:
        """The rules between keys, for the constructor and for `check_config` (start-up)."""
        if colours > 1 and channels % colours:
            raise GenlabError(f"model.channels={channels}: with a per-channel head on {colours}-"
                              f"channel images the features are split into {colours} colour "
                              f"groups, so model.channels must be a multiple of {colours} "
                              f"(e.g. {channels - channels % colours + colours}).")
        if dropout and architecture != "pixelcnn_pp":
            raise GenlabError(f"model.dropout={dropout}: only model.architecture=pixelcnn_pp has "
                              "dropout; set model.dropout=0.")
        if architecture == "pixelcnn_pp" and (height % 4 or width % 4):
            raise GenlabError(f"PixelCNN++ halves the image twice, so its sides must be "
                              f"multiples of 4; these images are {height}x{width}. Use "
                              "data.image_size=32 (or 64).")
        if architecture != "pixelcnn_pp":
            for name, k in (("first_kernel_size", first_kernel_size),
                            ("kernel_size", kernel_size)):
                if k % 2 == 0:
                    raise GenlabError(f"model.{name}={k}: masked convolutions are centred on "
                                      f"the pixel they predict, so the kernel size must be odd "
                                      f"(e.g. {k + 1}).")

    @classmethod
    def check_config(cls, model: Mapping[str, Any], data: Mapping[str, Any]) -> None:
        super().check_config(model, data)
        head = model.get("head", "softmax")
        if head == "bernoulli" and not data.get("binarize"):
            raise GenlabError("model.head=bernoulli needs binary pixels: set data.binarize="
                              "dynamic (or static), or choose model.head=softmax or "
                              "logistic_mixture for 8-bit images.")
        shape = model.get("image_shape")
        if not (isinstance(shape, (list, tuple)) and len(shape) == 3
                and all(isinstance(n, int) for n in shape)):
            return  # its own annotation reports it
        c, height, width = shape
        cls._check_options(model.get("architecture", "pixelcnn"), model.get("channels", 36),
                           1 if head == "logistic_mixture" else c, model.get("dropout", 0.0),
                           height, width, model.get("first_kernel_size", 7),
                           model.get("kernel_size", 3))

    @property
    def network(self) -> torch.nn.Module:
        """The network that evaluates and samples: the EMA copy when there is one."""
        return self.net if self.ema is None else self.ema.averaged

    # -- likelihood --------------------------------------------------------------------------
    def _check_pixels(self, x: torch.Tensor) -> None:
        if self._checked_pixels:
            return
        if self.head.binary and not ((x == -1) | (x == 1)).all():
            raise GenlabError("model.head=bernoulli needs binary pixels: set data.binarize="
                              "dynamic (or static), or choose model.head=softmax or "
                              "logistic_mixture for 8-bit images.")
        if not self.head.binary and (x - (pixel_index(x) / 127.5 - 1)).abs().max() > 1e-4:
            raise GenlabError("PixelCNN models give probabilities to the 256 values of 8-bit "
                              "pixels, but these images are not on the 8-bit grid (2k/255 - 1): "
                              "set data.dequantize=false.")
        self._checked_pixels = True

    def _log_prob_per_pixel(self, net: torch.nn.Module, x: torch.Tensor,
                            labels: torch.Tensor | None) -> torch.Tensor:
        return self.head.log_prob(x, net(x, labels).float())

    def _nll(self, net: torch.nn.Module, batch) -> torch.Tensor:
        """Per-image NLL in nats of a batch (checked once for its pixel values)."""
        x, labels = batch
        self._check_pixels(x)
        return -self._log_prob_per_pixel(net, x, self.condition(labels)).flatten(1).sum(1)

    def training_step(self, batch, batch_idx):
        nll = self._nll(self.net, batch)
        loss = bits_per_dim(nll.mean(), self.num_dims)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/nll_nats", nll.mean())
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update(self.net, step=self.global_step)

    def validation_step(self, batch, batch_idx):
        self.log_nll("val", self._nll(self.network, batch))

    def test_step(self, batch, batch_idx):
        self.log_nll("test", self._nll(self.network, batch))

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The exact log p(x) per image in nats (on the binary pixels for model.head=bernoulli)."""
        return self.log_prob_per_pixel(x, labels).flatten(1).sum(1)

    @torch.no_grad()
    def log_prob_per_pixel(self, x: torch.Tensor, labels: torch.Tensor | None = None
                           ) -> torch.Tensor:
        """log p(x_t | x_<t) in nats for every sub-pixel t, (B, C, H, W); they sum to log p(x)."""
        return self._log_prob_per_pixel(self.network, x, self.condition(labels))

    # -- sampling ----------------------------------------------------------------------------
    def _pixel_output(self, x: torch.Tensor, labels: torch.Tensor | None,
                      sampler: str) -> PixelOutput:
        """output_at(x, i, j, c) for the sampling loop: the network's outputs at pixel (i, j),
        recomputed for every channel when they depend on the pixel's earlier channels."""
        net = self.network
        compute = (net.cache(x, labels) if sampler == "cached"
                   else lambda x, i, j: net(x, labels)[:, :, i, j])
        sees_pixel = net.colours > 1
        last: dict = {}

        def output_at(x: torch.Tensor, i: int, j: int, c: int) -> torch.Tensor:
            if sees_pixel or last.get("pixel") != (i, j):
                last.update(pixel=(i, j), out=compute(x, i, j))
            return last["out"]
        return output_at

    @torch.no_grad()
    def _generate(self, x: torch.Tensor, start: torch.Tensor | None,
                  labels: torch.Tensor | None, generator: torch.Generator | None,
                  sampler: str | None) -> torch.Tensor:
        """Sub-pixels from `start` on (all when None) drawn in chunks of sample_batch_size."""
        sampler = check_choice("sampler", sampler or self.sampler, SAMPLERS)
        labels = self.condition(labels)
        chunks = []
        with one_cpu_thread(sampler == "cached" and x.device.type == "cpu"):
            for begin in range(0, len(x), self.sample_batch_size):
                part = slice(begin, begin + self.sample_batch_size)
                xs, ys = x[part].clone(), None if labels is None else labels[part]
                chunks.append(ancestral_sample(self._pixel_output(xs, ys, sampler), self.head,
                                               xs, None if start is None else start[part],
                                               generator))
        return torch.cat(chunks)

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None, sampler: str | None = None
               ) -> torch.Tensor:
        """n images drawn exactly from the model (the EMA network when there is one),
        sample_batch_size at a time, with `sampler` (default model.sampler: naive or cached)."""
        dtype = next(self.network.parameters()).dtype
        x = torch.zeros(n, *self.image_shape, device=self.device, dtype=dtype)
        return self._generate(x, None, labels, generator, sampler)

    @torch.no_grad()
    def choose_sequentially(self, n: int, choose: Choose) -> torch.Tensor:
        """n images (one batch) whose sub-pixels, in raster-then-channel order, are picked by
        `choose(log_probs, t)` from their conditionals instead of drawn: the sampling loop
        (`ancestral_sample`) with the cached sampler on one CPU thread. The lossless codec
        (`genlab.codec`) encodes with a `choose` that codes the true values and decodes with
        one that reads them back, so both see the same conditionals, computed the same way on a
        batch of the same size. Unconditional models only."""
        dtype = next(self.network.parameters()).dtype
        x = torch.zeros(n, *self.image_shape, device=self.device, dtype=dtype)
        with one_cpu_thread(x.device.type == "cpu"):
            return ancestral_sample(self._pixel_output(x, None, "cached"), self.head, x,
                                    choose=choose)

    @torch.no_grad()
    def complete(self, x: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, sampler: str | None = None
                 ) -> torch.Tensor:
        """Exact samples of p(x_rest | x_known) where mask = 0, keeping the pixels where
        mask = 1 bit for bit. The known pixels must come first in the generation order (e.g.
        the top rows; `genlab.maths.autoregressive.raster_prefix_length` says why); any other
        mask is an error. Like `inpaint` of the model contract, for such masks only."""
        start = raster_prefix_length(mask, tuple(x.shape))
        return self._generate(x, start, labels, generator, sampler)
