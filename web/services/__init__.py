"""The service layer: pages, the JSON API and (later) the relay call these functions, so that
every rule exists once. One module per domain; SQL stays in ``storage``; the actor system is
reached through the ``SystemHandle``. Errors are ``web.handle`` errors (``InvalidInput``,
``AlreadyExists``, ``TooBusy``, ``Missing``)."""

from . import discovery, groups, hosts, jobs, windows
from .base import Principal, System, concurrently, principal

__all__ = [
    "Principal",
    "System",
    "concurrently",
    "discovery",
    "groups",
    "hosts",
    "jobs",
    "principal",
    "windows",
]
