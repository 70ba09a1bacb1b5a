"""The notification sender: review F13b findings (#3: a stored password_env naming another of
the process's secrets is never read nor sent)."""

from __future__ import annotations

from storage import Database

from .test_notifier import configure, notifier, plain


async def test_a_stored_password_env_outside_pm_smtp_is_refused_and_never_read(
    db: Database,
) -> None:
    # Stored before the rule existed (or written past the web layer): the sender refuses it.
    await configure(db, plain(2525, username="pm", password_env="PM_AUDIT_KEY"))
    read: list[str] = []

    def environ(name: str) -> str | None:
        read.append(name)
        return "the-audit-key"

    ok, result = await notifier(db, environ=environ).send_test("alice@example.test")
    assert not ok
    assert result.startswith("config: password_env 'PM_AUDIT_KEY'")
    assert read == []
