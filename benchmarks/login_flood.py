"""Login under a wrong-password flood (issue 11): a correct user's login latency while N parallel
guessers hammer another account.

    .venv/bin/python benchmarks/login_flood.py                     # 16 guessers, one address
    .venv/bin/python benchmarks/login_flood.py --flood-addresses 16  # one address per guesser

It starts its own `patch-manager serve` on 127.0.0.1 (HTTPS, a fresh data directory), takes the
bootstrap admin through the forced password change, creates the guessed account and the
correct user, then measures ``--logins`` logins of the correct user (login form + POST, from
127.0.0.2) first alone, then while ``--guessers`` tasks each loop (login form + POST with a wrong
password) from ``--flood-addresses`` loopback addresses (127.0.1.x). Prints p50/p95/max of the
correct user's logins per phase and the guessers' answers by status (401 wrong, 429 refused at
once). Loopback only; every connection is closed and the server stopped before it exits.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx2
import trio

REPO = Path(__file__).resolve().parent.parent
ADMIN = "benchmark keeper passphrase river"
CORRECT = "correct user passphrase meadow"


def start_server(root: Path) -> tuple[subprocess.Popen[str], str, str]:
    (root / "conf").mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "patch_manager", "serve", "--bind", "127.0.0.1:0",
         "--data-dir", str(root / "data"), "--conf-dir", str(root / "conf"),
         "--log-level", "error"],
        stdout=subprocess.PIPE, stderr=(root / "stderr.log").open("w"), text=True, cwd=REPO,
    )  # fmt: skip
    url = password = ""
    assert process.stdout is not None
    for line in process.stdout:
        if "is running at " in line:
            url = line.split("is running at ", 1)[1].strip()
        if "with password " in line:
            password = line.split("with password ", 1)[1].strip()
            break
    if not url or not password:
        process.kill()
        problem = (root / "stderr.log").read_text()[-500:]
        raise SystemExit(f"the server did not start: {problem}")
    return process, url, password


def client(url: str, cafile: Path, address: str) -> httpx2.AsyncClient:
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.check_hostname = False  # the certificate names localhost; we connect by address
    transport = httpx2.AsyncHTTPTransport(verify=ctx, local_address=address)
    return httpx2.AsyncClient(base_url=url, transport=transport, timeout=60)


async def post_login(c: httpx2.AsyncClient, username: str, password: str) -> httpx2.Response:
    form = await c.get("login")
    token = re.search(r'name="login_token" value="([^"]+)"', form.text)
    if token is None:
        return form
    return await c.post(
        "login", data={"username": username, "password": password, "login_token": token[1]}
    )


async def change_password(c: httpx2.AsyncClient, old: str, new: str) -> None:
    page = await c.get("password")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None, page.text
    done = await c.post(
        "password", data={"csrf_token": csrf[1], "current_password": old, "new_password": new}
    )
    assert done.status_code == 303, done.text


async def prepare(url: str, cafile: Path, bootstrap: str) -> None:
    async with client(url, cafile, "127.0.0.1") as admin:
        response = await post_login(admin, "admin", bootstrap)
        assert response.status_code == 303, response.text
        await change_password(admin, bootstrap, ADMIN)
        page = await admin.get("")
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
        assert csrf is not None
        admin.headers["x-csrf-token"] = csrf[1]
        victim = await admin.post("api/v1/users", json={"username": "victim", "role": "auditor"})
        assert victim.status_code == 201, victim.text
        made = await admin.post("api/v1/users", json={"username": "alice", "role": "operator"})
        assert made.status_code == 201, made.text
        one_time = made.json()["password"]
    async with client(url, cafile, "127.0.0.2") as alice:
        response = await post_login(alice, "alice", one_time)
        assert response.status_code == 303, response.text
        await change_password(alice, one_time, CORRECT)


async def correct_logins(url: str, cafile: Path, count: int) -> list[float]:
    times = []
    for _ in range(count):
        async with client(url, cafile, "127.0.0.2") as alice:
            start = time.perf_counter()
            response = await post_login(alice, "alice", CORRECT)
            times.append(time.perf_counter() - start)
            assert response.status_code == 303, (response.status_code, response.text[:200])
    return times


async def guesser(
    url: str, cafile: Path, address: str, answers: Counter[int], stop: trio.Event
) -> None:
    async with client(url, cafile, address) as c:
        n = 0
        while not stop.is_set():
            n += 1
            response = await post_login(c, "victim", f"wrong guess {n}")
            answers[response.status_code] += 1
            if response.status_code == 429:
                retry = float(response.headers.get("retry-after", "1"))
                with trio.move_on_after(min(retry, 1.0)):  # a guesser that honours Retry-After
                    await stop.wait()


def summary(name: str, times: list[float]) -> str:
    times = sorted(times)
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return (f"{name:<28} n={len(times):>3}  p50 {statistics.median(times) * 1000:7.0f} ms  "
            f"p95 {p95 * 1000:7.0f} ms  max {times[-1] * 1000:7.0f} ms")  # fmt: skip


async def run(args: argparse.Namespace, url: str, cafile: Path, bootstrap: str) -> None:
    await prepare(url, cafile, bootstrap)
    alone = await correct_logins(url, cafile, args.logins)
    print(summary("correct user, no flood", alone), flush=True)
    answers: Counter[int] = Counter()
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        for i in range(args.guessers):
            address = f"127.0.1.{1 + i % args.flood_addresses}"
            nursery.start_soon(guesser, url, cafile, address, answers, stop)
        await trio.sleep(args.warmup)
        flooded = await correct_logins(url, cafile, args.logins)
        stop.set()
    label = f"{args.guessers} guessers / {args.flood_addresses} addr"
    print(summary(f"correct user, {label}", flooded), flush=True)
    print(f"guessers' answers: {dict(sorted(answers.items()))}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guessers", type=int, default=16)
    parser.add_argument("--flood-addresses", type=int, default=1, choices=range(1, 65))
    parser.add_argument("--logins", type=int, default=20)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of flood first")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pm-login-flood-"))
    root.chmod(0o755)  # run as root, the embedded cluster's own user must reach its directory
    process, url, password = start_server(root)
    try:
        trio.run(run, args, url, root / "data" / "ca" / "root.crt", password)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
