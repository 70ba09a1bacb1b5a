"""The live relay: one WebSocket per browser tab carrying actor state (R-3.4).

On connect the client gets the hosts it may see in pages of at most ``PAGE_SIZE``:
``{"type": "snapshot", "page": 1, "pages": N, "hosts": [...]}`` (starts a new state),
then ``{"type": "snapshot_page", "page": 2, "pages": N, "hosts": [...]}`` up to page N (added;
the page swaps the new state in at page N, so its counts never show a partial fleet),
then one ``{"type": "change", "host": {...}}`` or ``{"type": "removed", "host_id": N}`` per
change. Changes made while the pages go out are sent after the last one; a scope change's
messages (below) are sent after the first page of the snapshot going out, resyncs included.
A client may ask ``{"action": "watch_scan", "scan_id": N}`` to get ``{"type": "scan", ...}``
progress messages; a socket follows one scan at a time (a new ``watch_scan`` replaces the
previous one, so a client cannot pile up followers).

Coalescing: a socket never holds a queue of changes. Each keeps the latest change per host not
yet sent (a dirty set) and sends it at most every ``flush_every`` seconds, so a slow browser gets
fewer, newer updates instead of falling behind; it never slows the actors. Should a burst
outrun even the collecting task (the fleet's subscription buffer overflows), the socket
subscribes again and sends one fresh ``snapshot`` (the page replaces its state), without a
reconnect. Each host's JSON is serialised once per state for every socket (``_host_text``).

The snapshot never blocks the event loop for the whole fleet: each page is built (at most
``PAGE_SIZE`` hosts serialised) and sent before the next is started, with a checkpoint in
between. Pages of the whole fleet are kept (``_pages``) with the states they were built from: a
socket that sees every host and connects while those states are current reuses them as they
are (``pages_reused``), a scoped socket reuses the per-host texts; ``serialised`` counts host
states serialised.
Only a socket whose send blocks for ``SEND_TIMEOUT`` is closed (1013, "too slow").
At shutdown ``close_all()`` ends every socket with a close frame (1001, going away), so that
browsers reconnect instead of seeing a dropped connection.

Authorization: each socket has the principal of its session. The snapshot and every event are
filtered with ``authz.scope_of`` (the set of visible host ids, read in SQL when the socket opens
and again whenever ``authz.scope_changed`` announces a membership change — in this process, or
from the users CLI through PostgreSQL NOTIFY (``Relay.watch_notifications``) — and every 30 s
at the latest: hosts that left the scope get a ``removed`` message at once, hosts that entered
it a ``change`` with their state).
A user who is disabled or deleted meanwhile is disconnected (close code 4403), and so is a
socket whose session ended (4401: logged out, revoked by an admin or a role or group change,
expired, rotated; the browser reconnects with its current cookie or goes to the login). Jobs
are followed only when visible to the principal, scans only by roles that may discover.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import logging
from typing import Any

import trio
import trio.lowlevel
from starlette.websockets import WebSocket, WebSocketDisconnect

from storage import Database, DatabaseUnavailable, session_active, visible_host_ids
from storage.display import registered_addresses
from storage.principals import ScopeChangeListener

from . import authz
from .api import scan_json
from .auth import hash_token
from .authz import Action, Principal, Role, may, scope_of
from .handle import Missing, SystemHandle
from .serialize import to_json
from .services import System, principal
from .services import jobs as job_service

log = logging.getLogger(__name__)

SEND_TIMEOUT = 5.0
MAX_CLIENT_MESSAGE = 1024  # characters; the largest message a page sends is ~60
GOING_AWAY = 1001
NOT_ALLOWED = 4403
LOGGED_OUT = 4401  # the socket's session ended (logout, revoked, expired, rotated)
RECHECK_EVERY = 30.0  # seconds: a socket re-checks its session and scope at least this often
FLUSH_EVERY = 0.1  # seconds: a socket sends its coalesced changes at most this often
PAGE_SIZE = 500  # hosts per snapshot page
SERIALISE_BATCH = 100  # host states serialised between two checkpoints


def _flat_json(snapshot: Any) -> Any:
    """A host state as JSON-ready values, like ``to_json`` but for a flat dataclass (every
    field a scalar, an enum or a datetime) without its recursion: the relay serialises every
    host of the fleet for a snapshot. Anything else falls back to ``to_json``."""
    out: dict[str, Any] = {}
    for name in _field_names(type(snapshot)):
        value = getattr(snapshot, name)
        if value is None or isinstance(value, bool | int | float | str):
            out[name] = value
        elif isinstance(value, enum.Enum):
            out[name] = value.value
        elif isinstance(value, dt.datetime):
            out[name] = value.isoformat()
        else:
            out[name] = to_json(value)
    return out


_FIELDS: dict[type, tuple[str, ...]] = {}


def _field_names(kind: type) -> tuple[str, ...]:
    names = _FIELDS.get(kind)
    if names is None:
        names = _FIELDS[kind] = tuple(f.name for f in dataclasses.fields(kind))
    return names


class _Page:
    """One page of the whole fleet's snapshot: the host states it was built from (in host id
    order) and their JSON objects joined with ", " (the inside of the page's array)."""

    __slots__ = ("hosts", "states")

    def __init__(self, states: list[Any], hosts: str) -> None:
        self.states = states
        self.hosts = hosts

    def built_from(self, states: list[Any]) -> bool:
        return len(states) == len(self.states) and all(
            a is b for a, b in zip(states, self.states, strict=True)
        )


class _Dirty:
    """The changes a socket has not sent yet: the latest one per host (newer replace older),
    or ``resync``: send a whole fresh snapshot instead."""

    def __init__(self) -> None:
        self.latest: dict[int, Any] = {}
        self.resync = False
        self.ready = trio.Event()

    def put(self, change: Any) -> None:
        self.latest[change.snapshot.host_id] = change
        self.ready.set()

    def start_over(self) -> None:
        self.latest.clear()
        self.resync = True
        self.ready.set()

    def take(self) -> tuple[list[Any], bool]:
        batch, resync = list(self.latest.values()), self.resync
        self.latest, self.resync, self.ready = {}, False, trio.Event()
        return batch, resync


class _Subscriber:
    """One socket's principal, its session and the host ids it may see (None: every host)."""

    def __init__(self, who: Principal, token: str, generation: int) -> None:
        self.who = who
        self.token_hash = hash_token(token)
        self.visible: set[int] | None = None
        self.generation = generation  # the scope generation ``visible`` was read for
        self.reloaded = trio.Event()  # set (and replaced) after each re-read
        # scope-change messages wait for the first page of the snapshot being sent (replaced
        # at the start of every snapshot, resyncs included)
        self.first_page_sent = trio.Event()

    def snapshot_started(self) -> None:
        """A snapshot (the first or a resync) starts: scope-change messages wait for its first
        page, which replaces the browser's state (one sent before it, for a host this snapshot
        leaves out, would be lost)."""
        started, self.first_page_sent = self.first_page_sent, trio.Event()
        started.set()  # its waiters wait again, for the new one

    async def first_page(self) -> None:
        """Wait until the first page of the latest snapshot is sent."""
        while True:
            event = self.first_page_sent
            await event.wait()
            if event is self.first_page_sent:
                return

    def reloaded_for(self, generation: int) -> None:
        self.generation = generation
        self.reloaded.set()
        self.reloaded = trio.Event()

    def sees(self, host_id: int) -> bool:
        return self.visible is None or host_id in self.visible


class Relay:
    def __init__(
        self,
        handle: SystemHandle,
        db: Database,
        buffer: int = 256,
        *,
        operators_see_ungrouped: bool = False,
        idle_timeout: dt.timedelta | None = None,
    ) -> None:
        self.handle = handle
        self.db = db
        self.idle_timeout = idle_timeout
        self.recheck_every = RECHECK_EVERY
        self.sys = System(handle, db)
        self.operators_see_ungrouped = operators_see_ungrouped
        self.buffer = buffer
        self.connected = 0
        self.dropped = 0  # sockets closed because a send blocked for SEND_TIMEOUT
        self.resyncs = 0  # fresh snapshots sent after a burst outran a socket's collector
        self.snapshots_sent = 0  # snapshots (first and resyncs) sent, each in pages
        self.snapshot_pages = 0  # snapshot pages sent
        self.pages_reused = 0  # whole-fleet pages sent as built for an earlier socket
        self.serialised = 0  # host states serialised to JSON
        self.page_size = PAGE_SIZE
        self._pages: list[_Page] = []  # the whole fleet's latest pages (for unscoped sockets)
        self.flush_every = FLUSH_EVERY
        self._texts: dict[int, tuple[Any, str]] = {}  # host id -> (state, its JSON)
        self.followers = 0  # scan followers running, over every socket
        self._closing = trio.Event()
        self._disconnected = trio.Event()

    async def close_all(self, timeout: float = 5.0) -> int:
        """Close every relay WebSocket with a close frame (1001) and refuse new ones; wait at
        most ``timeout`` seconds for them to end. Returns how many were open."""
        count = self.connected
        self._closing.set()
        with trio.move_on_after(timeout):
            while self.connected:
                await self._disconnected.wait()
        return count

    async def _forward_until_closing(self, scope: trio.CancelScope) -> None:
        await self._closing.wait()
        scope.cancel()

    async def endpoint(self, websocket: WebSocket) -> None:
        await websocket.accept()
        self.connected += 1
        try:
            if self._closing.is_set():
                await websocket.close(code=GOING_AWAY, reason="server shutting down")
                return
            who = principal(websocket)
            if who.role is Role.NONE:
                await websocket.close(code=NOT_ALLOWED, reason="not allowed")
                return
            generation = authz.scope_generation(self.db)
            token = websocket.scope.get("state", {}).get("session_token", "")
            sub = _Subscriber(who, token, generation)
            with self.handle.subscribe(self._subscription_buffer()) as changes:
                await self._load_visible(sub)
                dirty = _Dirty()
                dirty.start_over()  # the first thing sent: the snapshot, in pages
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._listen, websocket, nursery, sub)
                    nursery.start_soon(self._follow_scope, websocket, sub, generation, nursery)
                    nursery.start_soon(self._collect, changes, dirty)
                    with trio.CancelScope() as forwarding:
                        nursery.start_soon(self._forward_until_closing, forwarding)
                        await self._forward(websocket, sub, dirty)
                    if forwarding.cancelled_caught:  # shutting down
                        with trio.move_on_after(SEND_TIMEOUT):
                            await websocket.close(code=GOING_AWAY, reason="server shutting down")
                    else:  # a send blocked for SEND_TIMEOUT: the client is gone or stuck
                        self.dropped += 1
                        await websocket.close(code=1013, reason="too slow; reconnect")
                    nursery.cancel_scope.cancel()
        except (WebSocketDisconnect, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.connected -= 1
            if not self.connected:
                self._pages = []  # nobody to reuse them
            self._disconnected.set()
            self._disconnected = trio.Event()

    def _subscription_buffer(self) -> int:
        """Room for two changes of every host between two runs of a socket's collector (a
        channel's buffer costs memory only while it holds changes)."""
        return max(self.buffer, 2 * len(self.handle.snapshots()))

    def _host_text(self, snapshot: Any) -> str:
        """A host state's JSON, serialised once for every socket (states are immutable: a
        new state is a new object)."""
        cached = self._texts.get(snapshot.host_id)
        if cached is not None and cached[0] is snapshot:
            return cached[1]
        text = json.dumps(_flat_json(snapshot))
        self.serialised += 1
        self._texts[snapshot.host_id] = (snapshot, text)
        return text

    def _fleet_page(self, index: int, states: list[Any]) -> str:
        """The inside of page ``index`` of the whole fleet, built from ``states``: the page
        kept from an earlier socket when it was built from the very same states."""
        if index < len(self._pages) and self._pages[index].built_from(states):
            self.pages_reused += 1
            return self._pages[index].hosts
        page = _Page(states, ", ".join(self._host_text(s) for s in states))
        if index < len(self._pages):
            self._pages[index] = page
        else:
            self._pages.append(page)
        return page.hosts

    async def _serialise(self, states: list[Any]) -> None:
        """Serialise the states not cached yet, yielding to other tasks every
        ``SERIALISE_BATCH`` hosts (a page is then built from the cache without stalling)."""
        done = 0
        for snapshot in states:
            cached = self._texts.get(snapshot.host_id)
            if cached is None or cached[0] is not snapshot:
                self._host_text(snapshot)
                done += 1
                if done % SERIALISE_BATCH == 0:
                    await trio.lowlevel.checkpoint()

    async def _send_snapshot(self, websocket: WebSocket, sub: _Subscriber) -> bool:
        """Send the hosts ``sub`` may see as they are now, in pages of ``page_size``, building
        each page just before sending it and yielding to other tasks between pages. Returns
        False if a send blocked for ``SEND_TIMEOUT``."""
        sub.snapshot_started()
        snapshots = self.handle.snapshots()
        current = {s.host_id for s in snapshots}
        for host_id in [h for h in self._texts if h not in current]:
            del self._texts[host_id]  # removed hosts
        everything = sub.visible is None
        visible = snapshots if everything else [s for s in snapshots if sub.sees(s.host_id)]
        size = self.page_size
        pages = max(1, -(-len(visible) // size))
        self.snapshots_sent += 1
        for index in range(pages):
            states = visible[index * size : (index + 1) * size]
            await self._serialise(states)  # (nothing to do for states serialised already)
            if everything:
                hosts = self._fleet_page(index, states)
            else:
                hosts = ", ".join(self._host_text(s) for s in states if sub.sees(s.host_id))
            kind = "snapshot" if index == 0 else "snapshot_page"
            text = (f'{{"type": "{kind}", "page": {index + 1}, "pages": {pages}, '
                    f'"hosts": [{hosts}]}}')  # fmt: skip
            with trio.move_on_after(SEND_TIMEOUT) as scope:
                await websocket.send_text(text)
            if scope.cancelled_caught:
                return False
            self.snapshot_pages += 1
            sub.first_page_sent.set()
            await trio.lowlevel.checkpoint()
        if everything:
            del self._pages[pages:]  # the fleet shrank
        return True

    async def _collect(self, changes: trio.MemoryReceiveChannel[Any], dirty: _Dirty) -> None:
        """Fold every change into the socket's dirty set (never waits for the socket). If the
        subscription ends (a burst overflowed its buffer before this task ran), subscribe
        again and have a fresh snapshot sent."""
        async for change in changes:
            dirty.put(change)
        while True:
            self.resyncs += 1
            with self.handle.subscribe(self._subscription_buffer()) as again:
                dirty.start_over()
                async for change in again:
                    dirty.put(change)

    async def _forward(self, websocket: WebSocket, sub: _Subscriber, dirty: _Dirty) -> None:
        """Send the dirty set at most every ``flush_every`` seconds; return if a send blocks
        for ``SEND_TIMEOUT``."""
        while True:
            await dirty.ready.wait()
            # A scope change was announced and its re-read is pending: wait for it, so that
            # a host that just left is not forwarded.
            while authz.scope_generation(self.db) != sub.generation:
                await sub.reloaded.wait()
            batch, resync = dirty.take()
            if resync and not await self._send_snapshot(websocket, sub):
                return
            texts = []
            for change in [] if resync else batch:
                host_id = change.snapshot.host_id
                if not sub.sees(host_id):
                    continue
                if change.removed:
                    self._texts.pop(host_id, None)
                    if sub.visible is not None:
                        sub.visible.discard(host_id)
                    texts.append(json.dumps({"type": "removed", "host_id": host_id}))
                else:
                    host = self._host_text(change.snapshot)
                    texts.append('{"type": "change", "host": ' + host + "}")
            for text in texts:
                with trio.move_on_after(SEND_TIMEOUT) as scope:
                    await websocket.send_text(text)
                if scope.cancelled_caught:
                    return
            await trio.sleep(self.flush_every)

    async def watch_notifications(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """LISTEN for ``scope_changed`` notifications from other processes (the users CLI)
        and announce each as a scope change here: open sockets re-check their session and
        scope at once. Runs until cancelled, reconnecting after database errors (and then
        announcing a change, as one may have been missed); reports readiness after the first
        attempt to listen."""
        started = False
        while True:
            try:
                listener = await trio.to_thread.run_sync(ScopeChangeListener, self.db.conninfo)
            except DatabaseUnavailable as exc:
                log.warning("%s", exc)
                if not started:
                    started = True
                    task_status.started()
                await trio.sleep(5)
                continue
            try:
                if not started:
                    started = True
                    task_status.started()
                while True:
                    if await trio.to_thread.run_sync(listener.wait, 1.0, abandon_on_cancel=True):
                        authz.scope_changed(self.db)
            except DatabaseUnavailable as exc:
                log.warning("%s", exc)
                await trio.sleep(1)
                authz.scope_changed(self.db)
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(listener.close)

    async def _load_visible(self, sub: _Subscriber) -> None:
        scope = scope_of(sub.who)
        sub.visible = None if scope.all_hosts else await self.db.run(visible_host_ids, scope)

    async def _follow_scope(
        self, websocket: WebSocket, sub: _Subscriber, generation: int, nursery: trio.Nursery
    ) -> None:
        """On every scope change (announced in this process, or by another one through
        ``storage.principals.notify_scope_changed``), and every ``recheck_every`` seconds at
        the latest (sessions also end by expiry, idleness and pruning, which nothing
        announces): re-read the principal, its session and its visible hosts; tell the
        browser which hosts left (``removed``) and entered (``change``) its view at once.
        While a re-read is pending the forwarding waits for it (no event of a host that
        just left goes out)."""
        while True:
            with trio.move_on_after(self.recheck_every):
                generation = await authz.wait_scope_changed(self.db, generation)
            sub.who = await authz.load(
                self.db, sub.who.user_id, operators_see_ungrouped=self.operators_see_ungrouped
            )
            if not await self.db.run(session_active, sub.token_hash, self.idle_timeout):
                await websocket.close(code=LOGGED_OUT, reason="session ended")
                nursery.cancel_scope.cancel()
                return
            if sub.who.role is Role.NONE:
                await websocket.close(code=NOT_ALLOWED, reason="not allowed")
                nursery.cancel_scope.cancel()
                return
            before = sub.visible
            await self._load_visible(sub)
            sub.reloaded_for(generation)
            after = sub.visible
            if before == after:
                continue
            await sub.first_page()  # never before the (latest) snapshot's first page
            everything = {s.host_id for s in self.handle.snapshots()}
            old = everything if before is None else before
            new = everything if after is None else after
            for host_id in sorted(old - new):
                await websocket.send_text(json.dumps({"type": "removed", "host_id": host_id}))
            for host_id in sorted(new - old):
                snapshot = self.handle.snapshot(host_id)
                if snapshot is not None:
                    host = self._host_text(snapshot)
                    await websocket.send_text('{"type": "change", "host": ' + host + "}")

    async def _listen(self, websocket: WebSocket, nursery: trio.Nursery, sub: _Subscriber) -> None:
        follower = trio.CancelScope()
        job_follower = trio.CancelScope()
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    raise WebSocketDisconnect(message.get("code", 1000))
                text = message.get("text")
                # A browser sends only small JSON objects: anything else (binary, oversized,
                # nested past the parser's recursion limit) is ignored, the socket kept.
                if not isinstance(text, str) or len(text) > MAX_CLIENT_MESSAGE:
                    continue
                try:
                    data = json.loads(text)
                except (ValueError, RecursionError):
                    continue
                if isinstance(data, dict) and data.get("action") == "watch_job":
                    job_id = data.get("job_id")
                    if (
                        isinstance(job_id, int)
                        and not isinstance(job_id, bool)
                        and await self._job_visible(sub, job_id)
                    ):
                        job_follower.cancel()  # one job per socket, like scans
                        job_follower = trio.CancelScope()
                        nursery.start_soon(self._follow_job, websocket, job_id, job_follower)
                if isinstance(data, dict) and data.get("action") == "watch_scan":
                    scan_id = data.get("scan_id")
                    if (
                        isinstance(scan_id, int)
                        and not isinstance(scan_id, bool)
                        and may(sub.who, Action.DISCOVER)
                    ):
                        follower.cancel()  # one follower per socket: the new one replaces it
                        follower = trio.CancelScope()
                        nursery.start_soon(self._follow_scan, websocket, scan_id, follower)
        except (WebSocketDisconnect, RuntimeError):
            nursery.cancel_scope.cancel()

    async def _job_visible(self, sub: _Subscriber, job_id: int) -> bool:
        try:
            await job_service.get(self.sys, sub.who, job_id)
        except Missing:
            return False
        return True

    async def _follow_job(self, websocket: WebSocket, job_id: int, scope: trio.CancelScope) -> None:
        """``{"type": "job", "job_id", "status"}`` whenever the job's roll-up changes (the job
        page reloads once instead of polling)."""
        with scope, self.handle.subscribe_jobs() as changes:
            async for change in changes:
                if change.job_id == job_id:
                    message = {"type": "job", "job_id": job_id, "status": change.status}
                    await websocket.send_text(json.dumps(message))

    async def _follow_scan(
        self, websocket: WebSocket, scan_id: int, scope: trio.CancelScope
    ) -> None:
        with scope:
            self.followers += 1
            try:
                while True:
                    scan: Any = await self.handle.discovery(scan_id)
                    if scan is None:
                        return
                    # which finds are registered hosts already (the page marks them)
                    addresses = [f.address for f in scan.found]
                    known = await self.db.run(registered_addresses, addresses)
                    message = {"type": "scan", **scan_json(scan), "registered": to_json(known)}
                    await websocket.send_text(json.dumps(message))
                    if scan.progress.done:
                        return
                    await self.handle.wait_discovery_change(scan_id)
            finally:
                self.followers -= 1
