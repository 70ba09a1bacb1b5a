"""Default locations: a checkout keeps everything beside the code, an installation uses FHS."""

from __future__ import annotations

from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent


def in_checkout() -> bool:
    return (_CHECKOUT / "pyproject.toml").exists() and (_CHECKOUT / "conf").is_dir()


def default_conf_dir() -> Path:
    return _CHECKOUT / "conf" if in_checkout() else Path("/etc/patch-manager")


def default_data_dir() -> Path:
    return _CHECKOUT / "var" if in_checkout() else Path("/var/lib/patch-manager")
