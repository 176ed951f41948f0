"""Images/s of the FID Inception feature extractor (uint8 32x32 images in, 2048-d features
out: TF1 resize to 299, the network, the pool), by device, dtype and batch size.

    python benchmarks/inception_throughput.py [--weights FILE] [--batch-sizes 16 50 100]
        [--devices cpu cuda] [--dtypes fp32 bf16] [--images 200] [--threads N]

The weights come from --weights, else $GENLAB_INCEPTION_WEIGHTS, else the torch hub cache.
Random images: the work does not depend on the pixel values. Each setting is warmed up with one
batch and then timed over --images images (at least two batches).
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from genlab.metrics.inception import FeatureExtractor


def measure(extractor: FeatureExtractor, batch_size: int, images: int) -> float:
    batch = torch.randint(0, 256, (batch_size, 3, 32, 32), dtype=torch.uint8)
    extractor.features(batch)  # warm-up: allocator, oneDNN / cuDNN kernel choice
    batches = max(2, -(-images // batch_size))
    if extractor.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(batches):
        extractor.features(batch)  # returns CPU tensors, so each call waits for the GPU
    return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 50, 100])
    parser.add_argument("--devices", nargs="+",
                        default=["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--images", type=int, default=200, help="images timed per setting")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    print("| device | dtype | batch | images/s |\n| --- | --- | ---: | ---: |")
    for device in args.devices:
        for dtype in args.dtypes:
            extractor = FeatureExtractor(args.weights, device=device, bf16=dtype == "bf16")
            for batch_size in args.batch_sizes:
                rate = measure(extractor, batch_size, args.images)
                print(f"| {device} | {dtype} | {batch_size} | {rate:.1f} |", flush=True)


if __name__ == "__main__":
    main()
