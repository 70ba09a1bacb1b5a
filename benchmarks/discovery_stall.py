"""How long the event loop stalls while a discovery scan runs (everything else in the process,
host actors and web requests, waits for as long as the loop is stalled).

    .venv/bin/python benchmarks/discovery_stall.py 127.201.0.0/18

Scans a loopback range where no agent listens (every connect is refused at once, so the probes
themselves cost almost nothing and the scan's own overhead shows), with the address policy on
(127.0.0.0/8 permitted, one "own" address inside the range so every address is checked).
A 5 ms ticker records the longest gap between its wake-ups.
"""

from __future__ import annotations

import argparse
import ipaddress
import ssl
import time

import trio

from actors.address_policy import AddressPolicy, parse_networks
from actors.discovery import addresses, parse_range, scan

TICK = 0.005


async def main(cidr: str, concurrency: int) -> None:
    own = ipaddress.IPv4Network(cidr).network_address + 1
    policy = AddressPolicy(
        agent_port=12443,
        allow_networks=parse_networks(["127.0.0.0/8"]),
        own_addresses=frozenset({own}),
    )
    worst = 0.0
    done = trio.Event()

    async def ticker() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not done.is_set():
            await trio.sleep(TICK)
            now = time.perf_counter()
            worst = max(worst, now - last - TICK)
            last = now

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await trio.sleep(0.05)
        started = time.perf_counter()
        network = parse_range(cidr, min_prefix_len=16, policy=policy)
        targets = await trio.to_thread.run_sync(addresses, network, policy)  # as the scheduler
        await scan(network, port=12443, ssl_context=ssl.create_default_context(),
                   concurrency=concurrency, connect_timeout=1.0, on_progress=lambda p: None,
                   on_found=lambda f: None, policy=policy, targets=targets)  # fmt: skip
        took = time.perf_counter() - started
        done.set()
    print(f"{cidr}: {len(targets)} addresses scanned in {took:.2f} s; "
          f"longest event-loop stall {worst * 1000:.0f} ms")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cidr", nargs="?", default="127.201.0.0/18")
    parser.add_argument("--concurrency", type=int, default=512)
    args = parser.parse_args()
    trio.run(main, args.cidr, args.concurrency)
