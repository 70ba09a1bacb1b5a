"""Host-state writes that isolate failing rows, and the LISTEN connection for host changes.

Errors: ``DatabaseUnavailable`` (the server cannot be reached; retry later) and ``RowsRefused``
(the server refused the rows themselves, e.g. a transition of a host deleted meanwhile).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psycopg
from psycopg.types.json import Jsonb

from .errors import DatabaseUnavailable, StorageError
from .hosts import HostState, PatchRow, Transition, write_host_states

HOST_CHANNELS = ("hosts_changed", "host_refresh")


class RowsRefused(StorageError):
    """The database refused these rows (a constraint, not an outage): retrying cannot help."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def write_host_batch(
    conn: psycopg.Connection[Any],
    states: Sequence[tuple[int, HostState]],
    transitions: Sequence[Transition] = (),
) -> int:
    """``write_host_states`` in one transaction; a refusal is raised as ``RowsRefused``."""
    try:
        return write_host_states(conn, states, transitions)
    except psycopg.OperationalError:
        raise  # Database.run turns it into DatabaseUnavailable
    except psycopg.Error as exc:
        raise RowsRefused(_first_line(exc)) from exc


def write_patch_diff(
    conn: psycopg.Connection[Any],
    host_id: int,
    *,
    now: dt.datetime,
    upserts: Sequence[PatchRow] = (),
    resolved: Sequence[str] = (),
    package_upserts: Sequence[tuple[str, str]] | Mapping[str, str] = (),
    package_deletes: Sequence[str] = (),
) -> int:
    """``storage.write_patch_changes`` (the same rows, in one transaction) with every package
    upsert in ONE statement over one JSON object {name: version} instead of one statement per
    package: a host's first poll stores ~1,200 packages, and per-row statements were most of
    the ingest's PostgreSQL time and much of its Python time (the object is encoded in C; two
    text arrays were adapted item by item in Python). ``package_upserts`` as pairs or as a
    mapping (names are unique either way). Returns the rows written."""
    written = 0
    with conn.transaction(), conn.cursor() as cur:
        if upserts:
            cur.executemany(
                "INSERT INTO host_patches (host_id, name, current_version, available_version,"
                " severity, cve_ids, requires_reboot, first_seen_at, last_seen_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (host_id, name) WHERE resolved_at IS NULL DO UPDATE SET"
                " current_version = excluded.current_version,"
                " available_version = excluded.available_version, severity = excluded.severity,"
                " cve_ids = excluded.cve_ids, requires_reboot = excluded.requires_reboot,"
                " last_seen_at = excluded.last_seen_at",
                [
                    (host_id, p.name, p.current_version, p.available_version, p.severity,
                     list(p.cve_ids), p.requires_reboot, now, now)
                    for p in upserts
                ],
            )  # fmt: skip
            written += len(upserts)
        if resolved:
            cur.execute(
                "UPDATE host_patches SET resolved_at = %s, last_seen_at = %s"
                " WHERE host_id = %s AND resolved_at IS NULL AND name = ANY(%s)",
                (now, now, host_id, list(resolved)),
            )
            written += len(resolved)
        if package_upserts:
            versions = (
                package_upserts if isinstance(package_upserts, Mapping) else dict(package_upserts)
            )
            cur.execute(
                "INSERT INTO host_packages (host_id, name, version)"
                " SELECT %s, p.key, p.value FROM jsonb_each_text(%s) AS p"
                " ON CONFLICT (host_id, name) DO UPDATE SET version = excluded.version",
                (host_id, Jsonb(versions, dumps=_encode)),
            )
            written += len(package_upserts)
        if package_deletes:
            cur.execute(
                "DELETE FROM host_packages WHERE host_id = %s AND name = ANY(%s)",
                (host_id, list(package_deletes)),
            )
            written += len(package_deletes)
    return written


def _encode(value: object) -> str:
    return msgspec.json.encode(value).decode()


@dataclass
class EachWritten:
    """The outcome of writing a batch one host at a time."""

    written: list[int] = field(default_factory=list)  # host ids stored
    refused: list[tuple[int, str]] = field(default_factory=list)  # host ids refused, with why
    outage: str = ""  # the database went away midway: the hosts not listed were not written


def write_host_states_each(
    conn: psycopg.Connection[Any],
    states: Mapping[int, HostState],
    transitions: Mapping[int, Sequence[Transition]],
) -> EachWritten:
    """One transaction per host, so that one refused row cannot block every other host."""
    result = EachWritten()
    for host_id in sorted(states.keys() | transitions.keys()):
        state = states.get(host_id)
        try:
            write_host_states(
                conn, [] if state is None else [(host_id, state)], transitions.get(host_id, ())
            )
        except psycopg.OperationalError as exc:
            result.outage = _first_line(exc)
            return result
        except psycopg.Error as exc:
            result.refused.append((host_id, _first_line(exc)))
            continue
        result.written.append(host_id)
    return result


class HostChangeListener:
    """A dedicated autocommit connection LISTENing on ``hosts_changed`` and ``host_refresh``.
    Blocking: call its methods from a worker thread."""

    def __init__(self, conninfo: str) -> None:
        try:
            self._conn = psycopg.connect(conninfo, autocommit=True)
            for channel in HOST_CHANNELS:
                self._conn.execute(f"LISTEN {channel}")
        except psycopg.Error as exc:
            raise DatabaseUnavailable(
                f"cannot LISTEN for host changes: {_first_line(exc)}"
            ) from exc

    def wait(self, timeout: float = 1.0) -> list[tuple[str, str]]:
        """Notifications (channel, payload) that arrive within ``timeout`` seconds (at most one
        batch)."""
        try:
            return [
                (n.channel, n.payload) for n in self._conn.notifies(timeout=timeout, stop_after=1)
            ]
        except psycopg.Error as exc:
            raise DatabaseUnavailable(f"host change notifications interrupted: {exc}") from exc

    def close(self) -> None:
        self._conn.close()
