"""Exponential backoff with jitter, for retrying a coordinator that is down or restarting."""

from __future__ import annotations

import random


class Backoff:
    """Delays double from `initial` up to `cap`; each is drawn from its upper half so a fleet
    of workers that lost the same coordinator does not return in lockstep."""

    def __init__(self, initial: float = 0.2, cap: float = 10.0, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.cap = cap
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.initial * 2.0 ** min(self.failures, 64))
        self.failures += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.failures = 0
