"""The one sample-quality protocol: what evaluate.py and the FID callback measure, and against
which images.

Reference: `ImageDataModule.reference_images(split)`, the dataset's whole training split (all
50,000 CIFAR-10 training images, the validation hold-out included) or its test split, always
8-bit. Its Inception statistics are cached (`genlab.metrics.reference`).

Samples are drawn ``batch_size`` at a time from a generator seeded with ``seed`` (balanced
classes for conditional models), turned into uint8 exactly like real images
(:func:`genlab.data.transforms.to_uint8`), passed through the Inception network (and the
classifier of ``fid_classifier``), and dropped: only the uint8 images (for the .npz file), the
running feature moments and the 2048-d features (for KID and precision/recall) are kept, so
50k samples never sit in memory as float images.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from genlab.data.transforms import to_model_range, to_uint8
from genlab.files.atomic import atomic_write
from genlab.files.grid import make_grid, save_png
from genlab.files.images import TensorSource
from genlab.metrics.classifier import SmallClassifier, cached_classifier
from genlab.metrics.fid import FeatureStats, frechet_distance
from genlab.metrics.inception import FeatureExtractor
from genlab.metrics.reference import InceptionStats, compare, extract_stats, reference_stats

log = logging.getLogger(__name__)


def reference_statistics(dataset: str, split: str, images: torch.Tensor, n: int | None,
                         extractor: FeatureExtractor, cache_dir: str | Path | None
                         ) -> InceptionStats:
    """Inception statistics of ``n`` (None: all) of the reference ``images`` (from
    ``ImageDataModule.reference_images(split)``), cached as ``<dataset>:<split>``."""
    source = TensorSource(images, f"{dataset}:{split}", dataset, split)
    return reference_stats(source, n=n, extractor=extractor, cache_dir=cache_dir,
                           keep_logits=False)


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
        with atomic_write(npz_path) as f:
            np.savez(f, images=kept)
    out = compare(stats, reference, isc=isc, kid_subsets=kid_subsets,
                  kid_subset_size=kid_subset_size)
    if classifier is not None and classifier_reference is not None:
        out["fid_classifier"] = frechet_distance(cls_stats.mean, cls_stats.cov,
                                                 classifier_reference.mean,
                                                 classifier_reference.cov)
    return out


def sample_quality(model, datamodule, extractor: FeatureExtractor, *, num_samples: int,
                   batch_size: int, seed: int, reference_split: str = "train",
                   reference_num: int | None = None, classifier: bool | str = "auto",
                   kid_subsets: int = 100, kid_subset_size: int = 1000,
                   cache_dir: str | Path | None = None, npz_path: Path | None = None,
                   grid_path: Path | None = None) -> dict[str, float | int | str]:
    """evaluate.py's measurement: FID, KID, IS, precision/recall (and ``fid_classifier`` for
    1-channel labelled data when ``classifier`` is "auto", or when it is true) of
    ``num_samples`` samples against the reference split, with ``n_samples``, ``n_reference``
    and ``reference`` (e.g. ``cifar10:train``) in the result."""
    images, _ = datamodule.reference_images(reference_split)
    reference = reference_statistics(datamodule.name, reference_split, images, reference_num,
                                     extractor, cache_dir)
    if classifier == "auto":
        classifier = images.shape[1] == 1 and bool(datamodule.classes)
    cls_model = cls_reference = None
    if classifier:
        train = datamodule.reference_images("train")
        cls_model = cached_classifier(datamodule.name, *train, cache_dir,
                                      test=datamodule.reference_images("test"))
        cls_reference = classifier_stats(cls_model, images)
    model.to(extractor.device).eval()
    log.info("Sample quality: %d samples against %s:%s (%d images)", num_samples,
             datamodule.name, reference_split, reference.n)
    result = evaluate_samples(
        model, reference, extractor, num_samples=num_samples, batch_size=batch_size, seed=seed,
        classifier=cls_model, classifier_reference=cls_reference, kid_subsets=kid_subsets,
        kid_subset_size=kid_subset_size, npz_path=npz_path, grid_path=grid_path)
    result.update(n_samples=result.pop("n_a"), n_reference=result.pop("n_b"),
                  reference=f"{datamodule.name}:{reference_split}")
    return result
