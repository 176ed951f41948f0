"""The FID InceptionV3: the TensorFlow 2015-12-05 graph that FID, KID, IS and precision/recall
are defined with, in PyTorch, without torchvision.

The network matches torch-fidelity's ``FeatureExtractorInceptionV3`` layer for layer (so its
weight file ``weights-inception-2015-12-05-6726825d.pth`` loads with ``strict=True``), including
the TensorFlow-specific details that torchvision's InceptionV3 lacks:

* BatchNorm epsilon 1e-3;
* the average pools inside Mixed_5b..5d, 6b..6e and 7b ignore the zero padding
  (``count_include_pad=False``), and Mixed_7c pools with a max pool;
* the input is resized to 299x299 with TensorFlow 1.x's legacy bilinear resize
  (:func:`resize_bilinear_tf1`), then scaled as ``(x - 128) / 128``;
* a 1008-way classifier (1001 ImageNet classes + 7 unused).

:class:`FeatureExtractor` wraps it for inference: uint8 images in, float32 2048-d pool
features and 1008-d logits out, batched, under ``torch.inference_mode``, channels-last, with
BatchNorm folded into the convolutions (fused with the ReLU on the CPU) and optional bfloat16.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
import urllib.error
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import GenlabError
from genlab.files.dirs import env_path
from genlab.files.download import download as download_file
from genlab.files.download import file_digest

log = logging.getLogger(__name__)

WEIGHTS_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
               "weights-inception-2015-12-05-6726825d.pth")
WEIGHTS_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_SHA256_PREFIX = "6726825d"  # the digest prefix in the file name
WEIGHTS_ENV = "GENLAB_INCEPTION_WEIGHTS"
INPUT_SIZE = 299
POOL_DIM = 2048
NUM_LOGITS = 1008


class InceptionWeightsError(GenlabError):
    """The FID Inception weights are missing or unreadable."""


# --------------------------------------------------------------------------------------------
# TensorFlow 1.x bilinear resize
# --------------------------------------------------------------------------------------------

def _tf1_axis(in_size: int, out_size: int, device) -> tuple[torch.Tensor, ...]:
    """Source indices (low, high) and fractional weights of TF1's legacy resize along one axis.

    TF1 ``resize_bilinear(align_corners=False)`` samples output pixel ``i`` at source coordinate
    ``i * in/out`` (no half-pixel centres); the upper neighbour is clamped to the last pixel.
    The coordinate is computed in float32, as TF (and torch-fidelity) do.
    """
    scale = torch.tensor(in_size / out_size, dtype=torch.float32)
    coord = torch.arange(out_size, dtype=torch.float32) * scale
    low = coord.long()
    high = (low + 1).clamp_max(in_size - 1)
    frac = coord - low.float()
    return low.to(device), high.to(device), frac.to(device)


def resize_bilinear_tf1(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize float images (B, C, H, W) to ``size`` like TF 1.x ``tf.image.resize_bilinear``
    with ``align_corners=False`` (the resize inside the FID Inception graph).

    Output pixel (i, j) interpolates the source at (i * H/H', j * W/W'), lerping first along the
    width and then along the height; neighbours beyond the last row/column are clamped.
    """
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError("resize_bilinear_tf1 expects a float tensor (B, C, H, W)")
    out_h, out_w = size
    y_lo, y_hi, dy = _tf1_axis(images.shape[2], out_h, images.device)
    x_lo, x_hi, dx = _tf1_axis(images.shape[3], out_w, images.device)
    dx = dx.to(images.dtype).view(1, 1, 1, out_w)
    dy = dy.to(images.dtype).view(1, 1, out_h, 1)

    def along_width(rows: torch.Tensor) -> torch.Tensor:
        left, right = rows.index_select(3, x_lo), rows.index_select(3, x_hi)
        return left + (right - left) * dx

    top = along_width(images.index_select(2, y_lo))
    bottom = along_width(images.index_select(2, y_hi))
    return top + (bottom - top) * dy


# --------------------------------------------------------------------------------------------
# The network. Attribute names follow the TF graph (and so the weight file's keys).
# --------------------------------------------------------------------------------------------

_FUSED_CONV_RELU = (torch.backends.mkldnn.is_available()
                    and hasattr(torch.ops.mkldnn, "_convolution_pointwise"))


class ConvBN(nn.Module):
    """Convolution without bias, BatchNorm (eps 1e-3), ReLU.

    :meth:`fold` merges the BatchNorm into the convolution for inference (the same function up
    to float rounding); a folded layer on the CPU then runs convolution + bias + ReLU as one
    oneDNN kernel (one pass over memory instead of three)."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)
        self.folded = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.folded:
            return F.relu(self.bn(self.conv(x)))
        conv = self.conv
        if _FUSED_CONV_RELU and x.device.type == "cpu" and x.dtype == conv.weight.dtype:
            return torch.ops.mkldnn._convolution_pointwise(
                x, conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation,
                conv.groups, "relu", [None], "")
        return F.relu(conv(x), inplace=True)

    @torch.no_grad()
    def fold(self) -> None:
        if self.folded:
            return
        bn, conv = self.bn, self.conv
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                          conv.padding, bias=True).to(conv.weight.device)
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
        self.conv, self.bn, self.folded = fused, nn.Identity(), True


def _avg_pool_same(x: torch.Tensor) -> torch.Tensor:
    # TF's 3x3/1 'SAME' average pool divides by the number of real (non-padding) pixels.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class MixedA(nn.Module):
    """Mixed_5b/5c/5d: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg pool -> 1x1."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = ConvBN(cin, 64, 1)
        self.branch5x5_1 = ConvBN(cin, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(cin, pool_features, 1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        pool = self.branch_pool(_avg_pool_same(x))
        return torch.cat([self.branch1x1(x), b5, b3, pool], 1)


class MixedB(nn.Module):
    """Mixed_6a, the 35 -> 17 reduction: 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | max pool/2."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)


class MixedC(nn.Module):
    """Mixed_6b..6e: factorised 7x7 convolutions, avg pool -> 1x1."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = ConvBN(cin, 192, 1)
        self.branch7x7_1 = ConvBN(cin, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                      self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = layer(d)
        pool = self.branch_pool(_avg_pool_same(x))
        return torch.cat([self.branch1x1(x), b7, d, pool], 1)


class MixedD(nn.Module):
    """Mixed_7a, the 17 -> 8 reduction."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = ConvBN(cin, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = x
        for layer in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3,
                      self.branch7x7x3_4):
            b7 = layer(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class MixedE(nn.Module):
    """Mixed_7b (``pool='avg'``, padding excluded) and Mixed_7c (``pool='max'``: the TF graph
    max-pools in its last block)."""

    def __init__(self, cin: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = ConvBN(cin, 320, 1)
        self.branch3x3_1 = ConvBN(cin, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x):
        s = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        if self.pool == "avg":
            pooled = _avg_pool_same(x)
        else:
            pooled = F.max_pool2d(x, 3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(s), self.branch3x3_2b(s),
                          self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d),
                          self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """The network on preprocessed input: float (B, 3, 299, 299) in [-1, 1] ->
    (pool features (B, 2048), logits (B, 1008)).

    The logits are ``pool @ fc.weight.T`` *without* the classifier bias, which is what
    torch-fidelity's Inception Score uses (its ``logits_unbiased``)."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = MixedA(192, 32)
        self.Mixed_5c = MixedA(256, 64)
        self.Mixed_5d = MixedA(288, 64)
        self.Mixed_6a = MixedB(288)
        self.Mixed_6b = MixedC(768, 128)
        self.Mixed_6c = MixedC(768, 160)
        self.Mixed_6d = MixedC(768, 160)
        self.Mixed_6e = MixedC(768, 192)
        self.Mixed_7a = MixedD(768)
        self.Mixed_7b = MixedE(1280, pool="avg")
        self.Mixed_7c = MixedE(2048, pool="max")
        self.fc = nn.Linear(POOL_DIM, NUM_LOGITS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # 64 x 147 x 147
        x = F.max_pool2d(x, 3, stride=2)                                    # 64 x 73 x 73
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))                       # 192 x 71 x 71
        x = F.max_pool2d(x, 3, stride=2)                                    # 192 x 35 x 35
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a,
                      self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e,
                      self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)                                                    # 2048 x 8 x 8
        pool = x.float().mean(dim=(2, 3))  # pooled in float32 even when the network is bf16
        logits = pool @ self.fc.weight.float().T
        return pool, logits

    def fold_batchnorm(self) -> FIDInceptionV3:
        for module in self.modules():
            if isinstance(module, ConvBN):
                module.fold()
        return self


def preprocess(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (B, C, H, W), C in {1, 3} -> the network input: float (B, 3, 299, 299),
    TF1-resized, scaled to [-1, 1]. A single channel is repeated to three."""
    if images.dtype != torch.uint8:
        raise GenlabError(f"The Inception feature extractor takes uint8 images; got {images.dtype}."
                          " Convert samples in [-1, 1] with genlab.data.transforms.to_uint8.")
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise GenlabError("The Inception feature extractor takes images shaped (B, C, H, W) with "
                          f"C = 1 or 3; got shape {tuple(images.shape)}.")
    x = images.to(dtype)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = resize_bilinear_tf1(x, (INPUT_SIZE, INPUT_SIZE))
    return (x - 128) / 128


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------

def default_weights_path() -> Path:
    """Where the weights are looked for when neither an argument nor $GENLAB_INCEPTION_WEIGHTS
    names a file: torch hub's checkpoint cache (shared with torch-fidelity)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILENAME


def _missing_weights_message(path: Path, reason: str) -> str:
    return (f"The FID Inception weights are not available ({reason}). Download "
            f"{WEIGHTS_URL} on a machine with internet access and either put it at {path}, or "
            f"point the environment variable {WEIGHTS_ENV} (or genlab-fid --weights, evaluate.py "
            f"fid.weights=) at the file. "
            "It is torch-fidelity's InceptionV3 state dict converted from TensorFlow's "
            "2015-12-05 graph (the one FID is defined with).")


def resolve_weights(weights: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The weight file to use: ``weights``, else $GENLAB_INCEPTION_WEIGHTS, else the torch hub
    cache file (downloaded there when missing and ``download``)."""
    path = Path(weights).expanduser() if weights is not None else env_path(WEIGHTS_ENV)
    if path is not None:
        if not path.is_file():
            raise InceptionWeightsError(_missing_weights_message(path, f"{path} does not exist"))
        return path
    path = default_weights_path()
    if path.is_file():
        return path
    if not download:
        raise InceptionWeightsError(_missing_weights_message(path, f"{path} does not exist"))
    try:
        return download_file(WEIGHTS_URL, path, sha256_prefix=WEIGHTS_SHA256_PREFIX)
    except (urllib.error.URLError, OSError, TimeoutError, GenlabError) as e:
        raise InceptionWeightsError(_missing_weights_message(
            path, f"{path} does not exist and downloading it failed: {e}")) from e


def load_inception(weights: str | os.PathLike | None = None, download: bool = True
                   ) -> FIDInceptionV3:
    """The network with the TF weights loaded strictly (unfolded, float32, CPU, eval mode)."""
    path = resolve_weights(weights, download=download)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = FIDInceptionV3()
        model.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, KeyError, ValueError, pickle.UnpicklingError) as e:
        raise InceptionWeightsError(
            f"Could not load the FID Inception weights from {path}: {e}. The file must be "
            f"torch-fidelity's {WEIGHTS_FILENAME} (from {WEIGHTS_URL}).") from e
    return model.eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------
# Feature extractor
# --------------------------------------------------------------------------------------------

class FeatureExtractor:
    """uint8 images -> FID Inception features.

    Args:
        weights: the weight file; default $GENLAB_INCEPTION_WEIGHTS, else the torch hub cache.
        device: where the network runs ('cpu', 'cuda', ...).
        batch_size: images per forward pass in :meth:`iter_features` (None: 16 on a CPU, where
            small batches stay in cache and run ~25% faster than 100, docs/BENCHMARKS.md;
            200 on a GPU).
        bf16: run the convolutions in bfloat16 (weights and activations; what autocast would do
            for this all-convolution network). Faster on GPUs and on CPUs with AVX512-BF16;
            shifts FID slightly (README, Metrics). The resize, the normalisation, the final
            average pool and the logits stay in float32.
        fold_bn: fold BatchNorm into the convolutions (same function up to float rounding;
            faster).
        download: download the weights into the torch hub cache when no file is found.
    """

    def __init__(self, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                 batch_size: int | None = None, bf16: bool = False, fold_bn: bool = True,
                 download: bool = True):
        self.weights_path = resolve_weights(weights, download=download)
        self.device = torch.device(device)
        self.batch_size = batch_size or (16 if self.device.type == "cpu" else 200)
        self.bf16 = bf16
        model = load_inception(self.weights_path)
        if fold_bn:
            model.fold_batchnorm()
        self.model = model.to(self.device, memory_format=torch.channels_last)
        self.dtype = torch.bfloat16 if bf16 else torch.float32
        if bf16:
            self.model.to(torch.bfloat16)

    @property
    def weights_hash(self) -> str:
        """SHA-256 of the weight file (part of every cache key)."""
        return file_digest(self.weights_path, "sha256")

    @property
    def precision(self) -> str:
        return "bf16" if self.bf16 else "fp32"

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch: uint8 (B, C, H, W), C in {1, 3}, any H, W -> (pool (B, 2048),
        logits (B, 1008)), float32 on the CPU."""
        with torch.inference_mode():
            x = preprocess(images.to(self.device, non_blocking=True))
            x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
            pool, logits = self.model(x)
            return pool.float().cpu(), logits.float().cpu()

    def iter_features(self, batches: Iterable[torch.Tensor], total: int | None = None,
                      desc: str = "features") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Features of a stream of uint8 batches (re-chunked to ``batch_size``), with progress
        (and the time left, when ``total`` is known) logged to the ``genlab.metrics`` logger
        about every 30 s."""
        done, start, last = 0, time.perf_counter(), time.perf_counter()
        for chunk in rebatch(batches, self.batch_size):
            yield self.features(chunk)
            done += len(chunk)
            now = time.perf_counter()
            if now - last > 30 or (total is not None and done >= total):
                rate = done / max(now - start, 1e-9)
                of = f"/{total}" if total is not None else ""
                left = (f", about {(total - done) / rate / 60:.1f} min left"
                        if total is not None and done < total else "")
                log.info("%s: %d%s images, %.1f images/s%s", desc, done, of, rate, left)
                last = now


def rebatch(batches: Iterable[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    """Re-chunk a stream of (B, C, H, W) batches (a tensor counts as one batch) into batches of
    ``batch_size`` (the last one may be smaller)."""
    if isinstance(batches, torch.Tensor):
        batches = [batches]
    pending: list[torch.Tensor] = []
    count = 0
    for batch in batches:
        if batch.dim() == 3:
            batch = batch.unsqueeze(0)
        pending.append(batch)
        count += len(batch)
        while count >= batch_size:
            joined = torch.cat(pending) if len(pending) > 1 else pending[0]
            yield joined[:batch_size]
            rest = joined[batch_size:]
            pending, count = ([rest] if len(rest) else []), len(rest)
    if count:
        yield torch.cat(pending) if len(pending) > 1 else pending[0]
