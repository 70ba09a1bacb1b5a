"""How long the simulator takes to serve N agents, and how much memory it holds.

    .venv/bin/python benchmarks/simulator_start.py --count 2500

Runs twice: cold (every agent certificate issued) and warm (certificates reused from the
cache). Afterwards one health request per agent checks that every agent really answers.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import trio

from actors.agent_client import AgentClient
from ca import CertificateAuthority, agent_client_context
from simulator import Fleet, FleetSpec


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def start(ca_dir: Path, state: Path, count: int, verify: bool) -> tuple[float, float]:
    before = rss_mb()
    fleet = Fleet(ca_dir, state, FleetSpec(count=count, base_address="127.200.0.1"))
    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        await nursery.start(fleet.run)
        elapsed = time.perf_counter() - t0
        used = rss_mb() - before
        if verify:
            ca = CertificateAuthority(ca_dir)
            ctx = agent_client_context(ca.root_cert_path, ca.client_cert_path, ca.client_key_path)
            limiter = trio.CapacityLimiter(200)
            ok = 0

            async def check(agent: object) -> None:
                nonlocal ok
                async with limiter, AgentClient("b", agent.address, ctx) as client:  # type: ignore[attr-defined]
                    await client.health()
                    ok += 1

            t1 = time.perf_counter()
            async with trio.open_nursery() as checks:
                for agent in fleet.agents:
                    checks.start_soon(check, agent)
            print(f"  health answered by {ok}/{count} agents in {time.perf_counter() - t1:.1f} s")
        nursery.cancel_scope.cancel()
    return elapsed, used


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2500)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pm-bench-"))
    try:
        CertificateAuthority.init(root / "ca")
        cold, cold_mb = trio.run(start, root / "ca", root / "sim", args.count, False)
        print(f"cold start ({args.count} agents, certificates issued): {cold:.1f} s, "
              f"+{cold_mb:.0f} MB RSS")  # fmt: skip
        warm, warm_mb = trio.run(start, root / "ca", root / "sim", args.count, True)
        print(f"warm start (certificates cached): {warm:.1f} s, +{warm_mb:.0f} MB RSS")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of the process: {peak:.0f} MB")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
