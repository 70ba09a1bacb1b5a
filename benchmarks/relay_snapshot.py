"""The relay's first snapshot of a large fleet: event-loop stall and reuse (issue 17).

    .venv/bin/python benchmarks/relay_snapshot.py --hosts 10000 --sockets 5

Builds ``--hosts`` host states shaped like a polled fleet's (every field set) and sends the
snapshot through the real ``web.relay.Relay`` to ``--sockets`` sockets that see every host, one
after another, while a 1 ms ticker measures the longest gap of the event loop. The sockets here
are in-memory (they count bytes), so the figures are the relay's own: serialising and paging.
"Before" builds the single message the relay sent before paging (every host serialised and
joined at once, per socket).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from typing import Any, cast

import trio

from actors import HealthState, HostSnapshot, Phase
from web.relay import Relay, _Subscriber
from web.serialize import to_json


def fleet(count: int) -> list[HostSnapshot]:
    now = dt.datetime.now(dt.UTC)
    return [
        HostSnapshot(
            host_id,
            f"web{host_id:05d}.example.internal",
            phase=Phase.IDLE,
            health=HealthState.HEALTHY,
            health_reason="all checks passed",
            last_success=now,
            next_health_poll=now,
            next_patch_poll=now,
            pending_patches=host_id % 150,
            security_patches=host_id % 17,
            agent_version="1.4.2",
            os="Ubuntu 22.04.4 LTS",
            hostname=f"web{host_id:05d}",
            uptime_seconds=86400 + host_id,
            health_as_of=now,
            patches_as_of=now,
            stale_after=now,
            health_since=now,
        )  # fmt: skip
        for host_id in range(1, count + 1)
    ]


class Handle:
    """What the relay asks of the actor system for a snapshot: the host states."""

    def __init__(self, snapshots: list[HostSnapshot]) -> None:
        self._snapshots = snapshots

    def snapshots(self) -> list[HostSnapshot]:
        return self._snapshots


class Socket:
    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0

    async def send_text(self, text: str) -> None:
        self.messages += 1
        self.bytes += len(text)
        await trio.lowlevel.checkpoint()


async def longest_gap(done: trio.Event, gaps: list[float]) -> None:
    last = time.perf_counter()
    while not done.is_set():
        await trio.sleep(0.001)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


async def run(hosts: int, sockets: int) -> None:
    states = fleet(hosts)
    relay = Relay(cast(Any, Handle(states)), cast(Any, None))
    for label, paged in (("before: one message per socket", False), ("paged relay", True)):
        done, gaps = trio.Event(), list[float]()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(longest_gap, done, gaps)
            await trio.sleep(0.01)
            for n in range(sockets):
                socket = Socket()
                t0, serialised = time.perf_counter(), relay.serialised
                if paged:
                    sub = _Subscriber(cast(Any, None), "", 0)
                    await relay._send_snapshot(cast(Any, socket), sub)
                else:
                    hosts_json = ", ".join(json.dumps(to_json(s)) for s in states)
                    await socket.send_text('{"type": "snapshot", "hosts": [' + hosts_json + "]}")
                took = (time.perf_counter() - t0) * 1000
                print(f"{label}, socket {n + 1}: {took:7.1f} ms, {socket.messages} message(s), "
                      f"{socket.bytes / 1e6:.1f} MB, host states serialised "
                      f"{relay.serialised - serialised if paged else hosts}")  # fmt: skip
            done.set()
        print(f"{label}: longest event-loop gap {max(gaps) * 1000:.1f} ms "
              f"(1 ms ticker, {len(gaps)} ticks)")  # fmt: skip
    print(f"pages sent {relay.snapshot_pages}, reused {relay.pages_reused}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--sockets", type=int, default=5)
    args = parser.parse_args()
    trio.run(run, args.hosts, args.sockets)


if __name__ == "__main__":
    main()
