"""Timing and table helpers shared by the benchmark scripts (run as
`python benchmarks/<script>.py`, so this folder is on the import path)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

DTYPES = {"32": torch.float32, "bf16": torch.bfloat16, "16": torch.float16}


def synchronize(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str, steps: int, warmup: int) -> float:
    """Seconds per call of fn: the mean over `steps` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def matmul_peak(device: str, dtype: torch.dtype, steps: int) -> float:
    """Dense matmul FLOP/s on this machine: the best of a few square sizes."""
    best = 0.0
    for n in ((2048, 4096, 8192) if str(device).startswith("cuda") else (512, 1024, 2048)):
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        seconds = timed(lambda a=a, b=b: a @ b, device, steps, warmup=2)
        best = max(best, 2 * n**3 / seconds)
    return best


def print_table(rows: list[tuple[str, str, str]]) -> None:
    """A Markdown table of (measurement, value, how) rows, values right-aligned."""
    rows = [("measurement", "value", "how"), *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for i, (label, value, note) in enumerate(rows):
        print(f"| {label:<{widths[0]}} | {value:>{widths[1]}} | {note:<{widths[2]}} |")
        if i == 0:
            print(f"|{'-' * (widths[0] + 2)}|{'-' * (widths[1] + 1)}:|{'-' * (widths[2] + 2)}|")
