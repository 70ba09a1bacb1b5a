"""What the web layer needs from the rest of the system, as a Protocol.

The composition root passes one object implementing ``SystemHandle``; web never imports the
actor system.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class HealthReport:
    """Liveness of the process and its two vital parts (R-9.4)."""

    ok: bool
    database: str  # "ok" | "down"
    scheduler: str  # "ok" | "stalled" | "stopped"
    details: dict[str, Any] = field(default_factory=dict)


class SystemHandle(Protocol):
    async def health(self) -> HealthReport:
        """Check the database and the scheduler heartbeat; never raises."""
        ...
