"""Progress of long loops inside one step (the IWAE bound's importance samples, the diffusion
bound's 1000 terms): log lines with the share done and an estimate of the time left, at most
every `interval` seconds, so a long test step never looks hung. Lightning's progress bar shows
the loops over batches; this covers the work inside a batch. No Lightning import."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("genlab")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """`update(n)` after each piece of work; a line like
    "test/nll_nats_k100: 12800 of 25600 decodes (50%), 21 s so far, about 21 s left"
    is logged every `interval` seconds (the first after `interval`), and a closing line when
    any was logged."""

    def __init__(self, description: str, total: int | None, unit: str = "",
                 interval: float = 15.0):
        self.description, self.total, self.unit = description, total, unit
        self.interval, self.done, self.logged = interval, 0, False
        self.start = self.last = time.monotonic()

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last < self.interval:
            return
        self.last, self.logged = now, True
        elapsed = now - self.start
        unit = f" {self.unit}" if self.unit else ""
        if self.total:
            share = min(self.done / self.total, 1.0)
            left = elapsed * (1 - share) / share if share > 0 else float("nan")
            log.info("%s: %d of %d%s (%.0f%%), %s so far, about %s left", self.description,
                     self.done, self.total, unit, 100 * share, _duration(elapsed),
                     _duration(left) if left == left else "?")
        else:
            log.info("%s: %d%s, %s so far", self.description, self.done, unit,
                     _duration(elapsed))

    def close(self) -> None:
        if self.logged:
            log.info("%s: done in %s", self.description,
                     _duration(time.monotonic() - self.start))
