"""Pure timing maths: retry delays with jitter, per-host phase offsets, drift-free deadlines."""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence

MAX_DELAY_S = 1800.0  # delays are capped at 30 minutes


def retry_delay(
    attempt: int,
    backoff_s: Sequence[float],
    jitter_ratio: float,
    rng: random.Random,
    retry_after: float | None = None,
) -> float | None:
    """Delay before retry number ``attempt`` (0-based), or None when the retries are used up.

    The delay is ``backoff_s[attempt]`` spread by ±``jitter_ratio``, at least the agent's
    ``Retry-After``, and never more than 30 minutes.
    """
    if attempt >= len(backoff_s):
        return None
    delay = backoff_s[attempt] * (1.0 + rng.uniform(-jitter_ratio, jitter_ratio))
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(max(delay, 0.0), MAX_DELAY_S)


def phase_offset(key: str, interval: float) -> float:
    """A stable offset in [0, interval) per host, so a fleet's polls spread evenly."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * interval


def next_deadline(anchor: float, interval: float, now: float) -> float:
    """The first ``anchor + k * interval`` strictly after ``now`` (k ≥ 0): drift-free cadence
    that skips, rather than bunches up, the ticks missed while a poll was slow."""
    if now < anchor:
        return anchor
    return anchor + (math.floor((now - anchor) / interval) + 1) * interval
