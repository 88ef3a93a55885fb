"""Steady progress lines (count, rate, ETA) for long steps."""

from __future__ import annotations

import logging
import time


class Progress:
    """Logs `done/total`, items/s, MB/s and ETA at most every `interval` seconds, and once at the end."""

    def __init__(self, log: logging.Logger, what: str, total: int, interval: float = 10.0) -> None:
        self.log, self.what, self.total, self.interval = log, what, total, interval
        self.done = 0
        self.bytes = 0
        self.started = self._last = time.monotonic()

    def advance(self, count: int = 1, nbytes: int = 0) -> None:
        self.done += count
        self.bytes += nbytes
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self.log.info("%s", self.line())

    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    def line(self) -> str:
        elapsed = self.elapsed()
        rate = self.done / elapsed
        text = f"{self.what}: {self.done}/{self.total} ({rate:.0f}/s"
        if self.bytes:
            text += f", {self.bytes / elapsed / 1e6:.1f} MB/s"
        if 0 < self.done < self.total and rate > 0:
            text += f", ETA {(self.total - self.done) / rate:.0f}s"
        return text + f", {elapsed:.1f}s elapsed)"

    def finish(self) -> None:
        self.log.info("%s", self.line())
