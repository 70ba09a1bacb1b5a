"""The notification sender against a real SMTP server (aiosmtpd on loopback): a failed job's
e-mail names its failed hosts; refusals and a hung server are retried with backoff while
nobody else waits; STARTTLS with our CA and a login; digests; scoping by group; the bound."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.notifier import MailError, Notifier, backoff_delay
from simulator import Fleet
from storage import (
    Database,
    JobSpec,
    create_user,
    get_host,
    insert_host,
    list_groups,
    save_window,
)
from storage.notifications import (
    NotificationSettings,
    enqueue_event,
    get_notification_settings,
    save_notification_settings,
    save_subscription,
)
from storage.outbox import outbox_stats, recent_messages

from ..conftest import Pki
from .conftest import Manager, register
from .smtp_server import hung_server, smtp_server
from .test_jobs import finished, healthy

pytestmark = pytest.mark.timeout(60)
NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


def plain(port: int, **changes: Any) -> NotificationSettings:
    values: dict[str, Any] = {
        "enabled": True, "smtp_host": "127.0.0.1", "smtp_port": port, "security": "none",
        "from_address": "pm@example.test", "timeout_s": 5,
    }  # fmt: skip
    return NotificationSettings(**(values | changes))


async def configure(db: Database, settings: NotificationSettings) -> None:
    await db.run(save_notification_settings, settings)


async def subscribe(
    db: Database, username: str, role: str = "admin", groups: tuple[str, ...] = (), **kw: Any
) -> int:
    events = kw.get("events", ("job_failed", "job_finished", "host_unreachable"))

    def add(conn: Any) -> int:
        ids = tuple(g.id for g in list_groups(conn) if g.name in groups)
        user = create_user(conn, username, "x", role, group_ids=ids)
        save_subscription(conn, user.id, f"{username}@example.test", events)
        return user.id

    return int(await db.run(add))


def notifier(db: Database, context: ssl.SSLContext | None = None, **kw: Any) -> Notifier:
    return Notifier(
        db, sealer=None, ssl_context=context or ssl.create_default_context(), clock=lambda: NOW,
        **kw,
    )  # fmt: skip


async def add_host(db: Database, name: str, groups: tuple[str, ...] = ()) -> int:
    row = await db.run(lambda c: insert_host(c, name=name, address=None, groups=list(groups)))
    return int(row.id)


def test_backoff_doubles_from_thirty_seconds_up_to_an_hour() -> None:
    assert [backoff_delay(n) for n in (1, 2, 3, 4)] == [30.0, 60.0, 120.0, 240.0]
    assert backoff_delay(20) == 3600.0


async def test_a_failed_jobs_email_arrives_naming_its_failed_hosts(
    manager: Manager, start_fleet: Any, pki: Pki, tmp_path: Path
) -> None:
    fleet: Fleet = await start_fleet(2, time_scale=0.002)
    ids = await register(manager, fleet)
    await healthy(manager, 2)
    with smtp_server(pki, tmp_path) as server:
        await configure(manager.db, plain(server.port))
        await subscribe(manager.db, "ops-lead")
        job_id = await manager.handle.create_job(
            JobSpec(kind="patch", schedule="now", selection="list", packages=("bad name",)),
            sorted(ids.values()),
        )
        assert (await finished(manager, job_id, timeout=30)).status == "failed"
        assert await notifier(manager.db).cycle() == 1
    [mail] = server.recorder.messages
    assert mail["To"] == "ops-lead@example.test"
    assert mail["Subject"].startswith(f"[patch-manager] Job failed: Job #{job_id} failed")
    body = mail.get_payload()
    assert "failed hosts:" in body
    for host_id in ids.values():
        host = await manager.db.run(get_host, host_id)
        assert f"{host.display_name or host.name}: " in body  # the name the pages show


async def test_many_events_at_once_arrive_as_one_digest_per_recipient(
    db: Database, pki: Pki, tmp_path: Path
) -> None:
    host = await add_host(db, "web-1")
    with smtp_server(pki, tmp_path) as server:
        await configure(db, plain(server.port))
        await subscribe(db, "alice")
        await subscribe(db, "bob")
        for n in range(5):
            await db.run(enqueue_event, "host_unreachable", [host], {"host": f"web-{n}"})
        assert await notifier(db).cycle() == 2
    assert sorted(m["To"] for m in server.recorder.messages) == [
        "alice@example.test", "bob@example.test",
    ]  # fmt: skip
    for mail in server.recorder.messages:
        assert mail["Subject"] == "[patch-manager] 5 notifications"
        assert all(f"Host web-{n} unreachable" in mail.get_payload() for n in range(5))


async def test_subscribers_hear_only_of_hosts_in_their_groups(
    db: Database, pki: Pki, tmp_path: Path
) -> None:
    web = await add_host(db, "web-1", ("web",))
    dbh = await add_host(db, "db-1", ("db",))
    with smtp_server(pki, tmp_path) as server:
        await configure(db, plain(server.port))
        await subscribe(db, "web-operator", "operator", ("web",))
        await subscribe(db, "admin-all")
        await db.run(enqueue_event, "host_unreachable", [dbh], {"host": "db-1"})
        await db.run(
            enqueue_event, "job_failed", [web, dbh],
            {"job_id": 7, "status": "failed", "hosts": [
                {"id": web, "name": "web-1", "state": "failed", "error": "E1"},
                {"id": dbh, "name": "db-1", "state": "failed", "error": "E2"}]},
        )  # fmt: skip
        assert await notifier(db).cycle() == 2
    mails = {m["To"]: m.get_payload() for m in server.recorder.messages}
    operator = mails["web-operator@example.test"]
    assert "web-1: E1" in operator and "db-1" not in operator
    assert "(1 host(s))" in operator
    assert "db-1: E2" in mails["admin-all@example.test"]
    assert "Host db-1 unreachable" in mails["admin-all@example.test"]


async def test_a_refusing_server_fails_the_attempt_and_retries_it_with_backoff(
    db: Database, pki: Pki, tmp_path: Path
) -> None:
    host = await add_host(db, "web-1")
    with smtp_server(pki, tmp_path, refuse_data="554 5.7.1 no thanks") as server:
        await configure(db, plain(server.port))
        await subscribe(db, "alice")
        await db.run(enqueue_event, "host_unreachable", [host], {"host": "web-1"})
        assert await notifier(db).cycle() == 0
    [row] = await db.run(recent_messages)
    assert (row.state, row.attempts) == ("pending", 1)
    assert row.last_error == "rejected: server answered 554 5.7.1 no thanks"
    assert row.next_attempt_at == NOW + dt.timedelta(seconds=30)
    stats = await db.run(outbox_stats)
    assert (stats.pending_messages, stats.last_error) == (1, row.last_error)


async def test_a_message_is_marked_failed_after_the_last_attempt(
    db: Database, pki: Pki, tmp_path: Path
) -> None:
    host = await add_host(db, "web-1")
    clock = [NOW]
    with smtp_server(pki, tmp_path, refuse_data="554 no") as server:
        await configure(db, plain(server.port))
        await subscribe(db, "alice")
        await db.run(enqueue_event, "host_unreachable", [host], {"host": "web-1"})
        sender = Notifier(
            db, sealer=None, ssl_context=ssl.create_default_context(), clock=lambda: clock[0]
        )
        for _ in range(6):
            await sender.cycle()
            clock[0] += dt.timedelta(hours=2)
    [row] = await db.run(recent_messages)
    assert (row.state, row.attempts) == ("failed", 6)
    assert (await db.run(outbox_stats)).failed == 1


async def test_a_hung_server_times_out_and_is_retried_later_while_events_still_enqueue(
    db: Database, pki: Pki, tmp_path: Path
) -> None:
    host = await add_host(db, "web-1")
    with hung_server() as port:
        await configure(db, plain(port, timeout_s=1))
        await subscribe(db, "alice")
        await db.run(enqueue_event, "host_unreachable", [host], {"host": "web-1"})
        sender = notifier(db)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.cycle)
            with trio.fail_after(0.5):  # nobody waits for the sender: an event is one insert
                await db.run(enqueue_event, "host_unreachable", [host], {"host": "again"})
    [row] = await db.run(recent_messages)
    assert (row.state, row.attempts) == ("pending", 1)
    assert row.last_error == "timeout: no answer within 1 s"
    # The server answers again: not retried before its backoff, then retried and delivered.
    with smtp_server(pki, tmp_path) as server:
        await configure(db, plain(server.port))
        retry = row.next_attempt_at
        assert retry > NOW
        early = retry - dt.timedelta(seconds=1)
        assert await notifier(db).send_due(plain(server.port), early) == 0
        assert server.recorder.messages == []
        assert await notifier(db).send_due(plain(server.port), retry) == 1
    [row] = await db.run(recent_messages)
    assert row.state == "sent"
    [mail] = server.recorder.messages
    assert "Host web-1 unreachable" in mail.get_payload()


async def test_starttls_with_a_certificate_of_our_ca_and_a_login_delivers(
    db: Database, pki: Pki, tmp_path: Path
) -> None:
    host = await add_host(db, "web-1")
    with smtp_server(pki, tmp_path, starttls=True, login=("pm", "s3cret")) as server:
        await configure(
            db, plain(server.port, security="starttls", username="pm", password_env="PM_SMTP_T")
        )
        await subscribe(db, "alice")
        await db.run(enqueue_event, "host_unreachable", [host], {"host": "web-1"})
        sender = notifier(db, server.client_context, environ={"PM_SMTP_T": "s3cret"}.get)
        assert await sender.cycle() == 1
    [mail] = server.recorder.messages
    assert mail["Subject"].startswith("[patch-manager] Host unreachable: Host web-1")


async def test_a_wrong_smtp_password_is_reported_as_auth_failed(
    db: Database, pki: Pki, tmp_path: Path
) -> None:
    with smtp_server(pki, tmp_path, starttls=True, login=("pm", "s3cret")) as server:
        await configure(
            db, plain(server.port, security="starttls", username="pm", password_env="PM_SMTP_T")
        )
        sender = notifier(db, server.client_context, environ={"PM_SMTP_T": "wrong"}.get)
        ok, result = await sender.send_test("alice@example.test")
    assert (ok, result) == (False, "auth: login refused (535)")
    assert server.recorder.messages == []


async def test_starttls_against_a_certificate_we_do_not_trust_fails_as_tls(
    db: Database, pki: Pki, tmp_path: Path
) -> None:
    with smtp_server(pki, tmp_path, starttls=True) as server:
        await configure(db, plain(server.port, security="starttls"))
        ok, result = await notifier(db).send_test("alice@example.test")  # system trust only
    assert not ok and result.startswith("tls: ")


async def test_the_test_message_to_a_closed_port_says_connection_refused(db: Database) -> None:
    with hung_server() as port:
        pass  # closed again: nothing listens there now
    await configure(db, plain(port))
    ok, result = await notifier(db).send_test("alice@example.test")
    assert (ok, result) == (False, "refused: connection refused")
    assert (await db.run(get_notification_settings)).enabled


async def test_plain_smtp_off_loopback_is_refused_before_connecting(db: Database) -> None:
    await configure(db, plain(25, smtp_host="192.0.2.1"))
    ok, result = await notifier(db).send_test("alice@example.test")
    assert (ok, result) == (
        False, "config: security 'none' is allowed only for a loopback SMTP server",
    )  # fmt: skip


async def test_nothing_is_enqueued_or_sent_while_notifications_are_off(
    db: Database, pki: Pki, tmp_path: Path
) -> None:
    await add_host(db, "web-1")
    with smtp_server(pki, tmp_path) as server:
        await configure(db, plain(server.port, enabled=False))
        await subscribe(db, "alice")
        assert await notifier(db).cycle() == 0
    assert server.recorder.messages == []


async def test_a_full_outbox_drops_the_oldest_events_and_counts_them(db: Database) -> None:
    host = await add_host(db, "web-1")
    await configure(db, plain(1, max_events=3))
    for n in range(5):
        await db.run(enqueue_event, "host_unreachable", [host], {"host": f"h{n}"})
    from storage.notifications import drop_excess_events, pending_events

    assert await db.run(drop_excess_events, 3) == 2
    assert [e.details["host"] for e in await db.run(pending_events)] == ["h2", "h3", "h4"]
    assert (await db.run(outbox_stats)).dropped_events == 2


def test_mail_error_reads_as_kind_then_message() -> None:
    assert str(MailError("timeout", "no answer within 1 s")) == "timeout: no answer within 1 s"


async def test_a_host_unreachable_longer_than_the_setting_is_told_once(
    db: Database, pki: Pki, tmp_path: Path
) -> None:
    long_ago = await add_host(db, "down-long")
    recent = await add_host(db, "down-briefly")

    def unreachable(conn: Any) -> None:
        for host_id, minutes in ((long_ago, 31), (recent, 10)):
            conn.execute(
                "UPDATE hosts SET health = 'unreachable', health_reason = 'connection refused',"
                " health_changed_at = %s WHERE id = %s",
                (NOW - dt.timedelta(minutes=minutes), host_id),
            )

    await db.run(unreachable)
    with smtp_server(pki, tmp_path) as server:
        await configure(db, plain(server.port, unreachable_minutes=30))
        await subscribe(db, "alice")
        sender = notifier(db)
        assert await sender.cycle() == 1
        assert await sender.cycle() == 0  # the same episode is not told again
    [mail] = server.recorder.messages
    assert "Host down-long unreachable since" in mail.get_payload()
    assert "down-briefly" not in mail.get_payload()


async def test_a_certificate_expiring_within_the_setting_is_told_to_those_who_see_everything(
    db: Database, pki: Pki, tmp_path: Path
) -> None:
    await add_host(db, "web-1", ("web",))

    def certificate(conn: Any) -> None:
        conn.execute(
            "INSERT INTO certificates (serial, kind, subject, not_before, not_after, cert_pem)"
            " VALUES (4242, 'web_server', 'CN=manager', %s, %s, 'x')",
            (NOW - dt.timedelta(days=300), NOW + dt.timedelta(days=10)),
        )

    await db.run(certificate)
    with smtp_server(pki, tmp_path) as server:
        await configure(db, plain(server.port, certificate_days=14))
        await subscribe(db, "admin-all", events=("certificate_expiry",))
        await subscribe(db, "web-op", "operator", ("web",), events=("certificate_expiry",))
        assert await notifier(db).cycle() == 1
    [mail] = server.recorder.messages
    assert mail["To"] == "admin-all@example.test"
    assert "Certificate CN=manager expires" in mail.get_payload()


async def test_a_window_starting_within_the_reminder_time_is_reminded_to_its_groups_users(
    db: Database, pki: Pki, tmp_path: Path
) -> None:
    await add_host(db, "web-1", ("web",))

    def window(conn: Any) -> None:
        group = next(g.id for g in list_groups(conn) if g.name == "web")
        save_window(conn, {
            "name": "nightly", "group_id": group, "recurrence": "daily",
            "start_date": NOW.date(), "start_time": dt.time(12, 45), "duration_minutes": 60,
            "timezone": "UTC", "weekdays": [], "enabled": True,
        }, None, "test")  # fmt: skip

    await db.run(window)
    with smtp_server(pki, tmp_path) as server:
        await configure(db, plain(server.port, reminder_minutes=60))
        await subscribe(db, "web-op", "operator", ("web",), events=("window_reminder",))
        await subscribe(db, "db-op", "operator", ("db",), events=("window_reminder",))
        sender = notifier(db)
        assert await sender.cycle() == 1
        assert await sender.cycle() == 0
    [mail] = server.recorder.messages
    assert mail["To"] == "web-op@example.test"
    assert "Window nightly (group web) starts 2026-11-30 12:45 UTC" in mail.get_payload()


async def test_an_unreadable_event_is_told_as_such_and_does_not_hold_back_the_others(
    db: Database, pki: Pki, tmp_path: Path
) -> None:
    host = await add_host(db, "web-1")
    with smtp_server(pki, tmp_path) as server:
        await configure(db, plain(server.port))
        await subscribe(db, "alice")
        await db.run(enqueue_event, "job_failed", [host], {"job_id": 3, "hosts": "not a list"})
        await db.run(enqueue_event, "host_unreachable", [host], {"host": "web-1"})
        assert await notifier(db).cycle() == 1
    body = server.recorder.messages[0].get_payload()
    assert "(job_failed): its details cannot be read" in body
    assert "Host web-1 unreachable" in body


async def test_a_digest_is_sent_in_the_cycle_that_made_it_while_the_clock_moves_on(
    db: Database, pki: Pki, tmp_path: Path
) -> None:
    host = await add_host(db, "web-1")
    ticks = iter(NOW + dt.timedelta(seconds=n) for n in range(1000))  # every reading is later
    with smtp_server(pki, tmp_path) as server:
        await configure(db, plain(server.port))
        await subscribe(db, "alice")
        await db.run(enqueue_event, "host_unreachable", [host], {"host": "web-1"})
        sender = Notifier(
            db, sealer=None, ssl_context=ssl.create_default_context(), clock=lambda: next(ticks)
        )
        assert await sender.cycle() == 1
    assert len(server.recorder.messages) == 1


async def test_a_job_that_failed_elsewhere_is_a_success_for_a_user_who_sees_only_the_good_host(
    db: Database, pki: Pki, tmp_path: Path
) -> None:
    web = await add_host(db, "web-1", ("web",))
    dbh = await add_host(db, "db-1", ("db",))
    job = {"job_id": 9, "status": "partially_failed", "hosts": [
        {"id": web, "name": "web-1", "state": "succeeded", "error": ""},
        {"id": dbh, "name": "db-1", "state": "failed", "error": "E2"}]}  # fmt: skip
    with smtp_server(pki, tmp_path) as server:
        await configure(db, plain(server.port))
        await subscribe(db, "web-fails", "operator", ("web",), events=("job_failed",))
        await subscribe(db, "web-all", "operator", ("web",), events=("job_finished",))
        await subscribe(db, "db-fails", "operator", ("db",), events=("job_failed",))
        await db.run(enqueue_event, "job_failed", [web, dbh], job)
        assert await notifier(db).cycle() == 2
    mails = {m["To"]: m for m in server.recorder.messages}
    assert set(mails) == {"web-all@example.test", "db-fails@example.test"}
    assert mails["web-all@example.test"]["Subject"] == (
        "[patch-manager] Job finished: Job #9 succeeded (1 host(s))"
    )
    assert mails["db-fails@example.test"]["Subject"] == (
        "[patch-manager] Job failed: Job #9 failed (1 host(s))"
    )
    assert "web-1" not in mails["db-fails@example.test"].get_payload()
