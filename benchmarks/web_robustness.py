"""Web robustness (issue 9): the manager survives abuse of its web port and health stays fast.

    .venv/bin/python benchmarks/web_robustness.py                 # starts its own `serve`
    .venv/bin/python benchmarks/web_robustness.py --url https://127.0.0.1:8443/ \\
        --cafile DATA_DIR/ca/root.crt --pid PID                   # a running demo/serve

While a sampler asks ``GET /api/v1/health`` every 100 ms, it sends, in turn: request bodies of
1, 4, 16 and 64 MiB (each really streamed; the server must answer 413 without reading them),
HTTP/2 POSTs of 64 KiB + 1 (ALPN h2 and prior knowledge, what used to crash the process), and
500 idle connections held open (half before TLS, half mid-request). It prints the health
latency (p50/p95/max) per phase, the server's RSS before and after, and whether it survived.

Loopback only (any other host is refused), bounded in count and time (``--hold`` seconds of idle
connections, 30 s per large body at most); every connection it opens is closed before it exits.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import h2.config
import h2.connection
import httpx2
import trio

REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


@dataclass
class Target:
    host: str
    port: int
    url: str
    cafile: Path
    pid: int | None

    def ssl_context(self, alpn: list[str] | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.cafile))
        ctx.check_hostname = False  # the certificate names localhost; we connect by address
        if alpn:
            ctx.set_alpn_protocols(alpn)
        return ctx


@dataclass
class Samples:
    phase: str = "baseline"
    latencies: dict[str, list[float]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)


def rss_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def rss_text(pid: int | None) -> str:
    rss = rss_mib(pid)
    return "?" if rss is None else f"{rss:.1f} MiB"


async def sample_health(target: Target, samples: Samples, stop: trio.Event) -> None:
    async with httpx2.AsyncClient(verify=target.ssl_context(), timeout=5) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                response = await client.get(target.url + "api/v1/health")
                ok = response.status_code == 200
            except httpx2.HTTPError:
                ok = False
            elapsed = time.perf_counter() - started
            if ok:
                samples.latencies.setdefault(samples.phase, []).append(elapsed)
            else:
                samples.failures[samples.phase] = samples.failures.get(samples.phase, 0) + 1
            with trio.move_on_after(max(0.0, 0.1 - elapsed)):
                await stop.wait()


async def tls(target: Target, alpn: list[str]) -> trio.SSLStream[trio.SocketStream]:
    stream = trio.SSLStream(
        await trio.open_tcp_stream(target.host, target.port),
        target.ssl_context(alpn),
        server_hostname="localhost",
    )
    await stream.do_handshake()
    return stream


async def large_body(target: Target, size: int, *, chunked: bool) -> tuple[str, float, int]:
    """Stream ``size`` bytes as a POST body (announced, or chunked); return the status line,
    the time it took and how many body bytes went out before the server answered or closed."""
    stream = await tls(target, ["http/1.1"])
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    head = (
        f"POST /api/v1/hosts HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"{framing}\r\n\r\n"
    ).encode()
    started = time.perf_counter()
    sent = 0
    answer = b""
    chunk = b"x" * (256 * 1024)

    async def send_body() -> None:
        nonlocal sent
        while sent < size:
            piece = chunk[: size - sent]
            await stream.send_all(
                f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece
            )
            sent += len(piece)
        if chunked:
            await stream.send_all(b"0\r\n\r\n")

    async def read_answer(cancel: trio.CancelScope) -> None:
        nonlocal answer
        while b"\r\n" not in answer:
            data = await stream.receive_some(4096)
            if not data:
                break
            answer += data
        cancel.cancel()

    try:
        with trio.move_on_after(30):
            await stream.send_all(head)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_answer, nursery.cancel_scope)
                await send_body()
                await trio.sleep_forever()  # until the answer arrives
    except* (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the server closed the connection: what we want
    finally:
        await trio.aclose_forcefully(stream)
    status = answer.split(b"\r\n", 1)[0].decode(errors="replace") or "(closed)"
    return status, time.perf_counter() - started, sent


async def h2_post(target: Target, prior_knowledge: bool) -> str | None:
    stream = await tls(target, ["http/1.1"] if prior_knowledge else ["h2", "http/1.1"])
    chosen: str | None = stream.selected_alpn_protocol()
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(
        sid, [(":method", "POST"), (":path", "/login"), (":scheme", "https"),
              (":authority", "localhost")],
    )  # fmt: skip
    for _ in range(4):  # 64 KiB - 4 bytes: the initial flow-control window (65,535)
        conn.send_data(sid, b"x" * 16383)
    try:
        await stream.send_all(conn.data_to_send())
        with trio.move_on_after(5):
            while await stream.receive_some(65536):
                pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)
    return chosen


async def hold_idle(target: Target, count: int, seconds: float) -> int:
    held: list[trio.abc.Stream] = []
    limiter = trio.CapacityLimiter(50)

    async def one(index: int) -> None:
        async with limiter:
            try:
                tcp = await trio.open_tcp_stream(target.host, target.port)
                if index % 2:
                    held.append(tcp)  # never starts TLS
                    return
                stream = trio.SSLStream(tcp, target.ssl_context(), server_hostname="localhost")
                await stream.do_handshake()
                await stream.send_all(b"GET /api/v1/health HTTP/1.1\r\nHost: local")
                held.append(stream)
            except (OSError, trio.BrokenResourceError):
                pass

    try:
        async with trio.open_nursery() as nursery:
            for index in range(count):
                nursery.start_soon(one, index)
        await trio.sleep(seconds)
        return len(held)
    finally:
        for stream in held:
            await trio.aclose_forcefully(stream)


def start_server(data: Path) -> tuple[subprocess.Popen[str], str]:
    (data / "conf").mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "patch_manager", "serve", "--bind", "127.0.0.1:0",
         "--data-dir", str(data / "data"), "--conf-dir", str(data / "conf")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
        env={**os.environ, "PATCH_MANAGER_PG_FAST": "1"},
    )  # fmt: skip
    assert process.stdout is not None
    for line in process.stdout:
        if "is running at " in line:
            return process, line.split("is running at ", 1)[1].strip()
    raise SystemExit("the server did not start")


def percentiles(values: list[float]) -> str:
    if not values:
        return "no answer"
    ms = sorted(v * 1000 for v in values)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return f"n={len(ms)} p50 {statistics.median(ms):.1f} ms, p95 {p95:.1f} ms, max {ms[-1]:.1f} ms"


async def run(target: Target, sizes: list[int], h2_rounds: int, idle: int, hold: float) -> bool:
    samples = Samples()
    stop = trio.Event()
    rss_before = rss_text(target.pid)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample_health, target, samples, stop)
        await trio.sleep(3)
        samples.phase = "large bodies"
        for size in sizes:
            for chunked in (False, True):
                status, took, sent = await large_body(target, size * MIB + 1, chunked=chunked)
                kind = "chunked" if chunked else "announced"
                print(f"  {size:>3} MiB body ({kind}): {status!r} after {took * 1000:.0f} ms, "
                      f"{sent / MIB:.2f} MiB sent, server RSS {rss_text(target.pid)}")  # fmt: skip
        samples.phase = "h2 abuse"
        chosen = {await h2_post(target, prior_knowledge=bool(i % 2)) for i in range(h2_rounds)}
        print(f"  {h2_rounds} HTTP/2 POSTs of 64 KiB: ALPN chosen by the server: {chosen}")
        samples.phase = f"{idle} idle connections"
        opened = await hold_idle(target, idle, hold)
        print(f"  held {opened} idle connections for {hold:.0f} s")
        samples.phase = "after"
        await trio.sleep(3)
        stop.set()
    print()
    for phase, values in samples.latencies.items():
        failed = samples.failures.get(phase, 0)
        print(f"  health during {phase:<24} {percentiles(values)}, failed {failed}")
    every = [v for values in samples.latencies.values() for v in values]
    print(f"  health overall: {percentiles(every)}")
    print(f"  server RSS: {rss_before} before, {rss_text(target.pid)} after")
    survived = samples.failures.get("after", 0) == 0 and bool(samples.latencies.get("after"))
    if target.pid is not None:
        survived = survived and rss_mib(target.pid) is not None
    print(f"  the server survived: {'yes' if survived else 'NO'}")
    return survived


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server (default: start one on loopback)")
    parser.add_argument("--cafile", type=Path, help="its root CA (DATA_DIR/ca/root.crt)")
    parser.add_argument("--pid", type=int, help="its process id (for RSS figures)")
    parser.add_argument("--sizes", default="1,4,16,64", help="body sizes in MiB (max 64)")
    parser.add_argument("--h2", type=int, default=20, help="HTTP/2 POSTs (max 200)")
    parser.add_argument("--idle", type=int, default=500, help="idle connections (max 1000)")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds to hold them (max 60)")
    args = parser.parse_args()
    sizes = [min(64, int(s)) for s in args.sizes.split(",")]
    h2_rounds, idle, hold = min(args.h2, 200), min(args.idle, 1000), min(args.hold, 60.0)
    scratch: Path | None = None
    process: subprocess.Popen[str] | None = None
    try:
        if args.url:
            url, cafile, pid = args.url.rstrip("/") + "/", args.cafile, args.pid
            if cafile is None:
                raise SystemExit("--cafile is required with --url")
        else:
            scratch = Path(tempfile.mkdtemp(prefix="pm-web-robustness-"))
            scratch.chmod(0o755)
            process, url = start_server(scratch)
            url = url.rstrip("/") + "/"
            cafile, pid = scratch / "data" / "ca" / "root.crt", process.pid
        parts = urlsplit(url)
        if parts.scheme != "https" or not ipaddress.ip_address(parts.hostname or "").is_loopback:
            raise SystemExit("only an https:// URL on a loopback address (127.0.0.0/8, ::1)")
        target = Target(parts.hostname or "", parts.port or 443, url, cafile, pid)
        print(f"web robustness against {url} (pid {pid})")
        survived = trio.run(run, target, sizes, h2_rounds, idle, hold)
        if process is not None and process.poll() is not None:
            survived = False
            print("  the server process has exited")
        sys.exit(0 if survived else 1)
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
