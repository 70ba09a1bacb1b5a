"""The actor system: one supervised trio actor per host, coordinated by the scheduler actor.

Public names: ``Scheduler``, ``FleetHandle`` (what the web layer uses), ``FleetState``,
``HostSnapshot``, ``Phase``, ``HealthState``, the agent client and its errors, and the
PostgreSQL-backed ports (``DatabaseSink``, ``HostDirectory``, ``DatabaseDiscoveryStore``).
"""

from .address_policy import AddressPolicy
from .agent_client import AgentClient, ConnectionRamp, PatchSelection
from .agent_errors import AgentError
from .discovery import DiscoveryBusy, DiscoveryError, Found, ScanProgress, ScanReport
from .handle import FleetHandle
from .health import HealthState
from .host import HostActor
from .persist import DatabaseDiscoveryStore, DatabaseJobStore, DatabaseSink, HostDirectory
from .ports import HostTarget
from .registration import AddressRefused, HostAlreadyRegistered, RegistrationError
from .scheduler import Scan, Scheduler
from .state import FleetState, HostSnapshot, Phase, SnapshotChange

__all__ = [
    "AddressPolicy",
    "AddressRefused",
    "AgentClient",
    "AgentError",
    "ConnectionRamp",
    "DatabaseDiscoveryStore",
    "DatabaseJobStore",
    "DatabaseSink",
    "DiscoveryBusy",
    "DiscoveryError",
    "FleetHandle",
    "FleetState",
    "Found",
    "HealthState",
    "HostActor",
    "HostAlreadyRegistered",
    "HostDirectory",
    "HostSnapshot",
    "HostTarget",
    "PatchSelection",
    "Phase",
    "RegistrationError",
    "Scan",
    "ScanProgress",
    "ScanReport",
    "Scheduler",
    "SnapshotChange",
]
