"""Default locations: a checkout keeps everything beside the code, an installation uses FHS.

A server started on the default data directory (``serve`` or ``demo`` without ``--data-dir``)
announces itself in ``run_file()`` (pid, data directory, URL) for as long as it runs, so that the
other commands, run without ``--data-dir``, use the running server's data directory (the demo's
``DATA_DIR/demo`` included) instead of opening an empty database beside it.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent
DATA_DIR_ENV = "PATCH_MANAGER_DATA_DIR"  # overrides the default data directory
RUN_FILE_NAME = "running-server.json"


def in_checkout() -> bool:
    return (_CHECKOUT / "pyproject.toml").exists() and (_CHECKOUT / "conf").is_dir()


def default_conf_dir() -> Path:
    return _CHECKOUT / "conf" if in_checkout() else Path("/etc/patch-manager")


def default_data_dir() -> Path:
    if value := os.environ.get(DATA_DIR_ENV, ""):
        return Path(value)
    return _CHECKOUT / "var" if in_checkout() else Path("/var/lib/patch-manager")


def run_file() -> Path:
    """Where a server on the default data directory announces itself."""
    return default_data_dir() / RUN_FILE_NAME


@dataclass(frozen=True)
class RunningServer:
    pid: int
    data_dir: Path
    url: str


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def announce(data_dir: Path, url: str) -> Path | None:
    """Write ``run_file()`` for this process (atomically); ``None`` when it cannot be written
    (e.g. another user's installation directory: the announcement is a convenience)."""
    path = run_file()
    record = {"pid": os.getpid(), "data_dir": str(data_dir.resolve()), "url": url}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{RUN_FILE_NAME}.{os.getpid()}")
        tmp.write_text(json.dumps(record) + "\n")
        tmp.replace(path)
    except OSError:
        return None
    return path


def withdraw() -> None:
    """Remove ``run_file()`` if it still names this process."""
    found = running_server(check_alive=False)
    if found is not None and found.pid == os.getpid():
        with contextlib.suppress(OSError):
            run_file().unlink()


def running_server(*, check_alive: bool = True) -> RunningServer | None:
    """The server announced in ``run_file()``, if it still runs and its data directory exists
    (a stale file of a killed server is ignored)."""
    try:
        record = json.loads(run_file().read_text())
        found = RunningServer(int(record["pid"]), Path(record["data_dir"]), str(record["url"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if check_alive and not (_alive(found.pid) and found.data_dir.is_dir()):
        return None
    return found


def database_data_dir(explicit: Path | None, *, embedded: bool = True) -> tuple[Path, str]:
    """The data directory a command that needs the database uses, and one line to tell the user
    which one it is and why ("" when ``--data-dir`` was given). ``embedded``: the command would
    create the embedded cluster there (false for an external server or a command that opens no
    database)."""
    if explicit is not None:
        return explicit, ""
    server = running_server()
    if server is not None:
        where = f"running at {server.url}" if server.url else "starting"
        return server.data_dir, (
            f"using the data directory of the server {where} (pid {server.pid}):"
            f" {server.data_dir} (--data-dir chooses another)"
        )
    default = default_data_dir()
    if not embedded:
        return default, ""
    if not (default / "postgres").exists():
        return default, (
            f"no server is running on the default data directory and {default} holds no"
            " database yet: creating one there (--data-dir chooses another, e.g. DATA_DIR/demo"
            " of a stopped demo)"
        )
    return default, (
        f"using the default data directory {default}: no server announced there (a server"
        " started with --data-dir is not; pass the same --data-dir to reach it)"
    )


def bootstrap_marker(data_dir: Path) -> Path:
    """Exists from the creation of the bootstrap ``admin`` account until its one-time password
    has been shown (``serve.bootstrap_admin``)."""
    return data_dir / "admin-password-not-shown"
