"""Logins: single-use form tokens, lockout without user enumeration, per-address throttling,
the Argon2 queue bound (429), the forced password change and session rotation."""

from __future__ import annotations

import re
import threading
from collections.abc import AsyncIterator

import httpx2
import pytest
import trio

from web.auth import SESSION_COOKIE, Busy, HashLimiter, Throttle, throttle_delay

from .conftest import WebRig, assert_envelope, enrol_totp, login, second_step

STRONG = "violet otter jumps quietly 42"


@pytest.fixture
async def clients(web_rig: WebRig) -> AsyncIterator[list[httpx2.AsyncClient]]:
    """Three more anonymous clients of the same app, each from its own source address."""
    web_rig.auth.throttle.cap = 0.0  # the throttle's own timing is tested under a fake clock
    made = [
        httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=web_rig.app, client=(f"10.0.0.{i}", 4000)),
            base_url="http://testserver",
        )
        for i in range(1, 4)
    ]
    yield made
    for c in made:
        await c.aclose()


async def post_login(client: httpx2.AsyncClient, username: str, password: str) -> httpx2.Response:
    page = await client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token is not None
    return await client.post(
        "/login",
        data={"username": username, "password": password, "login_token": token[1], "next": "/"},
    )


async def make_user(admin: httpx2.AsyncClient, name: str, role: str = "operator") -> str:
    """A user created by the admin; returns the one-time password."""
    response = await admin.post("/api/v1/users", json={"username": name, "role": role})
    assert response.status_code == 201, response.text
    return str(response.json()["password"])


async def first_login(client: httpx2.AsyncClient, name: str, one_time: str) -> str:
    """Log in with a one-time password, choose ``STRONG`` and enrol an authenticator app (a
    second factor is mandatory); returns the CSRF token."""
    response = await second_step(client, await post_login(client, name, one_time), name)
    assert response.status_code == 303 and response.headers["location"] == "/password"
    page = await client.get("/password")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    changed = await client.post(
        "/password",
        data={"csrf_token": csrf[1], "current_password": one_time, "new_password": STRONG},
    )
    assert changed.status_code == 303, changed.text
    if (await client.get("/")).headers.get("location") == "/mfa/setup":
        await enrol_totp(client, name)
    return csrf[1]


async def test_login_form_token_is_single_use(anonymous: httpx2.AsyncClient) -> None:
    page = await anonymous.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token is not None
    form = {"username": "admin", "password": "wrong", "login_token": token[1]}
    assert (await anonymous.post("/login", data=form)).status_code == 401
    again = await anonymous.post("/login", data=form)
    assert again.status_code == 400
    assert "The form expired" in again.text


async def test_five_wrong_passwords_lock_and_only_the_right_password_says_locked(
    client: httpx2.AsyncClient, clients: list[httpx2.AsyncClient]
) -> None:
    one_time = await make_user(client, "locky")
    guesser, owner = clients[0], clients[1]
    for _ in range(5):
        wrong = await post_login(guesser, "locky", "not the password at all")
        assert wrong.status_code == 401
        assert "Wrong user name or password" in wrong.text
    # Locked now; a wrong password still gets the same answer as an unknown user.
    assert "Wrong user name or password" in (await post_login(guesser, "locky", "nope")).text
    assert "Wrong user name or password" in (await post_login(guesser, "nobody", "nope")).text
    right = await post_login(owner, "locky", one_time)
    assert right.status_code == 403
    assert "locked" in right.text
    assert SESSION_COOKIE not in right.cookies
    listed = {u["username"]: u for u in (await client.get("/api/v1/users")).json()["users"]}
    assert listed["locky"]["locked_until"] is not None
    assert listed["locky"]["failed_logins"] == 6
    unlocked = await client.post(f"/api/v1/users/{listed['locky']['id']}/unlock")
    assert unlocked.json()["locked_until"] is None
    assert (await post_login(owner, "locky", one_time)).status_code == 303


async def test_one_wrong_password_after_a_lock_expires_does_not_lock_again(
    web_rig: WebRig, client: httpx2.AsyncClient, clients: list[httpx2.AsyncClient]
) -> None:
    one_time = await make_user(client, "relocky")
    guesser, owner = clients[0], clients[1]
    for _ in range(5):
        assert (await post_login(guesser, "relocky", "not the password")).status_code == 401
    assert (await post_login(owner, "relocky", one_time)).status_code == 403
    await web_rig.db.run(
        lambda c: c.execute(
            "UPDATE users SET locked_until = now() - interval '1 second' WHERE username = 'relocky'"
        )
    )  # the lock ran out
    assert (await post_login(guesser, "relocky", "still not it")).status_code == 401
    listed = {u["username"]: u for u in (await client.get("/api/v1/users")).json()["users"]}
    assert listed["relocky"]["locked_until"] is None
    assert listed["relocky"]["failed_logins"] == 1
    assert (await post_login(owner, "relocky", one_time)).status_code == 303


async def test_forced_change_blocks_everything_until_the_password_is_changed(
    client: httpx2.AsyncClient, clients: list[httpx2.AsyncClient]
) -> None:
    one_time = await make_user(client, "newbie")
    browser = clients[0]
    response = await post_login(browser, "newbie", one_time)
    assert response.headers["location"] == "/password"
    assert (await browser.get("/hosts")).headers["location"] == "/password"
    assert_envelope(await browser.get("/api/v1/hosts"), 403, "password_change_required")
    page = await browser.get("/password")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    form = {"csrf_token": csrf[1], "current_password": "wrong one", "new_password": STRONG}
    wrong = await browser.post("/password", data=form)
    assert wrong.status_code == 422 and "the current password is wrong" in wrong.text
    weak_form = form | {"current_password": one_time, "new_password": "password1234"}
    weak = await browser.post("/password", data=weak_form)
    assert weak.status_code == 422 and "most common passwords" in weak.text
    old_token = browser.cookies[SESSION_COOKIE]
    done = await browser.post("/password", data=form | {"current_password": one_time})
    assert done.status_code == 303
    new_token = browser.cookies[SESSION_COOKIE]
    assert new_token != old_token  # rotated at the privilege change
    # Then the second factor: nothing else until one is enrolled.
    assert_envelope(await browser.get("/api/v1/hosts"), 403, "mfa_enrolment_required")
    await enrol_totp(browser, "newbie")
    assert (await browser.get("/api/v1/hosts")).status_code == 200


async def test_an_admin_who_must_change_the_password_gets_no_health_details(
    client: httpx2.AsyncClient, clients: list[httpx2.AsyncClient]
) -> None:
    one_time = await make_user(client, "newadmin", role="admin")
    browser = clients[0]
    assert (await post_login(browser, "newadmin", one_time)).headers["location"] == "/password"
    assert set((await browser.get("/api/v1/health")).json()) == {"status"}
    await first_login(clients[1], "newadmin", one_time)
    assert "database" in (await clients[1].get("/api/v1/health")).json()


async def test_wrong_current_passwords_count_towards_lockout_and_the_address_throttle(
    web_rig: WebRig, client: httpx2.AsyncClient, clients: list[httpx2.AsyncClient]
) -> None:
    one_time = await make_user(client, "changer")
    browser = clients[0]
    csrf = await first_login(browser, "changer", one_time)
    browser.headers["x-csrf-token"] = csrf
    wrong = {"current_password": "not it at all", "new_password": "another strong one 77"}
    for _ in range(5):
        answer = await browser.post("/api/v1/profile/password", json=wrong)
        assert_envelope(answer, 422, "validation_error")
    assert web_rig.auth.throttle.failures("10.0.0.1") == 5
    listed = {u["username"]: u for u in (await client.get("/api/v1/users")).json()["users"]}
    assert listed["changer"]["failed_logins"] == 5
    assert listed["changer"]["locked_until"] is not None
    # Locked: even the right current password is refused now.
    right = {"current_password": STRONG, "new_password": "another strong one 77"}
    assert (await browser.post("/api/v1/profile/password", json=right)).status_code == 422


async def test_a_login_gets_a_new_token_and_ends_the_browsers_earlier_session(
    web_rig: WebRig, client: httpx2.AsyncClient, clients: list[httpx2.AsyncClient]
) -> None:
    earlier = client.cookies[SESSION_COOKIE]
    again = await second_step(client, await post_login(client, "admin", web_rig.password), "admin")
    assert again.status_code == 303
    assert client.cookies[SESSION_COOKIE] != earlier
    clients[0].cookies.set(SESSION_COOKIE, earlier)
    assert_envelope(await clients[0].get("/api/v1/hosts"), 401, "unauthorized")


async def test_reusing_a_rotated_session_token_revokes_the_whole_family(
    client: httpx2.AsyncClient, clients: list[httpx2.AsyncClient]
) -> None:
    one_time = await make_user(client, "rotor")
    browser, thief = clients[0], clients[1]
    await post_login(browser, "rotor", one_time)
    stolen = browser.cookies[SESSION_COOKIE]
    page = await browser.get("/password")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    change = {"csrf_token": csrf[1], "current_password": one_time, "new_password": STRONG}
    await browser.post("/password", data=change)
    await enrol_totp(browser, "rotor")
    assert (await browser.get("/api/v1/hosts")).status_code == 200
    thief.cookies.set(SESSION_COOKIE, stolen)
    assert (await thief.get("/api/v1/hosts")).status_code == 401
    assert (await browser.get("/api/v1/hosts")).status_code == 401  # the family is gone


async def test_reusing_a_rotated_token_hours_later_after_a_prune_still_revokes_the_family(
    web_rig: WebRig, client: httpx2.AsyncClient, clients: list[httpx2.AsyncClient]
) -> None:
    one_time = await make_user(client, "rotor2")
    browser, thief = clients[0], clients[1]
    await post_login(browser, "rotor2", one_time)
    stolen = browser.cookies[SESSION_COOKIE]
    page = await browser.get("/password")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    change = {"csrf_token": csrf[1], "current_password": one_time, "new_password": STRONG}
    await browser.post("/password", data=change)
    await enrol_totp(browser, "rotor2")
    # Hours pass: the rotated row was last seen at its rotation, far beyond the idle timeout.
    await web_rig.db.run(
        lambda c: c.execute(
            "UPDATE sessions SET last_seen_at = now() - interval '5 hours',"
            " created_at = now() - interval '5 hours' WHERE rotated_at IS NOT NULL"
        )
    )
    await web_rig.auth.prune()
    assert (await browser.get("/api/v1/hosts")).status_code == 200
    thief.cookies.set(SESSION_COOKIE, stolen)
    assert (await thief.get("/api/v1/hosts")).status_code == 401
    assert (await browser.get("/api/v1/hosts")).status_code == 401  # the family is gone


async def test_disabled_user_is_refused_at_login_and_on_the_api(
    client: httpx2.AsyncClient, clients: list[httpx2.AsyncClient]
) -> None:
    one_time = await make_user(client, "gone")
    browser = clients[0]
    await first_login(browser, "gone", one_time)
    assert (await browser.get("/api/v1/hosts")).status_code == 200
    users = (await client.get("/api/v1/users")).json()["users"]
    user_id = next(u["id"] for u in users if u["username"] == "gone")
    assert (await client.patch(f"/api/v1/users/{user_id}", json={"state": "disabled"})).is_success
    assert_envelope(await browser.get("/api/v1/hosts"), 401, "unauthorized")
    again = await post_login(clients[1], "gone", STRONG)
    assert again.status_code == 403 and "disabled" in again.text
    assert "Wrong user name" in (await post_login(clients[1], "gone", "bad guess")).text


async def test_full_password_queue_answers_429_with_retry_after(
    web_rig: WebRig, anonymous: httpx2.AsyncClient
) -> None:
    web_rig.auth.hashing = HashLimiter(1, 0)
    release = threading.Event()
    async with trio.open_nursery() as nursery:
        started = trio.Event()

        async def hold() -> None:
            started.set()
            await web_rig.auth.hashing.run(release.wait, 10)

        nursery.start_soon(hold)
        await started.wait()
        await trio.testing.wait_all_tasks_blocked()
        response = await post_login(anonymous, "admin", web_rig.password)
        release.set()
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    assert "Too many login attempts" in response.text


async def test_a_suspect_check_waits_while_a_clean_one_runs() -> None:
    hashing = HashLimiter(2, 16)
    release, ran = threading.Event(), threading.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: hashing.run(release.wait, 10))  # a clean check, hashing
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(lambda: hashing.run(ran.set, suspect=True))
        await trio.testing.wait_all_tasks_blocked()
        assert not ran.is_set()  # a slot is free, but a clean check runs
        release.set()
    assert ran.is_set()


def test_throttle_delay_grows_exponentially_after_two_failures_and_is_capped() -> None:
    assert [throttle_delay(n, 30) for n in range(8)] == [0, 0, 0, 0.5, 1, 2, 4, 8]
    assert throttle_delay(40, 30) == 30
    assert throttle_delay(10, 0) == 0


async def test_an_address_waits_a_short_delay_without_delaying_other_addresses(
    autojump_clock: trio.testing.MockClock,
) -> None:
    throttle = Throttle(cap=30)
    for _ in range(3):
        async with throttle.turn("10.9.9.9") as source:
            throttle.failed(source)
    start = trio.current_time()
    async with throttle.turn("10.1.1.1"):
        assert trio.current_time() == start
    async with throttle.turn("10.9.9.9"):
        assert trio.current_time() - start == throttle_delay(3, 30) == 0.5


async def test_an_address_in_a_long_delay_is_refused_at_once_with_the_seconds_left(
    mock_clock: trio.testing.MockClock,
) -> None:
    throttle = Throttle(cap=30)
    for _ in range(6):
        async with throttle.turn("10.9.9.9") as source:
            throttle.failed(source)
        mock_clock.jump(60)
    throttle.failed(source)  # 7 failures: 8 s to wait
    mock_clock.jump(3)
    with pytest.raises(Busy) as refused:
        async with throttle.turn("10.9.9.9"):
            pass
    assert refused.value.retry_after == 5
    mock_clock.jump(5)
    async with throttle.turn("10.9.9.9"):
        pass


async def test_an_address_quiet_for_an_hour_is_clean_again(
    mock_clock: trio.testing.MockClock,
) -> None:
    throttle = Throttle(cap=30)
    for _ in range(6):
        async with throttle.turn("10.9.9.9") as source:
            throttle.failed(source)
        mock_clock.jump(60)
    mock_clock.jump(3600)
    async with throttle.turn("10.9.9.9") as source:
        assert source.failures == 0


async def test_a_successful_login_does_not_clear_the_addresss_failures(
    web_rig: WebRig, client: httpx2.AsyncClient, clients: list[httpx2.AsyncClient]
) -> None:
    one_time = await make_user(client, "sprayer")
    spray = clients[0]  # an account holder guessing other accounts' passwords
    for victim in ("admin", "nobody", "admin"):
        assert (await post_login(spray, victim, "guess-1234")).status_code == 401
    assert (await post_login(spray, "sprayer", one_time)).status_code == 303
    assert web_rig.auth.throttle.failures("10.0.0.1") == 3


async def test_an_addresss_failures_decay_one_every_five_minutes(
    mock_clock: trio.testing.MockClock,
) -> None:
    throttle = Throttle(cap=30)
    for _ in range(6):
        async with throttle.turn("10.9.9.9") as source:
            throttle.failed(source)
        mock_clock.jump(30)
    mock_clock.jump(2 * Throttle.DECAY_EVERY - 30)
    async with throttle.turn("10.9.9.9") as source:
        assert source.failures == 4
    assert throttle.failures("10.9.9.9") == 4


async def test_too_many_waiting_attempts_from_one_address_are_refused_at_once(
    mock_clock: trio.testing.MockClock,
) -> None:
    throttle = Throttle(cap=30)
    release = trio.Event()
    entered = 0
    async with trio.open_nursery() as nursery:

        async def attempt() -> None:
            nonlocal entered
            async with throttle.turn("10.9.9.9"):
                entered += 1
                await release.wait()  # the first one holds the turn (as Argon2 would)

        for _ in range(5):  # one in its turn, four waiting for theirs
            nursery.start_soon(attempt)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(Busy):
            async with throttle.turn("10.9.9.9"):
                pass
        assert entered == 1
        release.set()
    assert entered == 5


async def test_existing_login_helper_still_reaches_the_dashboard(
    web_rig: WebRig, clients: list[httpx2.AsyncClient]
) -> None:
    assert await login(clients[2], web_rig.password)
