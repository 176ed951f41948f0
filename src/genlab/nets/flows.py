"""Flow layers (RealNVP, Dinh et al. 2017; Glow, Kingma & Dhariwal 2018) and the multi-scale
architecture built from them. Every layer maps (B, C, H, W) to the same shape with

    forward(x) -> (y, logdet)     logdet = log |det dy/dx| per image, (B,), float32 (or float64)
    inverse(y) -> x
The flow's state stays in float32 under bf16 / fp16 autocast: only the convolutions inside the
coupling networks and the split priors run in half precision (their outputs are widened before
use), and the 1x1 convolutions and every log-determinant are computed in float32. The formulas
are in `genlab.maths.flows`.

Layers: Squeeze, ChannelReverse, InvertibleConv1x1 (LU-decomposed or plain), ActNorm (data-
dependent initialisation, all-reduced under DDP), Coupling (affine or additive; channel or
checkerboard mask), Logit (RealNVP's preprocessing), SplitPrior (the learned conditional prior
of a split-off half, as a standardization), TopPrior (the learned, optionally class-conditional
prior of the last level). MultiScaleFlow maps images to one code (B, C*H*W); Variational-
Dequantizer is Flow++'s q(v|u).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from genlab.maths.flows import (
    affine_coupling,
    affine_coupling_inverse,
    at_least_float32,
    change_of_variables,
    logit_transform,
    logit_transform_inverse,
    sigmoid_transform,
    standardize,
    sum_per_image,
    unstandardize,
)

# watch(layer, output, logdet): called after every layer when given (finding a non-finite one)
Watch = Callable[[nn.Module, torch.Tensor, torch.Tensor], None]


def _zero_logdet(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros(x.shape[0], device=x.device, dtype=at_least_float32(x).dtype)


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2): each 2x2 patch into channels (Dinh et al. 2017)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * 4, h // 2, w // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    """The inverse of `squeeze`."""
    b, c, h, w = x.shape
    x = x.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // 4, h * 2, w * 2)


class Squeeze(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return squeeze(x), _zero_logdet(x)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return unsqueeze(y)


class ChannelReverse(nn.Module):
    """Reverses the channel order (RealNVP's alternation of the changed half)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.flip(1), _zero_logdet(x)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y.flip(1)


class ActNorm(nn.Module):
    """y = (x + bias) * exp(log_scale) per channel; log-determinant H W sum(log_scale)
    (Kingma & Dhariwal 2018, sec. 3.1). The first forward pass in training mode sets bias and
    log_scale so that this batch's output has zero mean and unit variance per channel. Under
    torch.distributed the batch statistics are all-reduced first, so every rank initialises
    from the union of the ranks' batches and ends with the same parameters. `initialized` is a
    persistent buffer: checkpoints carry it and a reloaded model is never re-initialised.
    A channel that is (almost) constant on the init batch, std < min_std (a fully masked input,
    units dead on the whole batch), is only centred: openai/glow's 1 / (std + 1e-6) would scale
    it by up to 1e6, and blow up as soon as it varies."""

    def __init__(self, channels: int, min_std: float = 1e-3):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))
        self.min_std = min_std

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Set bias and log_scale from the per-channel mean and variance of x (all ranks)."""
        x = x.detach().double().transpose(0, 1).flatten(1)  # (C, N)
        stats = torch.cat([x.sum(1), x.square().sum(1),
                           torch.tensor([x.shape[1]], dtype=x.dtype, device=x.device)])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(stats)
        c = x.shape[0]
        count = stats[-1]
        mean = stats[:c] / count
        var = (stats[c:2 * c] / count - mean.square()).clamp(min=0)
        self.bias.copy_((-mean).view_as(self.bias))
        std = var.sqrt()
        log_scale = torch.where(std < self.min_std, torch.zeros_like(std), -torch.log(std))
        self.log_scale.copy_(log_scale.view_as(self.log_scale))
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training and not self.initialized:
            self.initialize(x)
        y = (x + self.bias) * torch.exp(self.log_scale)
        h, w = x.shape[2:]
        logdet = h * w * at_least_float32(self.log_scale).sum()
        return y, logdet.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.exp(-self.log_scale) - self.bias


class InvertibleConv1x1(nn.Module):
    """y = W x at every pixel with an invertible C x C matrix W, initialised as a random
    rotation (Kingma & Dhariwal 2018, sec. 3.2); log-determinant H W log |det W|.

    lu=True: W = P L (U + diag(sign(s) exp(log_s))) with P a fixed permutation, L unit lower
    triangular and U strictly upper triangular, so log |det W| = sum(log_s) costs O(C).
    lu=False: W is a plain parameter and log |det W| comes from torch.linalg.slogdet.
    Runs in float32 (or the parameters' float64) also under autocast."""

    def __init__(self, channels: int, lu: bool = True):
        super().__init__()
        rotation = torch.linalg.qr(torch.randn(channels, channels))[0]
        self.lu = lu
        if not lu:
            self.weight = nn.Parameter(rotation)
            return
        permutation, lower, upper = torch.linalg.lu(rotation)
        s = torch.diagonal(upper)
        self.register_buffer("permutation", permutation)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(s.abs()))

    def matrix(self) -> torch.Tensor:
        if not self.lu:
            return self.weight
        eye = torch.eye(len(self.log_s), device=self.log_s.device, dtype=self.log_s.dtype)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.permutation @ lower @ upper

    def log_abs_det(self) -> torch.Tensor:
        """log |det W|."""
        return self.log_s.sum() if self.lu else torch.linalg.slogdet(self.weight)[1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = x.shape[2:]
        with torch.autocast(x.device.type, enabled=False):
            weight = self.matrix()
            y = F.conv2d(x.to(weight.dtype), weight[:, :, None, None])
            logdet = h * w * self.log_abs_det()
        return y, logdet.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(y.device.type, enabled=False):
            inverse = torch.linalg.inv(self.matrix())
            return F.conv2d(y.to(inverse.dtype), inverse[:, :, None, None])


class ZeroConv2d(nn.Module):
    """openai/glow's conv2d_zeros: a 3x3 convolution whose weights and bias start at zero,
    scaled per channel by exp(3 log_scale) (log_scale also starts at zero), so a layer ending
    in it starts as the identity."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.log_scale = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * torch.exp(3 * self.log_scale)


class CouplingNet(nn.Module):
    """The network of a coupling layer: a 3x3 convolution, `res_blocks` pre-activation residual
    blocks of two 3x3 convolutions (RealNVP's ResNet; 0 blocks is Glow's network), a 1x1
    convolution and a zero-initialised 3x3 output convolution, with ActNorm + ReLU after each
    convolution but the last (Kingma & Dhariwal 2018, sec. 3.3)."""

    def __init__(self, in_channels: int, out_channels: int, width: int, res_blocks: int = 0):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.norm_in = ActNorm(width)
        self.blocks = nn.ModuleList(
            nn.ModuleList([ActNorm(width), nn.Conv2d(width, width, 3, padding=1, bias=False),
                           ActNorm(width), nn.Conv2d(width, width, 3, padding=1, bias=False)])
            for _ in range(res_blocks))
        self.conv_mid = nn.Conv2d(width, width, 1, bias=False)
        self.norm_mid = ActNorm(width)
        self.conv_out = ZeroConv2d(width, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm_in(self.conv_in(x))[0])
        for norm1, conv1, norm2, conv2 in self.blocks:
            r = conv1(F.relu(norm1(h)[0]))
            h = h + conv2(F.relu(norm2(r)[0]))
        h = F.relu(self.norm_mid(self.conv_mid(h))[0])
        return self.conv_out(h)


def checkerboard_mask(height: int, width: int, parity: int, device=None) -> torch.Tensor:
    """(1, 1, H, W) bool: True on the pixels a checkerboard coupling keeps, (i + j + parity)
    even (Dinh et al. 2017, fig. 3)."""
    i = torch.arange(height, device=device)[:, None]
    j = torch.arange(width, device=device)[None, :]
    return ((i + j + parity) % 2 == 0)[None, None]


class Coupling(nn.Module):
    """A coupling layer (Dinh et al. 2015, 2017): part of x is kept, the rest is changed
    elementwise by a map whose parameters a network computes from the kept part (and from
    `cond` features, for the variational dequantizer):

        affine:    y = (x + shift) * sigmoid(raw + 2)   log-det sum log sigmoid(raw + 2)
        additive:  y = x + shift                        log-det 0   (NICE, Dinh et al. 2015)
    mask 'channel': keep the first C - C//2 channels, change the rest; 'checkerboard': keep the
    pixels where checkerboard_mask(parity) is True, change the others (every channel). The
    output convolution starts at zero, so the layer starts as a fixed scaling by sigmoid(2)."""

    def __init__(self, channels: int, mask: str = "channel", parity: int = 0, width: int = 512,
                 res_blocks: int = 0, additive: bool = False, cond_channels: int = 0):
        super().__init__()
        self.mask, self.parity, self.additive = mask, parity, additive
        self.kept = channels - channels // 2 if mask == "channel" else channels
        changed = channels - self.kept if mask == "channel" else channels
        self.net = CouplingNet(self.kept + cond_channels, changed * (1 if additive else 2), width,
                               res_blocks)

    def _params(self, kept: torch.Tensor, cond: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = at_least_float32(self.net(kept if cond is None
                                      else torch.cat([kept, cond.to(kept.dtype)], 1)))
        if self.additive:
            return h, None
        return h[:, 0::2], h[:, 1::2]  # shift and raw scale interleaved, as in openai/glow

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mask == "channel":
            kept, changed = x[:, :self.kept], x[:, self.kept:]
            shift, raw = self._params(kept, cond)
            if self.additive:
                return torch.cat([kept, changed + shift], 1), _zero_logdet(x)
            y, log_scale = affine_coupling(changed, shift, raw)
            return torch.cat([kept, y], 1), sum_per_image(log_scale)
        keep = checkerboard_mask(*x.shape[2:], self.parity, x.device)
        shift, raw = self._params(x * keep, cond)
        if self.additive:
            return torch.where(keep, x, x + shift), _zero_logdet(x)
        y, log_scale = affine_coupling(x, shift, raw)
        return torch.where(keep, x, y), sum_per_image(log_scale.masked_fill(keep, 0))

    def inverse(self, y: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if self.mask == "channel":
            kept, changed = y[:, :self.kept], y[:, self.kept:]
            shift, raw = self._params(kept, cond)
            x = changed - shift if self.additive else affine_coupling_inverse(changed, shift, raw)
            return torch.cat([kept, x], 1)
        keep = checkerboard_mask(*y.shape[2:], self.parity, y.device)
        shift, raw = self._params(y * keep, cond)
        x = y - shift if self.additive else affine_coupling_inverse(y, shift, raw)
        return torch.where(keep, y, x)


class Logit(nn.Module):
    """RealNVP's logit preprocessing of [-1, 1] images (`genlab.maths.flows.logit_transform`)."""

    def __init__(self, alpha: float):
        super().__init__()
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return logit_transform(x, self.alpha)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return logit_transform_inverse(y, self.alpha)


class SplitPrior(nn.Module):
    """The learned conditional prior of a split (Kingma & Dhariwal 2018, sec. 3; openai/glow's
    split2d): the last C//2 channels z2 are factored out with p(z2 | z1) = N(mean(z1),
    exp(log_std(z1))^2), mean and log_std from a zero-initialised convolution of the kept z1.
    As a layer it standardizes z2: y = (z1, (z2 - mean) / exp(log_std)), log-det -sum log_std;
    the architecture then takes the standardized half out as part of the code."""

    def __init__(self, channels: int):
        super().__init__()
        self.kept = channels - channels // 2
        self.net = ZeroConv2d(self.kept, 2 * (channels // 2))

    def _params(self, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = at_least_float32(self.net(kept))
        return h[:, 0::2], h[:, 1::2]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kept, out = x[:, :self.kept], x[:, self.kept:]
        eps, logdet = standardize(out, *self._params(kept))
        return torch.cat([kept, eps], 1), logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        kept, eps = y[:, :self.kept], y[:, self.kept:]
        return torch.cat([kept, unstandardize(eps, *self._params(kept))], 1)


class TopPrior(nn.Module):
    """The prior of the last level as a standardization, like SplitPrior: a learned mean and
    log-std per position (`learn`: Glow's learntop; else a standard normal) plus, with classes,
    a zero-initialised per-channel offset of both for each class (Glow's ycond)."""

    def __init__(self, shape: tuple[int, int, int], learn: bool = True, num_classes: int = 0):
        super().__init__()
        c = shape[0]
        self.mean = nn.Parameter(torch.zeros(1, *shape)) if learn else None
        self.log_std = nn.Parameter(torch.zeros(1, *shape)) if learn else None
        self.embed = nn.Embedding(num_classes, 2 * c) if num_classes else None
        if self.embed is not None:
            nn.init.zeros_(self.embed.weight)

    def params(self, x: torch.Tensor, labels: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.zeros_like(x[:1]) if self.mean is None else self.mean
        log_std = torch.zeros_like(x[:1]) if self.log_std is None else self.log_std
        if self.embed is not None:
            offsets = self.embed(labels).to(x.dtype)[:, :, None, None]
            mean = mean + offsets[:, :x.shape[1]]
            log_std = log_std + offsets[:, x.shape[1]:]
        return mean, log_std

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return standardize(x, *self.params(x, labels))

    def inverse(self, y: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return unstandardize(y, *self.params(y, labels))


class FlowSequence(nn.ModuleList):
    """Layers applied in order; the log-determinants add up (in float32)."""

    def forward(self, x: torch.Tensor, watch: Watch | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = _zero_logdet(x)
        for layer in self:
            x, layer_logdet = layer(x)
            logdet = logdet + layer_logdet
            if watch is not None:
                watch(layer, x, layer_logdet)
        return x, logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self):
            y = layer.inverse(y)
        return y


class MultiScaleFlow(nn.Module):
    """The multi-scale architecture (Dinh et al. 2017, sec. 3.6; Kingma & Dhariwal 2018,
    fig. 2), images (B, C, H, W) -> one code (B, C*H*W) and back. Level by level:

        [Logit]                                   (first level, when logit_alpha is set)
        checkerboard_steps x (ActNorm, checkerboard Coupling of alternating parity)
        Squeeze, steps x (ActNorm, permutation, channel Coupling)
        SplitPrior, and the standardized half leaves the flow      (all levels but the last)
    and the last level is either the same without the split (Glow) or, with
    top_checkerboard_steps > 0, that many checkerboard steps and no squeeze (RealNVP's final
    scale), followed by the TopPrior. The code is every split-off half, flattened, in order,
    then the top: standard normal under the model."""

    def __init__(self, image_shape: tuple[int, int, int], levels: int = 3, steps: int = 32,
                 checkerboard_steps: int = 0, top_checkerboard_steps: int = 0,
                 width: int = 512, res_blocks: int = 0, coupling: str = "affine",
                 permutation: str = "lu", logit_alpha: float | None = None,
                 learn_top: bool = True, num_classes: int = 0):
        super().__init__()
        c, h, w = image_shape
        additive = coupling == "additive"

        def checkerboard(channels: int, i: int) -> list[nn.Module]:
            return [ActNorm(channels), Coupling(channels, "checkerboard", i % 2, width,
                                                res_blocks, additive)]

        def step(channels: int) -> list[nn.Module]:
            permute = (ChannelReverse() if permutation == "reverse"
                       else InvertibleConv1x1(channels, lu=permutation == "lu"))
            return [ActNorm(channels), permute,
                    Coupling(channels, "channel", 0, width, res_blocks, additive)]

        self.levels = nn.ModuleList()
        self.piece_shapes: list[tuple[int, int, int]] = []  # the code's pieces, in order
        for i in range(levels):
            layers: list[nn.Module] = [Logit(logit_alpha)] if i == 0 and logit_alpha else []
            last = i == levels - 1
            if last and top_checkerboard_steps:
                for j in range(top_checkerboard_steps):
                    layers += checkerboard(c, j)
            else:
                for j in range(checkerboard_steps):
                    layers += checkerboard(c, j)
                layers.append(Squeeze())
                c, h, w = 4 * c, h // 2, w // 2
                for _ in range(steps):
                    layers += step(c)
            if not last:
                layers.append(SplitPrior(c))
                self.piece_shapes.append((c // 2, h, w))
                c -= c // 2
            self.levels.append(FlowSequence(layers))
        self.top = TopPrior((c, h, w), learn_top, num_classes)
        self.piece_shapes.append((c, h, w))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None,
                watch: Watch | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The code (B, D) and log |det d code / dx| (B,)."""
        logdet = _zero_logdet(x)
        pieces = []
        for i, level in enumerate(self.levels):
            x, level_logdet = level(x, watch)
            logdet = logdet + level_logdet
            if i < len(self.levels) - 1:  # the standardized last channels leave the flow
                kept = x.shape[1] - self.piece_shapes[i][0]
                x, out = x[:, :kept], x[:, kept:]
                pieces.append(out.flatten(1))
        x, top_logdet = self.top(x, labels)
        if watch is not None:
            watch(self.top, x, top_logdet)
        pieces.append(x.flatten(1))
        return torch.cat(pieces, 1), logdet + top_logdet

    def inverse(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images for codes (B, D): the exact inverse of forward."""
        sizes = [c * h * w for c, h, w in self.piece_shapes]
        pieces = [p.reshape(len(z), *shape)
                  for p, shape in zip(z.split(sizes, 1), self.piece_shapes)]
        x = self.top.inverse(pieces[-1], labels)
        for i in reversed(range(len(self.levels))):
            if i < len(self.levels) - 1:
                x = torch.cat([x, pieces[i]], 1)
            x = self.levels[i].inverse(x)
        return x


class VariationalDequantizer(nn.Module):
    """Flow++'s variational dequantization (Ho et al. 2019, sec. 3.1): a conditional flow
    q(v | u) on [0, 1)^D. Noise eps ~ N(0, I) passes through `steps` checkerboard affine
    couplings of alternating parity whose networks also see features of the 8-bit image (two
    3x3 convolutions of its grid values), then a sigmoid:

        log q(v | u) = log N(eps; 0, I) - log |det dv/deps|."""

    def __init__(self, channels: int, width: int = 32, steps: int = 4):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.couplings = nn.ModuleList(
            Coupling(channels, "checkerboard", i % 2, width, cond_channels=width)
            for i in range(steps))

    def forward(self, grid: torch.Tensor, eps: torch.Tensor, watch: Watch | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """v in (0, 1)^D for noise eps and images `grid` (their grid values in [-1, 1]), and
        log q(v | u) per image."""
        cond = self.features(grid.to(eps.dtype))
        y, logdet = eps, _zero_logdet(eps)
        for coupling in self.couplings:
            y, layer_logdet = coupling(y, cond)
            logdet = logdet + layer_logdet
            if watch is not None:
                watch(coupling, y, layer_logdet)
        v, sigmoid_logdet = sigmoid_transform(y)
        return v, change_of_variables(eps, -(logdet + sigmoid_logdet))
