"""`patch-manager simulate`: a fleet of simulated agents until SIGINT/SIGTERM; with ``--enrol URL``
the fleet's agents enrol themselves with a running manager first (issue 14)."""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import logging
import signal
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
import trio

from ca import CertificateAuthority
from simulator import Fleet, FleetSpec, describe, load_scenario, parse_whitelist, serve_control
from simulator.enrol import EnrolmentFailed, enrol_and_serve

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


LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


def loopback_url(url: str) -> str:
    """The manager's address for ``--enrol``: https on a 127.0.0.0/8 address or localhost
    (the simulated agents live on loopback, so the manager that polls them does too)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host) in LOOPBACK
    except ValueError:
        loopback = False
    if parts.scheme != "https" or not loopback:
        raise EnrolmentFailed(
            f"--enrol {url!r}: give the manager as https://127.x.y.z:PORT (loopback only)"
        )
    return url.rstrip("/")


async def serve_enrolled(
    url: str,
    spec: FleetSpec,
    directory: Path,
    *,
    poll_interval_s: float = 5.0,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Every agent of ``spec`` (one per address) enrols with the manager at ``url``, waits for
    approval and serves with the files it received (``directory``/ADDRESS) until cancelled;
    ``task_status`` gets the addresses once all of them serve."""
    base = loopback_url(url)
    if spec.port == 0:
        raise EnrolmentFailed("--enrol needs one address per agent (not --port 0)")
    addresses = spec.address_list()
    if not addresses:
        raise EnrolmentFailed("--enrol needs at least one agent (--count)")
    serving: list[str] = []
    all_serving = trio.Event()

    async def one(address: str) -> None:  # all enrol at once: the requests queue up together
        await nursery.start(
            partial(enrol_and_serve, base, directory / address, address=address, port=spec.port,
                    time_scale=spec.time_scale, poll_interval_s=poll_interval_s)
        )  # fmt: skip
        serving.append(address)
        if len(serving) == len(addresses):
            all_serving.set()

    async with trio.open_nursery() as nursery:
        for address in addresses:
            nursery.start_soon(one, address)
        await all_serving.wait()
        task_status.started(addresses)


async def run_enrolled(args: argparse.Namespace, data_dir: Path) -> None:
    """``simulate --enrol URL``: every agent of the fleet sends its enrolment request, each
    serves once approved; until SIGINT/SIGTERM."""
    spec, _, _ = build_spec(args)
    base = loopback_url(args.enrol)
    try:
        await _run_enrolled(spec, base, data_dir)
    except BaseExceptionGroup as group:
        failure = single(group)
        if isinstance(failure, EnrolmentFailed | httpx2.HTTPError):
            raise EnrolmentFailed(f"enrolment with {base} failed: {failure}") from None
        raise


def single(exc: BaseException) -> BaseException:
    """The one failure inside nested exception groups of one member each (or ``exc``)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def _run_enrolled(spec: FleetSpec, base: str, data_dir: Path) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            print(f"enrolling {spec.count} agents with {base}; approve them there", flush=True)
            addresses = await nursery.start(
                partial(serve_enrolled, base, spec, data_dir / "enrolled")
            )
            print(f"all {len(addresses)} agents approved and serving", flush=True)
            async for signum in signals:
                log.info("%s: stopping the simulator", signal.Signals(signum).name)
                break
            nursery.cancel_scope.cancel()
