"""`patch-manager simulate`: a fleet of simulated agents until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
from pathlib import Path

import trio

from ca import CertificateAuthority
from simulator import Fleet, FleetSpec, describe, load_scenario, parse_whitelist, serve_control

log = logging.getLogger(__name__)


def build_spec(args: argparse.Namespace) -> tuple[FleetSpec, dict[str, object], dict[str, dict]]:  # type: ignore[type-arg]
    spec, fleet_faults, agent_faults = FleetSpec(), {}, {}
    if args.scenario is not None:
        scenario = load_scenario(args.scenario)
        spec, fleet_faults, agent_faults = (
            scenario.spec, scenario.fleet_faults, scenario.agent_faults,
        )  # fmt: skip
    overrides = {
        "count": args.count, "seed": args.seed, "base_address": args.base_address,
        "port": args.port, "time_scale": args.time_scale, "profile": args.profile,
    }  # fmt: skip
    spec = dataclasses.replace(spec, **{k: v for k, v in overrides.items() if v is not None})
    if args.whitelist is not None:
        fleet_faults = {**fleet_faults, "whitelist": parse_whitelist(args.whitelist.read_text())}
    return spec, fleet_faults, agent_faults


async def run_simulator(args: argparse.Namespace, data_dir: Path) -> None:
    spec, fleet_faults, agent_faults = build_spec(args)
    ca_dir = data_dir / "ca"
    await trio.to_thread.run_sync(lambda: CertificateAuthority.init(ca_dir))
    fleet = Fleet(ca_dir, data_dir / "simulator", spec)
    socket_path = args.control_socket or data_dir / "simulator.sock"
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(fleet.run)
            if fleet_faults:
                fleet.apply_faults("all", dict(fleet_faults))
            for target, values in agent_faults.items():
                fleet.apply_faults(target, dict(values))
            await nursery.start(serve_control, fleet, socket_path)
            for line in describe(fleet):
                print(line, flush=True)
            print(f"control socket: {socket_path}", flush=True)
            async for signum in signals:
                log.info("%s: stopping the simulator", signal.Signals(signum).name)
                break
            nursery.cancel_scope.cancel()
