"""Sample quality of a generative model, streamed: the protocol evaluate.py and the FID callback
share.

Samples are drawn ``batch_size`` at a time, turned into uint8 exactly like real images
(:func:`genlab.data.transforms.to_uint8`), passed through the Inception network (and the
classifier of ``fid_classifier``), and dropped: only the uint8 images (for the .npz file), the
running feature moments and the 2048-d features (for KID and precision/recall) are kept, so
50k samples never sit in memory as float images.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from genlab.data.transforms import to_model_range, to_uint8
from genlab.images import make_grid, save_png
from genlab.metrics.classifier import SmallClassifier
from genlab.metrics.fid import FeatureStats, frechet_distance
from genlab.metrics.inception import FeatureExtractor
from genlab.metrics.reference import InceptionStats, compare, extract_stats

log = logging.getLogger(__name__)


@torch.no_grad()
def model_samples(model, n: int, batch_size: int, seed: int, offset: int = 0
                  ) -> Iterator[torch.Tensor]:
    """``n`` samples of ``model`` as uint8 CPU batches (B, C, H, W), from a generator seeded
    with ``seed``. Class-conditional models get every class in turn (label ``(offset + i) % K``
    for the i-th sample), so the classes are balanced."""
    generator = torch.Generator(device=model.device).manual_seed(seed)
    for start in range(0, n, batch_size):
        k = min(batch_size, n - start)
        labels = None
        if model.conditional:
            labels = torch.arange(offset + start, offset + start + k,
                                  device=model.device) % model.num_classes
        yield to_uint8(model.sample(k, labels=labels, generator=generator)).cpu()


def classifier_stats(classifier: SmallClassifier, images: torch.Tensor,
                     batch_size: int = 1000) -> FeatureStats:
    """Mean and covariance of the classifier features of uint8 images (N, C, H, W)."""
    stats = FeatureStats()
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            stats.update(classifier.embed(images[i:i + batch_size]))
    return stats


def save_npz(images: np.ndarray, path: Path) -> Path:
    """uint8 images (N, H, W, C) as ``path`` (key ``images``), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, images=images)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def evaluate_samples(model, reference: InceptionStats, extractor: FeatureExtractor, *,
                     num_samples: int, batch_size: int, seed: int, npz_path: Path | None = None,
                     grid_path: Path | None = None,
                     classifier: SmallClassifier | None = None,
                     classifier_reference: FeatureStats | None = None, isc: bool = True,
                     kid_subsets: int = 100, kid_subset_size: int = 1000) -> dict:
    """FID, KID, precision/recall (and IS, and ``fid_classifier`` when a classifier and its
    reference statistics are given) of ``num_samples`` samples against ``reference``; the
    samples are saved as uint8 to ``npz_path``, and a grid of the first 64 to ``grid_path``,
    when given."""
    c, h, w = model.image_shape
    kept = np.empty((num_samples, h, w, c), dtype=np.uint8) if npz_path is not None else None
    cls_stats = FeatureStats()

    def stream() -> Iterator[torch.Tensor]:
        done = 0
        for chunk in model_samples(model, num_samples, batch_size, seed):
            if done == 0 and grid_path is not None:
                save_png(make_grid(to_model_range(chunk[:64])), grid_path)
            if kept is not None:
                kept[done:done + len(chunk)] = chunk.permute(0, 2, 3, 1).numpy()
            if classifier is not None:
                with torch.inference_mode():
                    cls_stats.update(classifier.embed(chunk))
            done += len(chunk)
            yield chunk

    stats = extract_stats(stream(), extractor, keep_features=True, keep_logits=isc)
    if kept is not None:
        save_npz(kept, npz_path)
    out = compare(stats, reference, isc=isc, kid_subsets=kid_subsets,
                  kid_subset_size=kid_subset_size)
    if classifier is not None and classifier_reference is not None:
        out["fid_classifier"] = frechet_distance(cls_stats.mean, cls_stats.cov,
                                                 classifier_reference.mean,
                                                 classifier_reference.cov)
    return out
