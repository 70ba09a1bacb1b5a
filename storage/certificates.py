"""Certificate records (the CA package creates them; this module stores them)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from .errors import Conflict, NotFound


@dataclass(frozen=True)
class StoredCertificate:
    serial: int
    kind: str
    subject: str
    sans: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    status: str
    revoked_at: dt.datetime | None


def record_certificate(
    conn: psycopg.Connection[Any],
    *,
    serial: int,
    kind: str,
    subject: str,
    sans: Sequence[str],
    not_before: dt.datetime,
    not_after: dt.datetime,
    cert_pem: str,
    host_id: int | None = None,
) -> None:
    conn.execute(
        "INSERT INTO certificates"
        " (serial, kind, subject, sans, not_before, not_after, cert_pem, host_id)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (serial) DO NOTHING",
        (Decimal(serial), kind, subject, list(sans), not_before, not_after, cert_pem, host_id),
    )


def revoke_certificate(conn: psycopg.Connection[Any], serial: int) -> None:
    """Mark an agent certificate revoked (idempotent). The one rule for the API and the CLI:
    the manager's own certificates (root, client, web) are renewed, never revoked (``Conflict``);
    an unknown serial raises ``NotFound``."""
    row = conn.execute(
        "UPDATE certificates SET status = 'revoked', revoked_at = coalesce(revoked_at, now())"
        " WHERE serial = %s AND kind = 'agent_server' RETURNING serial",
        (Decimal(serial),),
    ).fetchone()
    if row is not None:
        return
    own = conn.execute("SELECT kind FROM certificates WHERE serial = %s", (Decimal(serial),))
    kind = own.fetchone()
    if kind is not None:
        raise Conflict(f"{serial:x} is the manager's own {kind[0]} certificate: renew it instead")
    raise NotFound(f"no certificate with serial {serial:x} was issued by this CA")


def revoked_serials(conn: psycopg.Connection[Any]) -> list[tuple[int, dt.datetime]]:
    rows = conn.execute(
        "SELECT serial, revoked_at FROM certificates WHERE status = 'revoked' ORDER BY revoked_at"
    ).fetchall()
    return [(int(serial), when) for serial, when in rows]


def list_certificates(conn: psycopg.Connection[Any]) -> list[StoredCertificate]:
    rows = conn.execute(
        "SELECT serial, kind, subject, sans, not_before, not_after, status, revoked_at"
        " FROM certificates ORDER BY created_at"
    ).fetchall()
    return [
        StoredCertificate(int(r[0]), r[1], r[2], tuple(r[3]), r[4], r[5], r[6], r[7]) for r in rows
    ]


def refused_agent_serials(conn: psycopg.Connection[Any]) -> tuple[list[int], list[int]]:
    """``(revoked, not_agent)``: serials the manager must not accept from an agent."""
    rows = conn.execute(
        "SELECT serial, status = 'revoked', kind <> 'agent_server' FROM certificates"
        " WHERE status = 'revoked' OR kind <> 'agent_server'"
    ).fetchall()
    return [int(r[0]) for r in rows if r[1]], [int(r[0]) for r in rows if r[2]]


def soonest_agent_expiry(conn: psycopg.Connection[Any]) -> dt.datetime | None:
    """When the first registered host's newest unrevoked agent certificate expires (None: no
    host has one). An older certificate replaced by a renewal does not count."""
    row = conn.execute(
        "SELECT min(newest) FROM (SELECT max(c.not_after) AS newest FROM certificates c"
        " JOIN hosts h ON h.id = c.host_id WHERE c.kind = 'agent_server'"
        " AND c.status <> 'revoked' GROUP BY c.host_id) AS per_host"
    ).fetchone()
    return row[0] if row else None


# -- enrolment requests (agent-api §7.1) --------------------------------------------------------


@dataclass(frozen=True)
class EnrolmentRow:
    id: int
    machine_id: str
    fqdn: str
    ip_address: str
    hostname: str
    os_details: dict[str, Any]
    source_address: str
    status: str  # pending / approved / denied / delivered / superseded
    group_name: str | None
    decided_by: str | None
    decided_at: dt.datetime | None
    host_id: int | None
    created_at: dt.datetime
    expires_at: dt.datetime


_ENROLMENT_COLUMNS = (
    "id, machine_id, fqdn, host(ip_address), hostname, os_details, source_address, status,"
    " group_name, decided_by, decided_at, host_id, created_at, expires_at"
)


def _enrolment(row: Sequence[Any]) -> EnrolmentRow:
    return EnrolmentRow(*row)


def create_enrolment(
    conn: psycopg.Connection[Any],
    *,
    token_sha256: str,
    machine_id: str,
    fqdn: str,
    ip_address: str,
    hostname: str,
    os_details: dict[str, Any],
    source_address: str,
    expires_at: dt.datetime,
) -> int:
    """A new pending request. A machine already enrolled (its host still registered) may ask
    again only from that host's address and under its name (a renewal: approving it issues a new
    certificate for that host). Raises ``Conflict`` when the FQDN or address belongs to another
    host, or is a name or address in one of the manager's own certificates. An earlier pending
    request of the same machine is superseded (its token answers ``notfound``)."""
    with conn.transaction():
        own = enrolled_host(conn, machine_id)
        if own is not None:
            same = conn.execute(
                "SELECT address = %s::inet AND (display_name = '' OR lower(display_name) = %s)"
                " FROM hosts WHERE id = %s",
                (ip_address, fqdn, own),
            ).fetchone()
            if same is None or not same[0]:
                raise Conflict(
                    f"machine {machine_id} is registered with another address or name;"
                    " remove that host to enrol it anew"
                )
        taken = conn.execute(
            "SELECT 1 FROM hosts WHERE (name = lower(%s) OR name = %s OR lower(display_name) = %s"
            " OR address = %s::inet) AND id IS DISTINCT FROM %s"
            " UNION ALL SELECT 1 FROM certificates WHERE kind <> 'agent_server'"
            " AND (%s = ANY(sans) OR %s = ANY(sans)) LIMIT 1",
            (fqdn, ip_address, fqdn, ip_address, own, fqdn, ip_address),
        ).fetchone()
        if taken is not None:
            raise Conflict(
                f"{fqdn} or {ip_address} is already a registered host's or the manager's"
            )
        conn.execute(
            "UPDATE enrolments SET status = 'superseded'"
            " WHERE machine_id = %s AND status = 'pending'",
            (machine_id,),
        )
        row = conn.execute(
            "INSERT INTO enrolments (token_sha256, machine_id, fqdn, ip_address, hostname,"
            " os_details, source_address, expires_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (token_sha256, machine_id, fqdn, ip_address, hostname, Jsonb(os_details),
             source_address, expires_at),
        ).fetchone()  # fmt: skip
    assert row is not None
    return int(row[0])


def enrolled_host(conn: psycopg.Connection[Any], machine_id: str) -> int | None:
    """The registered host an earlier approved enrolment of ``machine_id`` created, if any."""
    row = conn.execute(
        "SELECT h.id FROM enrolments e JOIN hosts h ON h.id = e.host_id"
        " WHERE e.machine_id = %s AND e.status IN ('approved', 'delivered')"
        " ORDER BY e.id DESC LIMIT 1",
        (machine_id,),
    ).fetchone()
    return int(row[0]) if row else None


def enrolment_by_token(conn: psycopg.Connection[Any], token_sha256: str) -> EnrolmentRow | None:
    row = conn.execute(
        f"SELECT {_ENROLMENT_COLUMNS} FROM enrolments WHERE token_sha256 = %s", (token_sha256,)
    ).fetchone()
    return _enrolment(row) if row else None


def get_enrolment(conn: psycopg.Connection[Any], enrolment_id: int) -> EnrolmentRow:
    row = conn.execute(
        f"SELECT {_ENROLMENT_COLUMNS} FROM enrolments WHERE id = %s", (enrolment_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"no enrolment request {enrolment_id}")
    return _enrolment(row)


def list_enrolments(
    conn: psycopg.Connection[Any], *, pending_only: bool = False
) -> list[EnrolmentRow]:
    """Newest first; ``pending_only``: the approval queue (unexpired pending requests)."""
    where = " WHERE status = 'pending' AND expires_at > now()" if pending_only else ""
    rows = conn.execute(
        f"SELECT {_ENROLMENT_COLUMNS} FROM enrolments{where} ORDER BY id DESC LIMIT 1000"
    ).fetchall()
    return [_enrolment(r) for r in rows]


def decide_enrolment(
    conn: psycopg.Connection[Any],
    enrolment_id: int,
    *,
    approve: bool,
    decided_by: str,
    group_name: str | None = None,
    host_id: int | None = None,
) -> EnrolmentRow:
    """Approve or deny a pending, unexpired request; ``Conflict`` if it is no longer pending."""
    row = conn.execute(
        "UPDATE enrolments SET status = %s, decided_by = %s, decided_at = now(),"
        " group_name = %s, host_id = %s"
        f" WHERE id = %s AND status = 'pending' AND expires_at > now()"
        f" RETURNING {_ENROLMENT_COLUMNS}",
        ("approved" if approve else "denied", decided_by, group_name, host_id, enrolment_id),
    ).fetchone()
    if row is None:
        current = get_enrolment(conn, enrolment_id)
        raise Conflict(f"enrolment request {enrolment_id} is {current.status}, not pending")
    return _enrolment(row)


def claim_enrolment(conn: psycopg.Connection[Any], enrolment_id: int) -> bool:
    """Mark an approved, unexpired request delivered before its certificate is issued (once:
    False if another poll claimed it first or it has expired)."""
    row = conn.execute(
        "UPDATE enrolments SET status = 'delivered'"
        " WHERE id = %s AND status = 'approved' AND expires_at > now() RETURNING id",
        (enrolment_id,),
    ).fetchone()
    return row is not None


def deliver_enrolment(conn: psycopg.Connection[Any], enrolment_id: int, serial: int) -> None:
    """Note the serial of the certificate handed over for a claimed request."""
    conn.execute(
        "UPDATE enrolments SET cert_serial = %s WHERE id = %s", (Decimal(serial), enrolment_id)
    )


def set_certificate_host(conn: psycopg.Connection[Any], serial: int, host_id: int) -> None:
    conn.execute(
        "UPDATE certificates SET host_id = %s WHERE serial = %s", (host_id, Decimal(serial))
    )


# -- repository configuration per distribution (agent-api §7.4), in the settings table -------

_REPO_PREFIX = "repo_config:"


def save_repo_config(conn: psycopg.Connection[Any], distro_id: str, value: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (%s, %s) ON CONFLICT (key)"
        " DO UPDATE SET value = excluded.value, updated_at = now()",
        (_REPO_PREFIX + distro_id, Jsonb(value)),
    )


def delete_repo_config(conn: psycopg.Connection[Any], distro_id: str) -> bool:
    row = conn.execute(
        "DELETE FROM settings WHERE key = %s RETURNING key", (_REPO_PREFIX + distro_id,)
    ).fetchone()
    return row is not None


def repo_config(conn: psycopg.Connection[Any], distro_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT value FROM settings WHERE key = %s", (_REPO_PREFIX + distro_id,)
    ).fetchone()
    return dict(row[0]) if row else None


def repo_configs(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT value FROM settings WHERE key LIKE %s ORDER BY key", (_REPO_PREFIX + "%",)
    ).fetchall()
    return [dict(r[0]) for r in rows]
