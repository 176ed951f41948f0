"""Inception statistics of image sets, the on-disk cache of reference statistics, and the
comparison of two sets (FID, KID, precision/recall, IS) used by evaluate.py, the training
callback and the CLI.

A reference (e.g. ``cifar10:train``, or an archive / folder of real images) is reduced once to
its Inception statistics: mean and covariance of the 2048-d pool features (float64), plus the
features themselves (float32, for KID and precision/recall) and the logits (for IS). They are
cached in ``<cache_dir>/inception-stats/`` as one .npz per key, written atomically. The key is
the source (dataset name and split, or the path and its size/mtime), the image resolution, the
number of images (and the subset seed when it is a subset), the SHA-256 of the extractor weights
and the extractor precision (fp32/bf16); the file name spells out the readable parts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from genlab.errors import GenlabError
from genlab.files.atomic import atomic_write
from genlab.files.dirs import cache_dir as default_cache_dir
from genlab.files.download import file_digest
from genlab.files.images import ImageSource
from genlab.metrics.fid import FeatureStats, frechet_distance
from genlab.metrics.inception import FeatureExtractor, resolve_weights
from genlab.metrics.inception_score import inception_score
from genlab.metrics.kid import kid as kernel_inception_distance
from genlab.metrics.kid import kid_subset_size_for
from genlab.metrics.precision_recall import precision_recall
from genlab.metrics.sources import open_images

log = logging.getLogger(__name__)
CACHE_VERSION = 1

def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class InceptionStats:
    """Inception statistics of one image set.

    ``mu`` (2048,) and ``sigma`` (2048, 2048) are float64; ``features`` (n, 2048) and ``logits``
    (n, 1008) are float32 and optional (FID needs only mu and sigma; KID and precision/recall
    need the features, IS the logits). ``meta`` records where they came from."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    features: np.ndarray | None = None
    logits: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        """Write to an .npz atomically."""
        arrays = {"mu": self.mu, "sigma": self.sigma, "n": np.int64(self.n),
                  "meta": np.array(json.dumps(self.meta))}
        if self.features is not None:
            arrays["features"] = self.features
        if self.logits is not None:
            arrays["logits"] = self.logits
        with atomic_write(path) as f:
            np.savez(f, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> InceptionStats:
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(mu=data["mu"], sigma=data["sigma"], n=int(data["n"]),
                           features=data["features"] if "features" in data.files else None,
                           logits=data["logits"] if "logits" in data.files else None,
                           meta=json.loads(str(data["meta"])))
        except (OSError, KeyError, ValueError) as e:
            raise GenlabError(f"Could not read Inception statistics from {path}: {e}. Delete "
                              "the file to recompute it.") from e


def extract_stats(images, extractor: FeatureExtractor, *, n: int | None = None, seed: int = 0,
                  keep_features: bool = True, keep_logits: bool = False,
                  meta: dict | None = None) -> InceptionStats:
    """Inception statistics of ``images``: an image-set spec or :class:`ImageSource` (see
    :func:`genlab.metrics.sources.open_images`; ``n`` images drawn with ``seed``), a uint8
    tensor (N, C, H, W), or any iterable of uint8 batches (streamed; ``n`` must be None).

    The mean and covariance are accumulated batch by batch in float64; features and logits are
    kept only when asked for."""
    if isinstance(images, (str, os.PathLike, np.ndarray, torch.Tensor, ImageSource)):
        source = open_images(images)
        indices = source.select(n, seed)
        batches: Iterable[torch.Tensor] = source.batches(extractor.batch_size, indices)
        total, desc = len(indices), source.description
    else:
        if n is not None:
            raise GenlabError("n applies to image sets, not to a stream of batches.")
        batches, total, desc = images, None, "samples"
    stats = FeatureStats()
    features, logits = [], []
    for pool, lgt in extractor.iter_features(batches, total=total, desc=desc):
        stats.update(pool)
        if keep_features:
            features.append(pool.numpy())
        if keep_logits:
            logits.append(lgt.numpy())
    if stats.n == 0:
        raise GenlabError(f"{desc}: no images.")
    info = {"n": stats.n, "weights_sha256": extractor.weights_hash,
            "precision": extractor.precision, **(meta or {})}
    return InceptionStats(mu=stats.mean, sigma=stats.cov, n=stats.n,
                          features=np.concatenate(features) if keep_features else None,
                          logits=np.concatenate(logits) if keep_logits else None, meta=info)


def reference_stats(source, *, n: int | None = None, seed: int = 0,
                    extractor: FeatureExtractor | None = None, cache_dir: str | Path | None = None,
                    use_cache: bool = True, keep_features: bool = True, keep_logits: bool = True,
                    weights: str | os.PathLike | None = None, device: str | None = None,
                    batch_size: int = 100, bf16: bool = False,
                    **dataset_options) -> InceptionStats:
    """Inception statistics of a reference image set, from the cache when present.

    ``source`` is anything :func:`~genlab.metrics.sources.open_images` takes (``cifar10:train``,
    a folder, an archive, an .npz; ``dataset_options`` go to ``load_split``). ``n`` images (all
    by default) are drawn with ``seed``. Without an ``extractor``, one is built from
    ``weights``/``device``/``batch_size``/``bf16`` only when the statistics must be computed."""
    src = open_images(source, **dataset_options)
    indices = src.select(n, seed)
    if extractor is not None:
        weights_hash, precision = extractor.weights_hash, extractor.precision
    else:
        weights_hash = file_digest(resolve_weights(weights), "sha256")
        precision = "bf16" if bf16 else "fp32"
    subset = len(indices) != len(src)
    key = {"version": CACHE_VERSION, "source": src.fingerprint(), "name": src.name,
           "split": src.split, "shape": list(src.shape), "n": len(indices),
           "seed": seed if subset else None, "weights_sha256": weights_hash,
           "precision": precision}
    key_hash = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache_dir / "inception-stats" / (
        f"{src.name}-{src.split}-{src.shape[1]}px-n{len(indices)}-{precision}-"
        f"{weights_hash[:12]}-{key_hash[:10]}.npz")
    if use_cache and path.is_file():
        stats = InceptionStats.load(path)
        has_all = ((stats.features is not None or not keep_features)
                   and (stats.logits is not None or not keep_logits))
        if stats.meta.get("key") == key and has_all:
            log.info("Inception statistics of %s from the cache: %s", src.description, path)
            return stats
    if extractor is None:
        extractor = FeatureExtractor(weights, device=device or default_device(),
                                     batch_size=batch_size, bf16=bf16)
    log.info("Computing Inception statistics of %s (%d images)", src.description, len(indices))
    stats = extract_stats(src, extractor, n=n, seed=seed, keep_features=keep_features,
                          keep_logits=keep_logits,
                          meta={"key": key, "description": src.description})
    if use_cache:
        stats.save(path)
        log.info("Cached them in %s", path)
    return stats


def compare(a: InceptionStats, b: InceptionStats, *, kid: bool = True, pr: bool = True,
            isc: bool = False, kid_subsets: int = 100, kid_subset_size: int = 1000,
            pr_k: int = 3, seed: int = 2020) -> dict[str, float | int]:
    """Metrics of set ``a`` (generated) against set ``b`` (reference): ``fid``; ``kid_mean``,
    ``kid_std``, ``kid_subset_size`` (when both have features and ``kid``); ``precision``
    (share of ``a`` in ``b``'s manifold) and ``recall`` (share of ``b`` in ``a``'s) when ``pr``;
    ``is_mean``, ``is_std`` of ``a`` when ``isc``; ``n_a``, ``n_b``."""
    for field_name in ("weights_sha256", "precision"):
        va, vb = a.meta.get(field_name), b.meta.get(field_name)
        if va and vb and va != vb:
            log.warning("The two sets were measured with different extractors (%s %s vs %s): "
                        "their scores are not comparable.", field_name, va, vb)
    out: dict[str, float | int] = {"fid": frechet_distance(a.mu, a.sigma, b.mu, b.sigma)}
    have_features = a.features is not None and b.features is not None
    if (kid or pr) and not have_features:
        log.warning("KID and precision/recall need the features of both sets; these statistics "
                    "hold only mean and covariance, so only FID is reported.")
    if kid and have_features:
        size = kid_subset_size_for(len(a.features), len(b.features), kid_subset_size)
        out["kid_mean"], out["kid_std"] = kernel_inception_distance(
            a.features, b.features, subsets=kid_subsets, subset_size=size, seed=seed)
        out["kid_subset_size"] = size
    if pr and have_features:
        out["precision"], out["recall"] = precision_recall(b.features, a.features, k=pr_k)
    if isc:
        if a.logits is None:
            raise GenlabError("The Inception Score needs the logits of the generated set.")
        out["is_mean"], out["is_std"] = inception_score(a.logits, seed=seed)
    out["n_a"], out["n_b"] = a.n, b.n
    return out
