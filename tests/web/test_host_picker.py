"""Pages that pick a host list at most a page of them and search the rest server-side."""

from __future__ import annotations

from typing import Any

import httpx2

from storage import insert_host
from web.job_pages import HOST_PICKER

from .conftest import WebRig


async def add_hosts(rig: WebRig, count: int) -> list[int]:
    def insert(conn: Any) -> list[int]:
        return [insert_host(conn, name=f"picker-{i:04d}", address=None).id for i in range(count)]

    return await rig.db.run(insert)


def host_options(html: str) -> int:
    return html.count('<option value="host:')


async def test_windows_page_lists_at_most_a_page_of_hosts_and_finds_the_others_by_search(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    ids = await add_hosts(web_rig, HOST_PICKER + 5)
    page = await client.get("/windows")
    assert page.status_code == 200
    assert host_options(page.text) <= 2 * HOST_PICKER  # two pickers (editor, calendar)
    assert 'id="hosts-limited"' in page.text
    assert f'value="host:{ids[-1]}"' not in page.text  # picker-0204 sorts after the first 200

    found = await client.get("/windows", params={"hosts": "picker-0204"})
    assert found.status_code == 200
    assert host_options(found.text) == 2
    assert f'value="host:{ids[-1]}"' in found.text
    assert 'id="hosts-limited"' not in found.text

    # A host selected in the calendar stays listed (and selected) without a search.
    shown = await client.get("/windows", params={"target": f"host:{ids[-1]}"})
    assert shown.status_code == 200
    assert f'<option value="host:{ids[-1]}" selected>' in shown.text
