// Live updates for the server-rendered pages: one WebSocket to /api/v1/live, elements marked
// data-live-host / data-field are updated in place. Plain JavaScript, no build step.
"use strict";
(function () {
  const hosts = new Map(); // the latest whole snapshot (and the changes since)
  let whole = false; // hosts holds a whole snapshot (the counts are computed from it)
  // A snapshot arriving in pages: its hosts so far, swapped in at the last page, so that the
  // counts keep their totals (server-rendered, or the previous snapshot's) meanwhile.
  let incoming = null;
  const csrf = document.querySelector('meta[name="csrf-token"]');
  const status = document.getElementById("live-status");
  const zoneMeta = document.querySelector('meta[name="time-zone"]');
  const TZ = (zoneMeta && zoneMeta.content) || "UTC";
  let retry = 500;
  let failures = 0; // consecutive failed connection attempts
  let leaving = false; // the page is being left: a closing socket says nothing

  // The badge starts neutral ("connecting…"); "offline" only once a reconnect failed too.
  function setStatus(state) {
    if (!status) return;
    status.textContent = { on: "live", off: "offline", wait: "reconnecting…" }[state];
    status.className = "live" + (state === "wait" ? "" : " " + state);
  }

  // The one time format (web/freshness.py format_time): the user's zone, HH:MM today,
  // else YYYY-MM-DD HH:MM; UTC on hover (utcText).
  function clockIn(zone) {
    return new Intl.DateTimeFormat("sv-SE", { timeZone: zone, year: "numeric", month: "2-digit",
      day: "2-digit", hour: "2-digit", minute: "2-digit", hour12: false });
  }
  let clock;
  try { clock = clockIn(TZ); } catch (e) { clock = clockIn("UTC"); } // a zone this browser lacks: UTC, never a dead script
  function fmtClock(value) {
    if (!value) return "—";
    const text = clock.format(new Date(value)), today = clock.format(new Date()).slice(0, 10);
    return text.slice(0, 10) === today ? text.slice(11) : text;
  }
  function utcText(value) {
    return value ? new Date(value).toISOString().slice(0, 19).replace("T", " ") + " UTC" : "";
  }
  function ago(value) { // web/freshness.py age
    if (!value) return "never";
    const s = Math.floor((Date.now() - Date.parse(value)) / 1000);
    if (s < 0) return "just now";
    if (s >= 86400) return Math.floor(s / 86400) + " d ago";
    if (s >= 3600) return Math.floor(s / 3600) + " h ago";
    if (s >= 60) return Math.floor(s / 60) + " min ago";
    return s + " s ago";
  }

  // A host as every page shows it: mirrors web/freshness.py host_view (keep them in step).
  function conditionOf(s) { // web/freshness.py current_condition
    const condition = s.condition || "unknown";
    if ((condition === "healthy" || condition === "degraded") && s.stale_after && Date.now() > Date.parse(s.stale_after)) return "stale";
    return condition;
  }

  function hostView(s) {
    const condition = conditionOf(s);
    const parts = [];
    if (condition === "unknown") parts.push("never contacted");
    else if (condition === "stale" && s.stale_by_patches) parts.push(["no successful patch poll since ", { at: s.patches_as_of }]);
    else if (condition === "stale") parts.push(["no successful poll since ", { at: s.health_as_of }]);
    else if (condition === "paused") parts.push("paused: not polled");
    else if (condition === "halted") {
      const said = String(s.summary || "halted").split(" · ")[0];
      parts.push(s.last_error && said.indexOf(s.last_error) < 0 ? said + ": " + s.last_error : said);
    }
    if (s.failing_since && condition !== "paused" && condition !== "halted") {
      parts.push(["poll failing since ", { at: s.failing_since }, " (" + (s.retries_used || 0) + " of " +
        (s.retries_total || 0) + " retries"].concat(s.next_attempt ? [", next ", { at: s.next_attempt }, ")"] : [")"]));
    }
    if (s.patch_failing_since && !s.failing_since && condition !== "paused" && condition !== "halted") {
      parts.push(["patch poll failing since ", { at: s.patch_failing_since }, " (" + (s.patch_retries_used || 0) + " of " +
        (s.retries_total || 0) + " retries"].concat(s.patch_next_attempt ? [", next ", { at: s.patch_next_attempt }, ")"] : [")"]));
    }
    if ((condition === "healthy" || condition === "degraded" || condition === "unreachable") && s.health_since) {
      parts.push([condition + " since ", { at: s.health_since }]);
    }
    let detail = s.health_reason || "";
    if (!detail && s.failing_since) detail = s.last_error || "";
    if (detail && condition !== "healthy" && condition !== "halted") parts.push(detail);
    const ages = "health as of " + ago(s.health_as_of) + " · patches as of " + ago(s.patches_as_of);
    // parts: text, or lists of text and { at: instant } (shown as <time>, UTC on hover)
    const lines = parts.map(function (p) { return typeof p === "string" ? [p] : p; });
    const why = lines.map(function (line) {
      return line.map(function (x) { return typeof x === "string" ? x : fmtClock(x.at); }).join("");
    }).join("; ");
    return { condition: condition, why: why, lines: lines, ages: ages };
  }

  function fillWhy(el, lines) { // web/freshness.py HostView.why_html
    el.textContent = "";
    lines.forEach(function (line, i) {
      if (i) el.appendChild(document.createTextNode("; "));
      line.forEach(function (x) {
        if (typeof x === "string" || !x.at) { el.appendChild(document.createTextNode(typeof x === "string" ? x : "—")); return; }
        const t = document.createElement("time");
        t.dateTime = x.at; t.title = utcText(x.at); t.textContent = fmtClock(x.at);
        el.appendChild(t);
      });
    });
  }

  function renderView(s) {
    const id = s.host_id;
    const els = document.querySelectorAll('[data-host-condition="' + id + '"], [data-host-why="' + id + '"], [data-host-ages="' + id + '"]');
    if (!els.length) return; // not on this page: nothing to compute
    const v = hostView(s);
    els.forEach(function (el) {
      if (el.hasAttribute("data-host-why")) { if (el.textContent !== v.why) fillWhy(el, v.lines); return; }
      if (el.hasAttribute("data-host-ages")) { if (el.textContent !== v.ages) el.textContent = v.ages; return; }
      if (el.textContent === v.condition) return;
      el.textContent = v.condition; el.className = "badge " + v.condition;
      el.classList.remove("flash"); void el.offsetWidth; el.classList.add("flash");
    });
  }

  function fmtDuration(value) {
    if (value === null || value === undefined) return "—";
    const d = Math.floor(value / 86400), h = Math.floor((value % 86400) / 3600), m = Math.floor((value % 3600) / 60);
    return (d ? d + " d " : "") + h + " h " + m + " min";
  }

  function renderJobRow(snapshot) {
    if (!snapshot.job_row) return;
    const el = document.querySelector('[data-job-row="' + snapshot.job_row + '"]');
    if (!el || el.textContent === snapshot.job_state) return;
    el.textContent = snapshot.job_state;
    el.className = "badge row-" + snapshot.job_state;
    el.classList.add("flash");
    const rows = document.querySelectorAll("[data-job-row]");
    const done = Array.from(rows).filter(function (r) {
      return ["succeeded", "failed", "cancelled", "skipped"].indexOf(r.textContent) >= 0; }).length;
    const bar = document.getElementById("job-progress");
    if (bar) bar.value = done;
    // Every host is final: reload once to show the job's roll-up and the error details.
    if (done === rows.length && !window.__reloading) { window.__reloading = true; setTimeout(function () { location.reload(); }, 800); }
  }

  function render(snapshot) {
    renderJobRow(snapshot);
    renderView(snapshot);
    document.querySelectorAll('[data-live-host="' + snapshot.host_id + '"]').forEach(function (el) {
      const field = el.dataset.field;
      let value = snapshot[field];
      if (el.hasAttribute("data-time")) { el.title = utcText(value); value = fmtClock(value); }
      else if (el.hasAttribute("data-duration")) value = fmtDuration(value);
      else if (value === "" || value === null || value === undefined) value = "—";
      const text = String(value).replace(/_/g, field === "phase" ? " " : "_");
      if (el.textContent !== text) {
        el.textContent = text;
        if (field === "health") el.className = "badge " + value;
        el.classList.remove("flash"); void el.offsetWidth; el.classList.add("flash");
      }
    });
  }

  function counts() {
    // By condition (never-contacted hosts under "pending"): a failing or stale host is not healthy.
    const totals = { healthy: 0, degraded: 0, failing: 0, halted: 0, stale: 0, unreachable: 0, pending: 0, paused: 0 };
    hosts.forEach(function (s) {
      const c = conditionOf(s), key = c === "unknown" ? "pending" : c;
      totals[key] = (totals[key] || 0) + 1;
    });
    Object.keys(totals).forEach(function (k) {
      const el = document.querySelector('[data-count="' + k + '"]');
      if (el && hosts.size) el.textContent = totals[k];
    });
  }

  // A host's display name and address (the snapshot has its name only): asked once per host.
  const labels = new Map();
  function hostLabel(id) {
    if (!labels.has(id)) {
      labels.set(id, fetch("/api/v1/hosts/" + id, { headers: { accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (h) { return h ? { name: h.display_name || h.name, address: h.address || "" } : null; })
        .catch(function () { return null; }));
    }
    return labels.get(id);
  }

  function activity(snapshot, previous) {
    const list = document.getElementById("activity");
    if (!list || !previous) return;
    // Only what an operator acts on: a host's condition or its job's state changed (not every
    // poll's phase), each with its time.
    const jobMoved = snapshot.job_row && (snapshot.job_row !== previous.job_row || snapshot.job_state !== previous.job_state);
    if (conditionOf(previous) === conditionOf(snapshot) && !jobMoved) return;
    const before = hostView(previous), now = hostView(snapshot);
    if (list.firstElementChild && list.firstElementChild.classList.contains("muted")) list.innerHTML = "";
    const li = document.createElement("li");
    const at = new Date().toISOString();
    const t = document.createElement("time");
    t.dateTime = at; t.title = utcText(at); t.textContent = fmtClock(at);
    li.appendChild(t); li.appendChild(document.createTextNode(" "));
    const a = document.createElement("a");
    a.href = "/hosts/" + snapshot.host_id;
    a.textContent = snapshot.name;
    li.appendChild(a);
    hostLabel(snapshot.host_id).then(function (label) {
      if (!label) return;
      a.textContent = label.name;
      if (label.address && label.address !== label.name) {
        const small = document.createElement("span");
        small.className = "muted small"; small.textContent = " " + label.address;
        a.after(small);
      }
    });
    if (before.condition !== now.condition) { // its reason's times as <time>, UTC on hover
      li.appendChild(document.createTextNode(" " + now.condition + (now.why ? " · " : "")));
      const why = document.createElement("span");
      fillWhy(why, now.lines);
      li.appendChild(why);
    } else li.appendChild(document.createTextNode(" " + snapshot.job + " " + snapshot.job_state));
    list.insertBefore(li, list.firstChild);
    while (list.children.length > 50) list.removeChild(list.lastChild);
  }

  function scanUpdate(message) {
    const box = document.getElementById("scan");
    if (!box || String(message.scan_id) !== box.dataset.scanId) return;
    const p = message.progress;
    const bar = document.getElementById("scan-progress");
    bar.max = p.total; bar.value = p.probed;
    ["probed", "total", "found"].forEach(function (k) { box.querySelector('[data-scan="' + k + '"]').textContent = p[k]; });
    box.querySelector('[data-scan="state"]').textContent = p.cancelled ? "(cancelled)" : p.done ? "(finished)" : "(running)";
    if (p.done) { const c = document.getElementById("cancel-scan"); if (c) c.remove(); }
    const body = document.getElementById("scan-results");
    const seen = new Set(Array.from(body.querySelectorAll("input")).map(function (i) { return i.value; }));
    // Every update says which finds are registered hosts already (the relay reads them):
    // those are marked and linked, and "select all", ticked before they appeared, ticks only
    // the others (registering an agent again is refused anyway).
    const registered = message.registered || {};
    const allFound = document.getElementById("select-all-found");
    message.found.forEach(function (f) {
      if (seen.has(f.address)) return;
      const known = registered[f.address];
      const tr = document.createElement("tr");
      const box = document.createElement("input");
      box.type = "checkbox"; box.name = "address"; box.value = f.address; box.setAttribute("aria-label", "Select " + f.address);
      box.checked = Boolean(allFound && allFound.checked && !known);
      const td = document.createElement("td"); td.appendChild(box); tr.appendChild(td);
      [f.address, f.hostname, f.os, f.agent_version].forEach(function (v) { const c = document.createElement("td"); c.textContent = v; tr.appendChild(c); });
      const cell = document.createElement("td");
      cell.dataset.registered = f.address;
      if (known) {
        tr.classList.add("registered");
        const link = document.createElement("a"); link.href = "/hosts/" + known.host_id; link.textContent = known.name;
        cell.appendChild(link);
      } else {
        const no = document.createElement("span"); no.className = "muted"; no.textContent = "no";
        cell.appendChild(no);
      }
      tr.appendChild(cell);
      body.appendChild(tr);
    });
  }

  function jobChanged(status) {
    const job = document.getElementById("job-status");
    if (job && status && job.textContent.trim() !== status) location.reload();
  }

  function connect() {
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/v1/live");
    ws.onopen = function () {
      setStatus("on"); retry = 500; failures = 0;
      const scan = document.getElementById("scan");
      if (scan) ws.send(JSON.stringify({ action: "watch_scan", scan_id: Number(scan.dataset.scanId) }));
      // A job page follows its job's roll-up through the relay and reloads once when it
      // changes (never in a loop); the status may have changed before the socket opened.
      const job = document.getElementById("job-status");
      if (job) {
        ws.send(JSON.stringify({ action: "watch_job", job_id: Number(job.dataset.jobId) }));
        fetch("/api/v1/jobs/" + job.dataset.jobId, { headers: { accept: "application/json" } })
          .then(function (r) { return r.ok ? r.json() : null; })
          .then(function (j) { const d = j && (j.data || j); jobChanged(d && d.status); });
      }
    };
    ws.onmessage = function (event) {
      const message = JSON.parse(event.data);
      if (message.type === "snapshot" || message.type === "snapshot_page") {
        // "snapshot" (page 1) starts a new state, "snapshot_page" adds to it; the last page
        // replaces the state (then counted once). Changes meanwhile go to both.
        if (message.type === "snapshot") incoming = { hosts: new Map(), changed: new Set() };
        if (!incoming) return;
        const next = incoming;
        message.hosts.forEach(function (s) {
          if (next.changed.has(s.host_id)) return; // a change or removal after it is newer
          next.hosts.set(s.host_id, s); render(s);
        });
        if (message.page < message.pages) return;
        incoming = null; whole = true;
        hosts.clear();
        next.hosts.forEach(function (s, id) { hosts.set(id, s); });
        counts();
      } else if (message.type === "change") {
        const id = message.host.host_id;
        const previous = (incoming && incoming.hosts.get(id)) || hosts.get(id);
        if (incoming) { incoming.hosts.set(id, message.host); incoming.changed.add(id); }
        if (whole) hosts.set(id, message.host);
        render(message.host); counts(); activity(message.host, previous);
      } else if (message.type === "removed") {
        if (incoming) { incoming.hosts.delete(message.host_id); incoming.changed.add(message.host_id); }
        hosts.delete(message.host_id); counts();
      } else if (message.type === "scan") {
        scanUpdate(message);
      } else if (message.type === "job") {
        jobChanged(message.status);
      }
    };
    ws.onclose = function () {
      if (leaving) return;
      failures += 1;
      setStatus(failures > 1 ? "off" : "wait");
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    };
  }

  document.addEventListener("DOMContentLoaded", function () {
    const toggle = document.getElementById("theme-toggle");
    if (toggle) toggle.addEventListener("click", function () {
      const next = { auto: "dark", dark: "light", light: "auto" }[document.documentElement.dataset.theme] || "auto";
      document.documentElement.dataset.theme = next;
      localStorage.setItem("theme", next);
    });
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) { if (!confirm(form.dataset.confirm)) event.preventDefault(); });
    });
    document.querySelectorAll("button[data-confirm-submit]").forEach(function (b) {
      b.form.addEventListener("submit", function (event) { if (!confirm(b.dataset.confirmSubmit)) event.preventDefault(); });
    });
    const allFound = document.getElementById("select-all-found");
    if (allFound) allFound.addEventListener("change", function () {
      // Only agents not registered yet: registering one again is refused anyway.
      document.querySelectorAll('#scan-results tr:not(.registered) input[name="address"]').forEach(function (b) { b.checked = allFound.checked; });
    });
    const all = document.getElementById("select-all");
    if (all) all.addEventListener("change", function () {
      document.querySelectorAll('input[name="host_id"]').forEach(function (b) { b.checked = all.checked; });
    });
    window.addEventListener("pagehide", function () { leaving = true; });
    // Time passing publishes nothing: data ages grow and hosts turn stale here.
    setInterval(function () {
      document.querySelectorAll("[data-host-condition]").forEach(function (el) {
        const s = hosts.get(Number(el.dataset.hostCondition)); if (s) renderView(s);
      });
      counts();
    }, 5000);
    if (csrf) connect();
  });
})();
