"""A job's notification as a user who sees only some of its hosts hears it: judged by the job's
own roll-up rule (actors.rollout.roll_up), where rows that had nothing to do count neither way,
and the event names hosts by display name with each row's code."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from actors.notifier import as_seen
from simulator import Fleet
from storage import JobSpec
from storage.notifications import (
    EventRow,
    get_notification_settings,
    pending_events,
    save_notification_settings,
)

from .conftest import Manager, register
from .test_jobs import finished, healthy

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


def job_event(hosts: list[dict[str, Any]]) -> EventRow:
    return EventRow(
        1, "job_failed", tuple(h["id"] for h in hosts),
        {"job_id": 9, "status": "failed", "hosts": hosts}, NOW,
    )  # fmt: skip


def test_a_scoped_view_counts_rows_with_nothing_to_do_neither_way() -> None:
    hosts = [{"id": i, "name": f"h{i}", "state": "skipped", "code": "NO_WINDOW"}
             for i in range(1, 47)]  # fmt: skip
    hosts += [{"id": i, "name": f"h{i}", "state": "succeeded", "code": "NOTHING_PENDING"}
              for i in range(47, 51)]  # fmt: skip
    hosts.append({"id": 51, "name": "elsewhere", "state": "succeeded", "code": ""})
    event = job_event(hosts)
    # 46 hosts without a window and 4 with nothing to do: nothing was sent, the job failed.
    assert as_seen(event, set(range(1, 51)), all_hosts=False).details["status"] == "failed"
    # Only hosts that had nothing to do: that is a success.
    only_nothing = as_seen(event, set(range(47, 51)), all_hosts=False)
    assert (only_nothing.kind, only_nothing.details["status"]) == ("job_finished", "succeeded")


async def test_a_finished_jobs_event_names_hosts_by_display_name_with_their_codes(
    manager: Manager, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1, time_scale=0.002)
    [host_id] = (await register(manager, fleet)).values()
    await healthy(manager, 1)
    await manager.db.run(
        lambda c: c.execute(
            "UPDATE hosts SET display_name = 'Front door' WHERE id = %s", (host_id,)
        )  # fmt: skip
    )
    settings = await manager.db.run(get_notification_settings)
    await manager.db.run(save_notification_settings, dataclasses.replace(settings, enabled=True))
    job_id = await manager.handle.create_job(
        JobSpec(kind="patch", schedule="now", selection="list", packages=("bad name",)), [host_id]
    )
    assert (await finished(manager, job_id, timeout=30)).status == "failed"
    [event] = await manager.db.run(pending_events)
    [host] = event.details["hosts"]
    assert host["name"] == "Front door"
    assert host["state"] == "failed" and host["code"]
