"""CA errors: ``CAError`` (root) ├── ``CANotInitialised`` (no CA in the directory yet)."""

from __future__ import annotations


class CAError(Exception):
    """Root of the errors raised by the ca package."""


class CANotInitialised(CAError):
    """The CA directory holds no root yet."""
