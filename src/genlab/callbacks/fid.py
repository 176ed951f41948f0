"""FID and KID during training: ``val/fid`` and ``val/kid`` every ``every_n_epochs`` epochs.

Enable it with ``callbacks=fid`` (``conf/callbacks/fid.yaml``: the default callbacks plus this
one). To keep the checkpoint with the best FID, also pass
``callbacks.model_checkpoint.monitor=val/fid callbacks.model_checkpoint.every_n_epochs=N``
with N = ``callbacks.fid.every_n_epochs`` (the metric exists only in those epochs).

Under DDP each rank draws ``ceil(num_samples / world_size)`` samples (its own seed), extracts
their Inception features on its own device, and the features are gathered with exactly one
``all_gather`` per evaluation on every rank, whatever the data: no rank can wait on a
collective that another rank skips. Every rank then computes the same FID and KID, so logging
needs no further synchronisation. The reference statistics (``reference_num`` images of the
datamodule's ``reference_split``) are computed once by rank 0 and cached on disk; the other
ranks read the cache after a barrier. The reference images and their statistics are the ones
evaluate.py uses (`genlab.metrics.protocol`), so `val/fid` and evaluate.py's `fid` agree for the
same samples.
"""

from __future__ import annotations

import math
from typing import Annotated

import lightning as L
import torch

from genlab.checks import OneOf, Range
from genlab.metrics.fid import FeatureStats
from genlab.metrics.inception import FeatureExtractor, resolve_weights
from genlab.metrics.protocol import model_samples, reference_statistics
from genlab.metrics.reference import InceptionStats, compare


class FIDCallback(L.Callback):
    """Logs ``val/fid`` (Heusel et al. 2017) and ``val/kid`` (Bińkowski et al. 2018) of
    ``num_samples`` samples against the training images.

    Args:
        every_n_epochs: measure after the validation of every N-th epoch.
        num_samples: samples per measurement (over all ranks); 5000 is the usual FID-5k.
        reference_split: 'train' or 'test': the reference images of the one sample-quality
            protocol (`ImageDataModule.reference_images`), as in evaluate.py.
        reference_num: reference images (None: the whole split).
        batch_size: samples per ``model.sample`` call.
        weights, bf16, inception_batch_size: the Inception extractor (see
            :class:`genlab.metrics.inception.FeatureExtractor`).
        kid_subsets, kid_subset_size: KID's subsets (the size shrinks, with a warning, to
            ``num_samples`` when that is smaller).
        cache_dir: where reference statistics are cached (None: $GENLAB_CACHE_DIR).
        seed: the sampling seed (rank r uses seed + r); the same noise every time.
    """

    def __init__(self, every_n_epochs: Annotated[int, Range(1)] = 5,
                 num_samples: Annotated[int, Range(2)] = 5000,
                 reference_split: Annotated[str, OneOf(("train", "test"))] = "train",
                 reference_num: Annotated[int, Range(1)] | None = None,
                 batch_size: Annotated[int, Range(1)] = 250, weights: str | None = None,
                 bf16: bool = False, inception_batch_size: Annotated[int, Range(1)] | None = None,
                 kid_subsets: Annotated[int, Range(1)] = 100,
                 kid_subset_size: Annotated[int, Range(2)] = 1000, cache_dir: str | None = None,
                 seed: Annotated[int, Range(0)] = 0):
        self.every_n_epochs, self.num_samples = every_n_epochs, num_samples
        self.reference_split, self.reference_num = reference_split, reference_num
        self.batch_size, self.weights, self.bf16 = batch_size, weights, bf16
        self.inception_batch_size = inception_batch_size
        self.kid_subsets, self.kid_subset_size = kid_subsets, kid_subset_size
        self.cache_dir, self.seed = cache_dir, seed
        self._extractor = None
        self._reference = None

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        if stage == "fit":  # missing weights fail at the start, not after the first N epochs
            resolve_weights(self.weights)

    def _reference_stats(self, trainer: L.Trainer) -> InceptionStats:
        dm = trainer.datamodule
        images, _ = dm.reference_images(self.reference_split)
        return reference_statistics(dm.name, self.reference_split, images, self.reference_num,
                                    self._extractor, self.cache_dir)

    def _prepare(self, trainer: L.Trainer, device: torch.device) -> None:
        if self._extractor is None:
            self._extractor = FeatureExtractor(self.weights, device=device, bf16=self.bf16,
                                               batch_size=self.inception_batch_size)
        if self._reference is None:  # rank 0 computes and caches; the others read the cache
            if trainer.is_global_zero:
                self._reference = self._reference_stats(trainer)
            trainer.strategy.barrier("fid_reference")
            if not trainer.is_global_zero:
                self._reference = self._reference_stats(trainer)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self._prepare(trainer, pl_module.device)
        per_rank = math.ceil(self.num_samples / trainer.world_size)
        samples = model_samples(pl_module, per_rank, self.batch_size,
                                seed=self.seed + trainer.global_rank,
                                offset=trainer.global_rank * per_rank)
        features = torch.cat([pool for pool, _ in self._extractor.iter_features(
            samples, total=per_rank, desc="FID samples")])
        gathered = pl_module.all_gather(features.to(pl_module.device))
        features = gathered.reshape(-1, features.shape[1])[: self.num_samples].cpu()
        moments = FeatureStats().update(features)
        stats = InceptionStats(mu=moments.mean, sigma=moments.cov, n=moments.n,
                               features=features.numpy())
        result = compare(stats, self._reference, pr=False, kid_subsets=self.kid_subsets,
                         kid_subset_size=self.kid_subset_size)
        pl_module.log("val/fid", result["fid"], sync_dist=False)
        pl_module.log("val/kid", result["kid_mean"], sync_dist=False)
