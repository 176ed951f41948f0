"""Training images/s that ImageDataModule delivers: index-gathered uint8 batches, random flips
and scaling to [-1, 1], all on the CPU (on a GPU run the flip and scaling happen on the device,
so this is the worst case).

    python benchmarks/datamodule_throughput.py [--batch-size 128] [--epochs 3]

Uses CIFAR-10-sized random images (50,000 x 3 x 32 x 32 uint8) so it needs no download.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from genlab.data import ImageDataModule


class InMemory(ImageDataModule):
    """The datamodule over given tensors instead of a dataset on disk."""

    def __init__(self, images: torch.Tensor, **kwargs):
        super().__init__(name="random", root="", cache_dir="", **kwargs)
        self.random_images = images

    def _load(self):
        from genlab.data.arrays import DatasetArrays

        labels = torch.zeros(len(self.random_images), dtype=torch.long)
        return DatasetArrays({"train": (self.random_images, labels),
                              "test": (self.random_images[:100], labels[:100])}, ["x"])


def measure(dm: ImageDataModule, epochs: int) -> float:
    loader = dm.train_dataloader()
    for images, _ in loader:  # warm-up epoch, not timed
        dm.to_model_input(images, train=True)
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for images, _ in loader:
            x = dm.to_model_input(images, train=True)
            count += len(x)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    images = torch.randint(0, 256, (50_000, 3, 32, 32), dtype=torch.uint8)
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"{'setting':<34} {'batch':>6} {'images/s':>12}")
    settings = {"gather + scale": {}, "gather + flip + scale": {"flip": True},
                "gather + flip + dequantize": {"flip": True, "dequantize": True},
                "gather + dynamic binarize": {"binarize": "dynamic"}}
    for name, options in settings.items():
        dm = InMemory(images, batch_size=args.batch_size, val_size=1000, **options)
        dm.setup()
        print(f"{name:<34} {args.batch_size:>6} {measure(dm, args.epochs):>12,.0f}")


if __name__ == "__main__":
    main()
