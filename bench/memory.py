"""Peak resident memory of this process while a block runs, sampled by a background thread (psutil)."""

from __future__ import annotations

import threading

import psutil


class PeakRSS:
    """``with PeakRSS() as m: ...`` then ``m.delta_mb``: peak RSS during the block minus RSS before it.

    Sampling (every ``interval_s``) can miss a spike shorter than the interval; runtimes release the GIL
    while they compute, so the sampler keeps running during inference.
    """

    def __init__(self, interval_s: float = 0.005):
        self.interval_s = interval_s
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self.before = self.peak = 0

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __enter__(self):
        self.before = self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def delta_mb(self) -> float:
        return (self.peak - self.before) / 2**20

    @property
    def before_mb(self) -> float:
        return self.before / 2**20
