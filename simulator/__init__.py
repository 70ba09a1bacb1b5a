"""A faithful simulator of Linux Patch API agents (agent-api.md §9): whole fleets on loopback
addresses with real mTLS, realistic jobs and fault injection. Used by tests, the demo and
benchmarks; ships with the product so users can load-test their manager. Imports only ``ca``.
"""

from .agent import SimAgent
from .catalog import PROFILES, HostProfile, generate_profile
from .control import serve_control
from .fleet import (
    AgentListenError,
    Fleet,
    FleetSpec,
    Scenario,
    ScenarioError,
    describe,
    load_scenario,
    parse_whitelist,
)
from .model import FaultError, Faults

__all__ = [
    "PROFILES",
    "AgentListenError",
    "FaultError",
    "Faults",
    "Fleet",
    "FleetSpec",
    "HostProfile",
    "Scenario",
    "ScenarioError",
    "SimAgent",
    "describe",
    "generate_profile",
    "load_scenario",
    "parse_whitelist",
    "serve_control",
]
