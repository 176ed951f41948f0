"""Networks of the PixelCNN family, with outputs at pixel (i, j) that depend only on the
sub-pixels before it in raster-then-channel order (`genlab.maths.autoregressive`).

- `PixelCNNNet` (van den Oord et al. 2016a): a masked k x k convolution with mask A, then
  residual blocks of masked convolutions with mask B (Fig. 5 of the paper), then two masked
  1 x 1 layers. Its receptive field has the known blind spot above-right of each pixel.
- `GatedPixelCNNNet` (van den Oord et al. 2016b): a vertical stack (the rows above) and a
  horizontal stack (the row so far) of tanh x sigmoid gated layers, the vertical stack feeding
  the horizontal one through a down-shift; no blind spot. Class-conditional biases in every gate.
- `PixelCNNPlusPlusNet` (Salimans et al. 2017): down-shifted and down-right-shifted
  convolutions in two streams, gated residual blocks with concat_elu and dropout, two
  down-samplings and the mirror up-samplings with short-cut connections between them.

Colour order inside a pixel (`colours` > 1): features are split into `colours` interleaved
groups, feature f in group f % colours (the image's channel c is group c); at the kernel's
centre, mask A lets group g see only input groups < g and mask B groups <= g. The networks of
whole-pixel heads (the logistic mixture) use colours = 1: their outputs at (i, j) see none of
pixel (i, j). PixelCNN++ never masks colours; with a per-channel head on colour images, a
masked 1 x 1 convolution of the image (mask A) adds the pixel's earlier channels to the output.

Each network's `cache(x, labels)` is the fast sampler of Ramachandran et al. 2017: it keeps
what earlier pixels computed and, for each new pixel, computes only what that pixel changes:
PixelCNN every layer at the new pixel; Gated PixelCNN the horizontal stack at the new pixel and
the vertical stack once per row; PixelCNN++ one row of each map per resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn


def _pair(k: int | tuple[int, int]) -> tuple[int, int]:
    return (k, k) if isinstance(k, int) else tuple(k)


def down_shift(x: torch.Tensor) -> torch.Tensor:
    """Move every row one down (zeros enter at the top)."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


def right_shift(x: torch.Tensor) -> torch.Tensor:
    """Move every column one right (zeros enter at the left)."""
    return F.pad(x, (1, 0, 0, 0))[:, :, :, :-1]


def gate(x: torch.Tensor) -> torch.Tensor:
    """tanh(a) * sigmoid(b) for the two halves a, b of the channels (van den Oord 2016b, eq. 2)."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    """elu([x, -x]) along the channels (Salimans et al. 2017)."""
    return F.elu(torch.cat([x, -x], dim=1))


def _label_bias(embedding: nn.Embedding | None, labels: torch.Tensor | None
                ) -> torch.Tensor | float:
    """A learned bias per class, (B, channels, 1, 1); 0 for unconditional networks."""
    if embedding is None:
        return 0.0
    return embedding(labels)[:, :, None, None]


class MaskedConv2d(nn.Conv2d):
    """A 'same' convolution whose kernel sees only the positions before its centre in raster
    order, and at the centre the colour groups allowed by `mask_type` ('A': input groups < the
    output's group, so not the sub-pixel itself; 'B': <=)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 mask_type: str, colours: int = 1):
        kh, kw = _pair(kernel_size)
        super().__init__(in_channels, out_channels, (kh, kw), padding=(kh // 2, kw // 2))
        ci, cj = kh // 2, kw // 2
        mask = torch.zeros(out_channels, in_channels, kh, kw)
        mask[:, :, :ci] = 1
        mask[:, :, ci, :cj] = 1
        out_group = torch.arange(out_channels) % colours
        in_group = torch.arange(in_channels) % colours
        centre = (in_group[None] < out_group[:, None] if mask_type == "A"
                  else in_group[None] <= out_group[:, None])
        mask[:, :, ci, cj] = centre.float()
        self.register_buffer("mask", mask, persistent=False)

    def masked_weight(self) -> torch.Tensor:
        return self.weight * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.masked_weight(), self.bias, padding=self.padding)


class _RowConv:
    """`rows(window, first, a, b)`: output rows a..b of a convolution that sees only rows at and
    above its output row, from `window`, the rows first, first + 1, ... of its input (it must
    hold the rows the output needs; rows above 0 are zeros). forward() is all rows."""

    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    pad_columns: tuple[int, int]

    def rows(self, window: torch.Tensor, first: int, a: int, b: int) -> torch.Tensor:
        kh, s = self.kernel_size[0], self.stride[0]
        lo, hi = a * s - (kh - 1), b * s
        part = window[:, :, max(lo, 0) - first:hi + 1 - first]
        part = F.pad(part, (*self.pad_columns, max(-lo, 0), 0))
        return F.conv2d(part, self.weight, self.bias, self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rows(x, 0, 0, (x.shape[2] - 1) // self.stride[0])


class DownShiftedConv2d(_RowConv, nn.Conv2d):
    """Sees rows i - kh + 1 .. i and columns j - (kw - 1)/2 .. j + (kw - 1)/2 (Salimans et al.
    2017's down_shifted_conv2d; the Gated PixelCNN's vertical stack with kh = k // 2 + 1)."""

    def __init__(self, in_channels: int, out_channels: int,
                 kernel_size: tuple[int, int] = (2, 3), stride: int = 1):
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride=stride)
        self.pad_columns = ((kernel_size[1] - 1) // 2, (kernel_size[1] - 1) // 2)


class DownRightShiftedConv2d(_RowConv, nn.Conv2d):
    """Sees rows i - kh + 1 .. i and columns j - kw + 1 .. j (down_right_shifted_conv2d)."""

    def __init__(self, in_channels: int, out_channels: int,
                 kernel_size: tuple[int, int] = (2, 2), stride: int = 1):
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride=stride)
        self.pad_columns = (kernel_size[1] - 1, 0)


class _RowConvTranspose:
    """`rows(x, a, b)`: output rows a..b of a stride-2 up-sampling with a kernel of height 2,
    output row r coming from input row r // 2 only; `left` output columns are cut."""

    kernel_size: tuple[int, int]
    left: int

    def rows(self, x: torch.Tensor, a: int, b: int) -> torch.Tensor:
        q0 = a // 2
        y = F.conv_transpose2d(x[:, :, q0:b // 2 + 1], self.weight, self.bias, stride=2)
        return y[:, :, a - 2 * q0:b - 2 * q0 + 1, self.left:self.left + 2 * x.shape[3]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rows(x, 0, 2 * x.shape[2] - 1)


class DownShiftedConvTranspose2d(_RowConvTranspose, nn.ConvTranspose2d):
    """Stride-2 up-sampling that keeps the down-shifted receptive field (down_shifted_deconv2d)."""

    def __init__(self, in_channels: int, out_channels: int,
                 kernel_size: tuple[int, int] = (2, 3)):
        nn.ConvTranspose2d.__init__(self, in_channels, out_channels, kernel_size, stride=2)
        self.left = (kernel_size[1] - 1) // 2


class DownRightShiftedConvTranspose2d(_RowConvTranspose, nn.ConvTranspose2d):
    """Stride-2 up-sampling that keeps the down-right-shifted receptive field."""

    def __init__(self, in_channels: int, out_channels: int,
                 kernel_size: tuple[int, int] = (2, 2)):
        nn.ConvTranspose2d.__init__(self, in_channels, out_channels, kernel_size, stride=2)
        self.left = 0


# -- PixelCNN ------------------------------------------------------------------------------------
class ResidualBlock(nn.Module):
    """2h features -> ReLU, 1x1 to h -> ReLU, k x k mask B -> ReLU, 1x1 to 2h, plus the input
    (van den Oord et al. 2016a, Fig. 5), with a class bias after the k x k convolution."""

    def __init__(self, channels: int, kernel_size: int, colours: int, num_classes: int):
        super().__init__()
        self.reduce = MaskedConv2d(2 * channels, channels, 1, "B", colours)
        self.conv = MaskedConv2d(channels, channels, kernel_size, "B", colours)
        self.expand = MaskedConv2d(channels, 2 * channels, 1, "B", colours)
        self.label_bias = nn.Embedding(num_classes, channels) if num_classes else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        y = self.conv(F.relu(self.reduce(F.relu(x)))) + _label_bias(self.label_bias, labels)
        return x + self.expand(F.relu(y))


class PixelCNNNet(nn.Module):
    """PixelCNN: a first_kernel_size masked convolution (mask A) to 2h = 2 * channels features,
    `layers` residual blocks, then ReLU, 1x1 (2h), ReLU, 1x1 to out_channels, all masked."""

    def __init__(self, in_channels: int, out_channels: int, channels: int = 64, layers: int = 8,
                 first_kernel_size: int = 7, kernel_size: int = 3, colours: int = 1,
                 num_classes: int = 0):
        super().__init__()
        self.colours = colours
        self.input = MaskedConv2d(in_channels, 2 * channels, first_kernel_size, "A", colours)
        self.blocks = nn.ModuleList([ResidualBlock(channels, kernel_size, colours, num_classes)
                                     for _ in range(layers)])
        self.hidden = MaskedConv2d(2 * channels, 2 * channels, 1, "B", colours)
        self.output = MaskedConv2d(2 * channels, out_channels, 1, "B", colours)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.input(x)
        for block in self.blocks:
            h = block(h, labels)
        return self.output(F.relu(self.hidden(F.relu(h))))

    def cache(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> PixelCNNCache:
        return PixelCNNCache(self, x, labels)


# -- Gated PixelCNN ------------------------------------------------------------------------------
class GatedLayer(nn.Module):
    """One layer of both stacks (van den Oord et al. 2016b, Fig. 2):

        v' = gate(V * v + b_v(y)),     V a (k//2 + 1) x k convolution of the rows <= i
        h' = W_o gate(H * h + U down_shift(V * v) + b_h(y)) (+ h after the first layer)
    with H a 1 x k masked convolution of the row (mask A in the first layer, else B), U and W_o
    1 x 1 convolutions; the vertical features reach the horizontal stack only from the rows
    above, through the down-shift."""

    def __init__(self, in_channels: int, channels: int, kernel_size: int, colours: int,
                 num_classes: int, first: bool):
        super().__init__()
        k = kernel_size
        self.vertical = DownShiftedConv2d(in_channels, 2 * channels, (k // 2 + 1, k))
        self.horizontal = MaskedConv2d(in_channels, 2 * channels, (1, k), "A" if first else "B",
                                       colours)
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.horizontal_out = MaskedConv2d(channels, channels, 1, "B", colours)
        self.residual = not first
        self.label_bias = nn.Embedding(num_classes, 4 * channels) if num_classes else None

    def label_biases(self, labels: torch.Tensor | None) -> tuple[torch.Tensor | float, ...]:
        """The class biases of the vertical and the horizontal gate."""
        bias = _label_bias(self.label_bias, labels)
        return (0.0, 0.0) if isinstance(bias, float) else tuple(bias.chunk(2, dim=1))

    def forward(self, v: torch.Tensor, h: torch.Tensor, labels: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        bias_v, bias_h = self.label_biases(labels)
        v_pre = self.vertical(v)
        h_pre = self.horizontal(h) + self.vertical_to_horizontal(down_shift(v_pre))
        h_out = self.horizontal_out(gate(h_pre + bias_h))
        return gate(v_pre + bias_v), (h + h_out if self.residual else h_out)


class GatedPixelCNNNet(nn.Module):
    """Gated PixelCNN: `layers` gated layers of `channels` features (the first with a
    first_kernel_size kernel, the others kernel_size), then ReLU, masked 1x1 (2 * channels),
    ReLU, masked 1x1 to out_channels on the horizontal stack."""

    def __init__(self, in_channels: int, out_channels: int, channels: int = 64, layers: int = 8,
                 first_kernel_size: int = 7, kernel_size: int = 3, colours: int = 1,
                 num_classes: int = 0):
        super().__init__()
        self.colours = colours
        self.layers = nn.ModuleList(
            [GatedLayer(in_channels, channels, first_kernel_size, colours, num_classes, True)]
            + [GatedLayer(channels, channels, kernel_size, colours, num_classes, False)
               for _ in range(layers - 1)])
        self.hidden = MaskedConv2d(channels, 2 * channels, 1, "B", colours)
        self.output = MaskedConv2d(2 * channels, out_channels, 1, "B", colours)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h, labels)
        return self.output(F.relu(self.hidden(F.relu(h))))

    def cache(self, x: torch.Tensor, labels: torch.Tensor | None = None
              ) -> GatedPixelCNNCache:
        return GatedPixelCNNCache(self, x, labels)


# -- PixelCNN++ ----------------------------------------------------------------------------------
class GatedResNet(nn.Module):
    """x + a * sigmoid(b), [a, b] = conv(dropout(concat_elu(conv(concat_elu(x)) +
    nin(concat_elu(skip))))) + class bias (Salimans et al. 2017, gated_resnet); `skips`
    short-cut inputs of `filters` channels each (0, 1 or 2). `rows` computes output rows a..b
    from whole input maps (both convolutions see one row up)."""

    def __init__(self, filters: int, conv: type[nn.Module], skips: int, dropout: float,
                 num_classes: int):
        super().__init__()
        self.conv_in = conv(2 * filters, filters)
        self.skip = nn.Conv2d(2 * skips * filters, filters, 1) if skips else None
        self.dropout = nn.Dropout(dropout)
        self.conv_out = conv(2 * filters, 2 * filters)
        self.label_bias = nn.Embedding(num_classes, 2 * filters) if num_classes else None

    def rows(self, x: torch.Tensor, skips: list[torch.Tensor], labels: torch.Tensor | None,
             a: int, b: int) -> torch.Tensor:
        c_first = max(a - 1, 0)  # conv_out needs the row above
        x_first = max(c_first - 1, 0)
        c = self.conv_in.rows(concat_elu(x[:, :, x_first:b + 1]), x_first, c_first, b)
        if skips:
            skip = torch.cat([t[:, :, c_first:b + 1] for t in skips], dim=1)
            c = c + self.skip(concat_elu(skip))
        c = self.conv_out.rows(self.dropout(concat_elu(c)), c_first, a, b)
        a_half, b_half = (c + _label_bias(self.label_bias, labels)).chunk(2, dim=1)
        return x[:, :, a:b + 1] + a_half * torch.sigmoid(b_half)

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor] = (),
                labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.rows(x, list(skips), labels, 0, x.shape[2] - 1)


class PixelCNNPlusPlusNet(nn.Module):
    """PixelCNN++ (Salimans et al. 2017, openai/pixel-cnn's pixel_cnn_2): the image with a
    channel of ones (so the zero padding is told apart from black), a stream u of the rows above
    and a stream ul of the rows above and the pixels to the left; three resolutions (S, S/2,
    S/4) of `resnets` gated residual blocks each on the way down, whose every output is a
    short-cut input of the mirror block on the way up (resnets + 1 blocks at S/2 and S), and
    nin(elu(ul)) to out_channels. Needs a side divisible by 4.

    The one forward pass (`_run`) computes every row, or, for the cached sampler, only row
    r // s of each stored map at scale s (1, 2, 4) when pixel (r, j) is next: a map's row rho
    at scale s depends on input rows <= s rho only, and on row s rho only left of the pixel it
    predicts, so every row above is final and no row below is needed."""

    def __init__(self, in_channels: int, out_channels: int, filters: int = 160, resnets: int = 5,
                 dropout: float = 0.5, colours: int = 1, num_classes: int = 0):
        super().__init__()
        f = filters
        u_conv = partial(DownShiftedConv2d, kernel_size=(2, 3))
        ul_conv = partial(DownRightShiftedConv2d, kernel_size=(2, 2))

        def blocks(conv, skips: int, count: int) -> nn.ModuleList:
            return nn.ModuleList([GatedResNet(f, conv, skips, dropout, num_classes)
                                  for _ in range(count)])

        self.colours = colours
        self.u_init = DownShiftedConv2d(in_channels + 1, f, (2, 3))
        self.ul_init_above = DownShiftedConv2d(in_channels + 1, f, (1, 3))
        self.ul_init_left = DownRightShiftedConv2d(in_channels + 1, f, (2, 1))
        self.down_u = nn.ModuleList([blocks(u_conv, 0, resnets) for _ in range(3)])
        self.down_ul = nn.ModuleList([blocks(ul_conv, 1, resnets) for _ in range(3)])
        self.downsize_u = nn.ModuleList([DownShiftedConv2d(f, f, (2, 3), 2) for _ in range(2)])
        self.downsize_ul = nn.ModuleList([DownRightShiftedConv2d(f, f, (2, 2), 2)
                                          for _ in range(2)])
        self.up_u = nn.ModuleList([blocks(u_conv, 1, resnets + (level > 0))
                                   for level in range(3)])
        self.up_ul = nn.ModuleList([blocks(ul_conv, 2, resnets + (level > 0))
                                    for level in range(3)])
        self.upsize_u = nn.ModuleList([DownShiftedConvTranspose2d(f, f) for _ in range(2)])
        self.upsize_ul = nn.ModuleList([DownRightShiftedConvTranspose2d(f, f) for _ in range(2)])
        self.output = nn.Conv2d(f, out_channels, 1)
        self.colour_head = (MaskedConv2d(in_channels, out_channels, 1, "A", colours)
                            if colours > 1 else None)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self._run(x, labels)

    def cache(self, x: torch.Tensor, labels: torch.Tensor | None = None
              ) -> PixelCNNPlusPlusCache:
        return PixelCNNPlusPlusCache(self, x, labels)

    def _run(self, x: torch.Tensor, labels: torch.Tensor | None,
             maps: list[torch.Tensor] | None = None, row: int | None = None) -> torch.Tensor:
        """The output rows: all of them, keeping every map in `maps` when it is given (an empty
        list); or, with `row` r and the maps of an earlier pass, only row r (each map's row
        r // s recomputed in place)."""
        stored = iter(maps or ())

        def span(scale: int) -> tuple[int, int]:
            return (0, x.shape[2] // scale - 1) if row is None else (row // scale,) * 2

        def keep(value: torch.Tensor, scale: int) -> torch.Tensor:
            if row is None:
                if maps is not None:
                    maps.append(value)
                return value
            whole = next(stored)
            whole[:, :, row // scale] = value[:, :, 0]
            return whole

        def shifted_down(conv: _RowConv, a: int, b: int) -> torch.Tensor:
            """Rows a..b of down_shift(conv(x_in)): rows a - 1 .. b - 1 of conv(x_in), below
            a row of zeros at the top."""
            if b == 0:
                return x_in.new_zeros(len(x), conv.out_channels, 1, x.shape[3])
            part = conv.rows(x_in, 0, max(a - 1, 0), b - 1)
            return F.pad(part, (0, 0, 1, 0)) if a == 0 else part

        x_in = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        a, b = span(1)
        u = keep(shifted_down(self.u_init, a, b), 1)
        ul = keep(shifted_down(self.ul_init_above, a, b)
                  + right_shift(self.ul_init_left.rows(x_in, 0, a, b)), 1)
        us, uls, scale = [u], [ul], 1
        for level in range(3):
            a, b = span(scale)
            for u_block, ul_block in zip(self.down_u[level], self.down_ul[level]):
                us.append(keep(u_block.rows(us[-1], [], labels, a, b), scale))
                uls.append(keep(ul_block.rows(uls[-1], [us[-1]], labels, a, b), scale))
            if level < 2:
                scale *= 2
                a, b = span(scale)
                us.append(keep(self.downsize_u[level].rows(us[-1], 0, a, b), scale))
                uls.append(keep(self.downsize_ul[level].rows(uls[-1], 0, a, b), scale))
        u, ul = us.pop(), uls.pop()
        for level in range(3):
            a, b = span(scale)
            for u_block, ul_block in zip(self.up_u[level], self.up_ul[level]):
                u = keep(u_block.rows(u, [us.pop()], labels, a, b), scale)
                ul = keep(ul_block.rows(ul, [u, uls.pop()], labels, a, b), scale)
            if level < 2:
                scale //= 2
                a, b = span(scale)
                u = keep(self.upsize_u[level].rows(u, a, b), scale)
                ul = keep(self.upsize_ul[level].rows(ul, a, b), scale)
        a, b = span(1)
        out = self.output(F.elu(ul[:, :, a:b + 1]))
        if self.colour_head is not None:
            out = out + self.colour_head(x[:, :, a:b + 1])
        return out


# -- the cached fast sampler (Ramachandran et al. 2017) -------------------------------------------
def _linear(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """A 1x1 (masked) convolution as (bias, weight^T) for torch.addmm at one position."""
    weight = conv.masked_weight() if isinstance(conv, MaskedConv2d) else conv.weight
    return conv.bias, weight[:, :, 0, 0].T.contiguous()


def _apply(linear: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return torch.addmm(linear[0], x, linear[1])


class _CausalTap:
    """A masked convolution evaluated one position at a time: its zero-padded input is kept in
    `buffer` and written position by position; `at(i, j)` is the output at (i, j) from the
    kernel rows at and above the centre (the rows below are masked)."""

    def __init__(self, conv: MaskedConv2d, batch: int, height: int, width: int,
                 like: torch.Tensor):
        kh, kw = conv.kernel_size
        self.ph, self.pw, self.kw = kh // 2, kw // 2, kw
        weight = conv.masked_weight()[:, :, :self.ph + 1]
        self.weight = weight.reshape(len(weight), -1).T.contiguous()
        self.bias = conv.bias
        self.buffer = like.new_zeros(batch, conv.in_channels, height + self.ph,
                                     width + 2 * self.pw)

    def write(self, i: int, j: int, value: torch.Tensor) -> None:
        self.buffer[:, :, i + self.ph, j + self.pw] = value

    def at(self, i: int, j: int) -> torch.Tensor:
        patch = self.buffer[:, :, i:i + self.ph + 1, j:j + self.kw]
        return torch.addmm(self.bias, patch.reshape(len(patch), -1), self.weight)


class _PixelCache:
    """The network's outputs at one pixel at a time, in raster order: calling it at (i, j)
    first computes every pixel it has not yet seen before (i, j) from x (the known prefix of a
    completion), then (i, j) itself, again on every call (the colour groups of a pixel are
    sampled one after the other).

    A pixel's features are computed before its last channel is drawn, which is right (mask A:
    no feature at (i, j) sees the channel it predicts), but the image itself, the first layer's
    input, must hold the drawn value before later pixels read it: each step first copies the
    previous pixel from x into `image` (the first layer's tap)."""

    image: _CausalTap

    def __init__(self, width: int):
        self.width, self.next = width, 0

    def step(self, x: torch.Tensor, i: int, j: int, output: bool) -> torch.Tensor | None:
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
        target = i * self.width + j
        for pixel in range(min(self.next, target), target + 1):
            pi, pj = divmod(pixel, self.width)
            if pixel > 0:
                qi, qj = divmod(pixel - 1, self.width)
                self.image.write(qi, qj, x[:, :, qi, qj])
            self.image.write(pi, pj, x[:, :, pi, pj])
            out = self.step(x, pi, pj, output=pixel == target)
        self.next = target + 1
        return out


class PixelCNNCache(_PixelCache):
    """PixelCNNNet one pixel at a time: each masked k x k convolution keeps its input and is
    evaluated at the new pixel only, from the rows above (all computed at earlier pixels) and
    the row so far."""

    def __init__(self, net: PixelCNNNet, x: torch.Tensor, labels: torch.Tensor | None):
        b, _, h, w = x.shape
        super().__init__(w)
        self.image = _CausalTap(net.input, b, h, w, x)
        self.blocks = [(_linear(block.reduce), _CausalTap(block.conv, b, h, w, x),
                        _linear(block.expand), _label_bias(block.label_bias, labels))
                       for block in net.blocks]
        self.hidden, self.output = _linear(net.hidden), _linear(net.output)

    def step(self, x, i, j, output):
        f = self.image.at(i, j)
        for reduce, tap, expand, bias in self.blocks:
            tap.write(i, j, F.relu(_apply(reduce, F.relu(f))))
            y = tap.at(i, j)
            if not isinstance(bias, float):
                y = y + bias[:, :, 0, 0]
            f = f + _apply(expand, F.relu(y))
        return _apply(self.output, F.relu(_apply(self.hidden, F.relu(f)))) if output else None


@dataclass
class _GatedLayerState:
    """What GatedPixelCNNCache keeps of one gated layer: its vertical input (zero-padded like
    the down-shifted convolution), the vertical pre-activations of the rows computed so far,
    the horizontal tap, the 1x1 layers and the class biases."""

    layer: GatedLayer
    vertical_in: torch.Tensor
    v_pre: torch.Tensor
    horizontal: _CausalTap
    v_to_h: tuple[torch.Tensor, torch.Tensor]
    h_out: tuple[torch.Tensor, torch.Tensor]
    bias_v: torch.Tensor | float
    bias_h: torch.Tensor | float


class GatedPixelCNNCache(_PixelCache):
    """GatedPixelCNNNet one pixel at a time: the vertical stack of row i - 1 is computed once,
    for the whole row, when row i starts (it depends only on rows <= i - 1); the horizontal
    stack is evaluated at the new pixel only, from its kept inputs of the row so far."""

    def __init__(self, net: GatedPixelCNNNet, x: torch.Tensor, labels: torch.Tensor | None):
        b, _, h, w = x.shape
        super().__init__(w)
        self.rows = 0
        self.layers = []
        for layer in net.layers:
            bias_v, bias_h = layer.label_biases(labels)
            kh, kw = layer.vertical.kernel_size
            self.layers.append(_GatedLayerState(
                layer, x.new_zeros(b, layer.vertical.in_channels, h + kh - 1, w + kw - 1),
                x.new_zeros(b, layer.vertical.out_channels, h, w),
                _CausalTap(layer.horizontal, b, h, w, x), _linear(layer.vertical_to_horizontal),
                _linear(layer.horizontal_out),
                bias_v if isinstance(bias_v, float) else bias_v[:, :, 0],
                bias_h if isinstance(bias_h, float) else bias_h[:, :, 0, 0]))
        self.image = self.layers[0].horizontal
        self.hidden, self.output = _linear(net.hidden), _linear(net.output)

    def _row(self, x: torch.Tensor, r: int) -> None:
        """The vertical stack at row r, every layer, from the kept rows above."""
        inp = x[:, :, r]
        for state in self.layers:
            conv = state.layer.vertical
            kh, kw = conv.kernel_size
            state.vertical_in[:, :, r + kh - 1, (kw - 1) // 2:(kw - 1) // 2 + inp.shape[-1]] = inp
            v_pre = F.conv2d(state.vertical_in[:, :, r:r + kh], conv.weight, conv.bias)[:, :, 0]
            state.v_pre[:, :, r] = v_pre
            inp = gate(v_pre + state.bias_v)

    def step(self, x, i, j, output):
        while self.rows < i:
            self._row(x, self.rows)
            self.rows += 1
        h = x[:, :, i, j]
        for state in self.layers:
            if state.horizontal is not self.image:
                state.horizontal.write(i, j, h)
            v_to_h = (_apply(state.v_to_h, state.v_pre[:, :, i - 1, j]) if i > 0
                      else state.v_to_h[0])
            pre = state.horizontal.at(i, j) + v_to_h + state.bias_h
            out = _apply(state.h_out, gate(pre))
            h = h + out if state.layer.residual else out
        return _apply(self.output, F.relu(_apply(self.hidden, F.relu(h)))) if output else None


class PixelCNNPlusPlusCache:
    """PixelCNNPlusPlusNet one pixel at a time: one full pass keeps every map; then each pixel
    (i, j) recomputes only row i // s of each map at scale s, from the maps' kept rows above
    (`PixelCNNPlusPlusNet._run`), about 1/S of the work of a whole pass."""

    def __init__(self, net: PixelCNNPlusPlusNet, x: torch.Tensor, labels: torch.Tensor | None):
        self.net, self.labels, self.maps = net, labels, []
        with torch.no_grad():
            net._run(x, labels, self.maps)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
        return self.net._run(x, self.labels, self.maps, row=i)[:, :, 0, j]
