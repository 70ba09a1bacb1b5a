"""``services.concurrently``: independent reads at once, results in order, and a failure raised
as itself so the app's handlers answer it as before (a group would have been a 500)."""

from __future__ import annotations

import pytest
import trio

from storage import DatabaseUnavailable
from web.services import concurrently


async def test_results_come_back_in_the_order_of_the_calls_not_of_completion() -> None:
    first_may_finish = trio.Event()

    async def slow() -> str:
        await first_may_finish.wait()
        return "slow"

    async def fast() -> str:
        first_may_finish.set()
        return "fast"

    assert await concurrently(slow, fast) == ["slow", "fast"]


async def test_a_failing_read_is_raised_as_itself_and_the_others_are_cancelled() -> None:
    cancelled = trio.Event()

    async def waits() -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    async def fails() -> None:
        raise DatabaseUnavailable("the database is not reachable")

    with pytest.raises(DatabaseUnavailable, match="not reachable"):
        await concurrently(waits, fails)
    assert cancelled.is_set()
