"""Datasets as uint8 tensors, and the datamodule that serves them."""

from genlab.data.datamodule import ImageDataModule, TensorBatches
from genlab.data.datasets import DATASETS, load_dataset, load_split

__all__ = ["DATASETS", "ImageDataModule", "TensorBatches", "load_dataset", "load_split"]
