"""Host-state writes that isolate failing rows, and the LISTEN connection for host changes.

Errors: ``DatabaseUnavailable`` (the server cannot be reached; retry later) and ``RowsRefused``
(the server refused the rows themselves, e.g. a transition of a host deleted meanwhile).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from .errors import DatabaseUnavailable, StorageError
from .hosts import HostState, Transition, write_host_states

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
