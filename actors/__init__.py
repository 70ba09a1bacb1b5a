"""The actor system: one supervised trio actor per host, coordinated by the scheduler actor.

Public names: ``Scheduler``, ``FleetHandle`` (what the web layer uses), ``FleetState``,
``HostSnapshot``, ``Phase``, ``HealthState``, the agent client and its errors, and the
PostgreSQL-backed ports (``DatabaseSink``, ``HostDirectory``, ``DatabaseDiscoveryStore``).
"""

from .agent_client import AgentClient, PatchSelection
from .agent_errors import AgentError
from .discovery import DiscoveryError, Found, ScanProgress
from .handle import FleetHandle
from .health import HealthState
from .host import HostActor
from .persist import DatabaseDiscoveryStore, DatabaseJobStore, DatabaseSink, HostDirectory
from .ports import HostTarget
from .registration import RegistrationError
from .scheduler import Scan, Scheduler
from .state import FleetState, HostSnapshot, Phase, SnapshotChange

__all__ = [
    "AgentClient",
    "AgentError",
    "DatabaseDiscoveryStore",
    "DatabaseJobStore",
    "DatabaseSink",
    "DiscoveryError",
    "FleetHandle",
    "FleetState",
    "Found",
    "HealthState",
    "HostActor",
    "HostDirectory",
    "HostSnapshot",
    "HostTarget",
    "PatchSelection",
    "Phase",
    "RegistrationError",
    "Scan",
    "ScanProgress",
    "Scheduler",
    "SnapshotChange",
]
