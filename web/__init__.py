"""The web layer: Starlette app (pages, JSON API, live relay) and its Hypercorn listener.

Talks to the actor system only through a ``SystemHandle``.
"""

from .app import create_app
from .auth import Auth, generate_password
from .errors import ApiError
from .handle import HealthReport, SystemHandle
from .server import ListenError, WebListener, serve_web

__all__ = [
    "ApiError",
    "Auth",
    "HealthReport",
    "ListenError",
    "SystemHandle",
    "WebListener",
    "create_app",
    "generate_password",
    "serve_web",
]
