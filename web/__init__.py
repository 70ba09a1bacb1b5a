"""The web layer: Starlette app (pages, JSON API, live relay) and its Hypercorn listener.

Talks to the actor system only through a ``SystemHandle``.
"""

from .app import create_app
from .auth import Auth, generate_password
from .errors import ApiError
from .handle import (
    AlreadyExists,
    HandleError,
    HealthReport,
    InvalidInput,
    Missing,
    SystemHandle,
    TooBusy,
)
from .server import ListenError, WebListener, serve_web

__all__ = [
    "AlreadyExists",
    "ApiError",
    "Auth",
    "HandleError",
    "HealthReport",
    "InvalidInput",
    "ListenError",
    "Missing",
    "SystemHandle",
    "TooBusy",
    "WebListener",
    "create_app",
    "generate_password",
    "serve_web",
]
