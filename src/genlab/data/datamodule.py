"""One LightningDataModule for every dataset, over uint8 tensors held in memory."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

import lightning as L
import torch

from genlab.checks import OneOf, Range
from genlab.data.arrays import UNLABELLED
from genlab.data.datasets import DATASETS, dataset_spec, load_dataset
from genlab.data.transforms import binarize, random_flip, to_model_range
from genlab.errors import GenlabError, check_choice
from genlab.maths.random import seeded_generator

BINARIZE_MODES = ("dynamic", "static", False)
REFERENCE_SPLITS = ("train", "test")
AUTO_HOLD_OUT_SHARE, AUTO_HOLD_OUT_MAX = 0.1, 1000  # val_size / test_size null


def auto_hold_out(n: int) -> int:
    """The hold-out size that `data.val_size` / `data.test_size` null stand for: 10% of the n
    images of the training split, at least 1 and at most 1000."""
    return max(1, min(AUTO_HOLD_OUT_MAX, int(n * AUTO_HOLD_OUT_SHARE)))


class TensorBatches:
    """Batches of (uint8 images, labels) by index gathers, with no per-image work.

    Shuffling draws a permutation from `seed` and the epoch (read through `epoch_fn`), so runs
    and resumed runs see the same order. Under DDP each rank takes every `world_size`-th index
    of the permutation; for training, every rank gets the same number of batches.

    Resumable mid-epoch: Lightning stores `state_dict()` (the epoch and the batches training
    has consumed in it, read through `consumed_fn`) in checkpoints and gives it back through
    `load_state_dict` when training resumes; the next iteration over that same epoch then skips
    the consumed batches, so a run resumed from a checkpoint written mid-epoch continues with
    the batch it stopped at.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 shuffle: bool = False, drop_last: bool = False, seed: int = 0,
                 epoch_fn: Callable[[], int] = lambda: 0, rank: int = 0, world_size: int = 1,
                 consumed_fn: Callable[[], int] = lambda: 0):
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.epoch_fn, self.rank, self.world_size = seed, epoch_fn, rank, world_size
        self.consumed_fn = consumed_fn
        self._resume: dict | None = None

    def state_dict(self) -> dict:
        return {"epoch": self.epoch_fn(), "batches": self.consumed_fn()}

    def load_state_dict(self, state: dict) -> None:
        self._resume = state

    def _indices(self) -> torch.Tensor:
        n = len(self.images)
        if self.shuffle:
            generator = seeded_generator(self.seed, self.epoch_fn())
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        if self.drop_last:
            order = order[: n - n % self.world_size]
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        n = len(self.images)
        used = n - n % self.world_size if self.drop_last else n
        per_rank = len(range(self.rank, used, self.world_size))
        if self.drop_last:
            return per_rank // self.batch_size
        return math.ceil(per_rank / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = self._indices()
        resume, self._resume = self._resume or {}, None
        start = resume["batches"] if resume.get("epoch") == self.epoch_fn() else 0
        for i in range(start, len(self)):
            batch = indices[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.images[batch], self.labels[batch]


class ImageDataModule(L.LightningDataModule):
    """Train / val / test splits of one dataset; the model sees floats in [-1, 1].

    Validation is a seeded hold-out of `val_size` training images; test is the official test
    split (a seeded hold-out of `test_size` images for datasets without one); a size of None
    holds out 10% of the images (at most 1000), which suits folders of any size. Flips (training
    only), binarization and the scaling to [-1, 1] happen on the device, after the uint8 batch
    has been transferred.

    binarize: 'dynamic' draws fresh binary pixels for every training batch (val/test are
    binarized once, with `seed`); 'static' binarizes every split once; False keeps 8-bit pixels.
    Per-image attributes (CelebA's), when the dataset has them, are in `attributes[split]`, a
    bool tensor (N, len(attribute_names)) aligned with `splits[split]`.
    """

    # Keys evaluate.py may override on a trained run's data (+data.<key>=...): where the same
    # files are now and how they are read; the others define the data the model was trained on.
    evaluation_keys = frozenset({"eval_batch_size", "root", "cache_dir", "download", "verify",
                                 "path"})

    def __init__(self, name: Annotated[str, OneOf(DATASETS)], root: str, cache_dir: str,
                 channels: Annotated[int, OneOf((1, 3))] | None = None,
                 image_size: Annotated[int, Range(8)] = 32,
                 num_classes: Annotated[int, Range(0)] | None = None,
                 batch_size: Annotated[int, Range(1)] = 128,
                 eval_batch_size: Annotated[int, Range(1)] | None = None,
                 val_size: Annotated[int, Range(1)] | None = 5000,
                 test_size: Annotated[int, Range(1)] | None = None, flip: bool = False,
                 binarize: Annotated[str | bool, OneOf(BINARIZE_MODES)] = False,
                 dequantize: bool = False, download: bool = True, verify: bool = True,
                 seed: Annotated[int, Range(0)] = 0, **options):
        super().__init__()
        check_choice("data.binarize", binarize, BINARIZE_MODES)
        self.name, self.root, self.cache_dir = name, root, cache_dir
        self.channels, self.image_size, self.options = channels, image_size, options
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.val_size, self.test_size, self.seed = val_size, test_size, seed
        self.flip, self.binarize, self.dequantize = flip, binarize, dequantize
        self.download, self.verify = download, verify
        self.expected_num_classes = num_classes
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.classes: list[str] = []
        self.attribute_names: list[str] = []
        self.attributes: dict[str, torch.Tensor] = {}  # split -> (N, attributes) bool

    @classmethod
    def config_options(cls, data: Mapping[str, Any]) -> Mapping[str, Any]:
        """The further keys (`**options`) that data=<name> accepts, with their valid values."""
        spec = DATASETS.get(data.get("name"))
        return spec.options if spec is not None else {}

    @classmethod
    def check_config(cls, data: Mapping[str, Any]) -> None:
        """Start-up checks of the data config beyond each key's range: the dataset's own
        (data.path exists), before anything is decoded."""
        spec = dataset_spec(data["name"])
        if spec.check is not None:
            options = {k: data[k] for k in spec.options if k in data}
            spec.check(Path(str(data.get("root", "."))), options)

    def describe(self) -> str:
        path = self.options.get("path")
        return f"data={self.name} (data.path={path})" if path else f"data={self.name}"

    def _load(self):
        return load_dataset(self.name, self.root, self.cache_dir, image_size=self.image_size,
                            channels=self.channels, download=self.download, verify=self.verify,
                            **self.options)

    def prepare_data(self) -> None:
        self._load()  # download and decode once, on one process

    def _hold_outs(self, arrays) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                          torch.Generator]:
        """Indices into the official training split: the test hold-out (empty when the dataset
        has a test split), the validation hold-out and the training images; and the seeded
        generator that drew them (it binarizes the evaluation splits next)."""
        generator = torch.Generator().manual_seed(self.seed)
        n = len(arrays.splits["train"][0])
        order = torch.randperm(n, generator=generator)
        has_test = "test" in arrays.splits
        test_size = 0 if has_test else (self.test_size or auto_hold_out(n))
        val_size = self.val_size or auto_hold_out(n)
        if test_size + val_size >= n:
            sizes = f"data.val_size={val_size}"
            if not has_test:
                sizes += f" and data.test_size={test_size}"
            keys = "data.val_size" + ("" if has_test else " and data.test_size")
            example = " ".join(f"data.{k}={max(1, n // 10)}"
                               for k in ("val_size", "test_size")[: 1 if has_test else 2])
            raise GenlabError(f"{self.describe()} has {n} training images: too few for hold-outs "
                              f"of {sizes} with images left to train on. Set smaller {keys}, "
                              f"e.g. {example} (null holds out 10%, at most 1000).")
        test, rest = order[:test_size], order[test_size:]
        return test, rest[:val_size], rest[val_size:], generator

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        arrays = self._load()
        self.classes = arrays.classes
        if self.expected_num_classes is not None and self.expected_num_classes != len(self.classes):
            raise GenlabError(f"data.num_classes={self.expected_num_classes}, but {self.name} has "
                              f"{len(self.classes)} classes.")
        images, labels = arrays.splits["train"]
        test, val, train, generator = self._hold_outs(arrays)
        self.splits = {"train": (images[train], labels[train]), "val": (images[val], labels[val]),
                       "test": arrays.splits.get("test", (images[test], labels[test]))}
        self.attribute_names = arrays.attribute_names
        if arrays.attribute_names:
            every = arrays.attributes["train"]
            self.attributes = {"train": every[train], "val": every[val],
                               "test": arrays.attributes.get("test", every[test])}
        if self.binarize:
            for split, (x, y) in self.splits.items():
                if split != "train" or self.binarize == "static":
                    self.splits[split] = (binarize(x, generator), y)
        self._check_batches(len(train), world_size=1)

    def _check_batches(self, n_train: int, world_size: int) -> None:
        """Training drops the last incomplete batch, so a batch larger than the training images
        (per process) would leave no batch at all: say so instead of training on nothing."""
        per_rank = n_train // world_size
        if per_rank >= self.batch_size:
            return
        ranks = f" ({per_rank} for each of {world_size} processes)" if world_size > 1 else ""
        raise GenlabError(f"data.batch_size={self.batch_size} is more than the {n_train} "
                          f"training images of {self.describe()}{ranks} left after the "
                          "hold-outs, so there would be no training batch (the last incomplete "
                          f"batch is dropped). Set data.batch_size={max(per_rank, 1)} or lower, "
                          "or add images.")

    def reference_images(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The real images that sample quality is measured against, with their labels: the one
        definition that evaluate.py and the FID callback share. 'train' is the dataset's whole
        training split in file order, the validation hold-out included (all 50,000 CIFAR-10
        training images), less the test hold-out of a dataset without a test split; 'test' is
        the test split. Always the 8-bit images, also when the model sees binarized ones."""
        check_choice("fid.reference_split", split, REFERENCE_SPLITS)
        arrays = self._load()
        images, labels = arrays.splits["train"]
        if split == "test" and "test" in arrays.splits:
            return arrays.splits["test"]
        test, _, _, _ = self._hold_outs(arrays)
        if split == "test":
            return images[test], labels[test]
        if len(test):
            keep = torch.ones(len(images), dtype=torch.bool)
            keep[test] = False
            return images[keep], labels[keep]
        return images, labels

    @property
    def num_classes(self) -> int:
        self.setup()
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        self.setup()
        return tuple(self.splits["train"][0].shape[1:])

    @property
    def labelled(self) -> bool:
        self.setup()
        return bool((self.splits["train"][1] != UNLABELLED).all())

    def _batches(self, split: str, train: bool) -> TensorBatches:
        self.setup()
        images, labels = self.splits[split]
        if len(images) == 0:
            raise GenlabError(f"The {split} split of {self.name} is empty; set data.val_size / "
                              "data.test_size.")
        trainer = self.trainer
        if train and trainer is not None:
            self._check_batches(len(images), trainer.world_size)
        return TensorBatches(
            images, labels, self.batch_size if train else self.eval_batch_size, shuffle=train,
            drop_last=train, seed=self.seed,
            epoch_fn=(lambda: trainer.current_epoch) if trainer is not None else (lambda: 0),
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
            consumed_fn=(lambda: trainer.fit_loop.epoch_loop.batch_progress.current.processed)
            if train and trainer is not None else (lambda: 0),
        )

    def train_dataloader(self) -> TensorBatches:
        return self._batches("train", train=True)

    def val_dataloader(self) -> TensorBatches:
        return self._batches("val", train=False)

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test", train=False)

    def to_model_input(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        """uint8 batch -> model input in [-1, 1]: binarize / flip (training), then scale."""
        if train and self.binarize == "dynamic":
            images = binarize(images)
        if train and self.flip:
            images = random_flip(images)
        return to_model_range(images, dequantize=self.dequantize)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        train = self.trainer is not None and self.trainer.training
        return self.to_model_input(images, train), labels
