"""One LightningDataModule for every dataset, over uint8 tensors held in memory."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import lightning as L
import torch

from genlab.data.arrays import UNLABELLED
from genlab.data.datasets import load_dataset
from genlab.data.transforms import binarize, random_flip, to_model_range
from genlab.errors import GenlabError, check_choice
from genlab.maths.random import seeded_generator

BINARIZE_MODES = ("dynamic", "static", False)
REFERENCE_SPLITS = ("train", "test")


class TensorBatches:
    """Batches of (uint8 images, labels) by index gathers, with no per-image work.

    Shuffling draws a permutation from `seed` and the epoch (read through `epoch_fn`), so runs
    and resumed runs see the same order. Under DDP each rank takes every `world_size`-th index
    of the permutation; for training, every rank gets the same number of batches.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 shuffle: bool = False, drop_last: bool = False, seed: int = 0,
                 epoch_fn: Callable[[], int] = lambda: 0, rank: int = 0, world_size: int = 1):
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.epoch_fn, self.rank, self.world_size = seed, epoch_fn, rank, world_size

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
        for i in range(len(self)):
            batch = indices[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.images[batch], self.labels[batch]


class ImageDataModule(L.LightningDataModule):
    """Train / val / test splits of one dataset; the model sees floats in [-1, 1].

    Validation is a seeded hold-out of `val_size` training images; test is the official test
    split (a seeded hold-out of `test_size` images for datasets without one). Flips (training
    only), binarization and the scaling to [-1, 1] happen on the device, after the uint8 batch
    has been transferred.

    binarize: 'dynamic' draws fresh binary pixels for every training batch (val/test are
    binarized once, with `seed`); 'static' binarizes every split once; False keeps 8-bit pixels.
    Per-image attributes (CelebA's), when the dataset has them, are in `attributes[split]`, a
    bool tensor (N, len(attribute_names)) aligned with `splits[split]`.
    """

    def __init__(self, name: str, root: str, cache_dir: str, channels: int | None = None,
                 image_size: int = 32, num_classes: int | None = None, batch_size: int = 128,
                 eval_batch_size: int | None = None, val_size: int = 5000,
                 test_size: int | None = None, flip: bool = False,
                 binarize: str | bool = False, dequantize: bool = False, download: bool = True,
                 verify: bool = True, seed: int = 0, **options):
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
        order = torch.randperm(len(arrays.splits["train"][0]), generator=generator)
        test_size = 0 if "test" in arrays.splits else (self.test_size or 0)
        test, rest = order[:test_size], order[test_size:]
        if not 0 <= self.val_size < len(rest):
            raise GenlabError(f"data.val_size={self.val_size} must be below the {len(rest)} "
                              f"training images of {self.name}.")
        return test, rest[: self.val_size], rest[self.val_size :], generator

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
        return TensorBatches(
            images, labels, self.batch_size if train else self.eval_batch_size, shuffle=train,
            drop_last=train, seed=self.seed,
            epoch_fn=(lambda: trainer.current_epoch) if trainer is not None else (lambda: 0),
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
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
