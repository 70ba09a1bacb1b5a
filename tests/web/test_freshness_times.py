"""The one-line reason of a host ("poll failing since 12:03 (2 of 3 retries, next 12:09)",
"healthy since 02:47") shows its times as <time> elements in the user's zone with the UTC
instant on hover on the pages (review rvA, point 2); its plain text (API, CLI) is unchanged."""

from __future__ import annotations

import datetime as dt

from web.freshness import host_view

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)  # 17:30 in Kolkata


def test_a_failing_hosts_why_line_has_time_elements_with_utc_on_hover() -> None:
    live = {
        "condition": "failing", "health_as_of": "2026-11-30T11:50:00+00:00",
        "failing_since": "2026-11-30T11:33:00+00:00", "retries_used": 2, "retries_total": 3,
        "next_attempt": "2026-11-30T12:09:00+00:00", "last_error": "connection <refused>",
    }  # fmt: skip
    view = host_view(live, tz="Asia/Kolkata", now=NOW)
    assert view.why == "poll failing since 17:03 (2 of 3 retries, next 17:39); connection <refused>"
    html = str(view.why_html)
    assert (
        'poll failing since <time datetime="2026-11-30T11:33:00+00:00"'
        ' title="2026-11-30 11:33:00 UTC">17:03</time>'
    ) in html
    assert 'title="2026-11-30 12:09:00 UTC">17:39</time>)' in html
    assert "connection &lt;refused&gt;" in html


def test_a_healthy_hosts_since_is_a_time_element() -> None:
    live = {
        "condition": "healthy", "health_as_of": "2026-11-30T11:59:00+00:00",
        "health_since": "2026-11-29T21:17:00+00:00", "stale_after": "2026-11-30T13:00:00+00:00",
    }  # fmt: skip
    view = host_view(live, tz="Asia/Kolkata", now=NOW)
    assert view.why == "healthy since 02:47"
    assert 'healthy since <time datetime="2026-11-29T21:17:00+00:00"' in str(view.why_html)


def test_a_host_without_a_snapshot_has_the_same_why_in_both_forms() -> None:
    view = host_view(None, now=NOW)
    assert str(view.why_line()) == view.why == "never contacted"
