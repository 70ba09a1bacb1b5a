"""The agent's per-IP rate limiter (actix-governor, GCRA), agent-api.md §1.9. Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Tier:
    """``per_minute`` sustained with bursts of ``burst``; ``check(now)`` → wait in seconds."""

    per_minute: int
    burst: int
    _tat: dict[str, float] = field(default_factory=dict)  # theoretical arrival time per key

    def check(self, key: str, now: float) -> float:
        """0 if the request may pass (and is counted), else seconds until it would."""
        interval = 60.0 / self.per_minute
        tolerance = interval * (self.burst - 1)
        tat = max(self._tat.get(key, now), now)
        if tat - now > tolerance:
            return tat - now - tolerance
        self._tat[key] = tat + interval
        return 0.0


@dataclass
class RateLimiter:
    read: Tier
    destructive: Tier
    enabled: bool = True

    EXEMPT = frozenset({"/health", "/api/v1/system/info"})

    @classmethod
    def default(cls) -> RateLimiter:
        return cls(read=Tier(120, 30), destructive=Tier(20, 10))

    def check(self, method: str, path: str, peer: str, now: float) -> int | None:
        """None if allowed, else the ``Retry-After`` seconds (at least 1)."""
        if not self.enabled or path in self.EXEMPT:
            return None
        tier = self.destructive if method in ("POST", "PUT", "DELETE") else self.read
        wait = tier.check(peer, now)
        return None if wait <= 0 else max(1, math.ceil(wait))
