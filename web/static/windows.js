// The window editor: asks the API about the draft as it changes and shows the rule in words,
// the next occurrences, and each problem beside its field (the API answers a draft's problems
// with 200, so nothing is logged in the console while the form is incomplete). A problem the
// server reported for a field (after a post) goes away once that field is changed or the draft
// no longer has it, and every one of them on a new submit (the answer reports afresh).
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    const form = document.getElementById("window-form");
    const csrf = document.querySelector('meta[name="csrf-token"]');
    if (!form || !csrf) return;
    const preview = document.getElementById("window-preview");
    const text = document.getElementById("window-text");
    const numbers = ["duration_minutes", "day_of_month", "nth"];
    const live = {};  // field → the message element this script added
    const served = {};  // field → a message the server rendered (err-FIELD), until it is fixed
    form.querySelectorAll('[id^="err-"]').forEach(function (el) {
      if (el.id !== "err-summary") served[el.id.slice(4)] = el;
    });
    // The fields whose server messages a change of this input answers.
    const answers = { target: ["target", "host_id", "group_id"] };
    const zoneMeta = document.querySelector('meta[name="time-zone"]');
    let clock = null;  // the user's zone (profile), as app.js's fmtClock shows times
    try {
      clock = new Intl.DateTimeFormat("sv-SE", { timeZone: (zoneMeta && zoneMeta.content) || "UTC",
        year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hour12: false });
    } catch (e) { clock = null; }
    function local(iso) { return clock ? clock.format(new Date(iso)) : iso.slice(0, 16).replace("T", " ") + " UTC"; }
    function utcText(iso) { return new Date(iso).toISOString().slice(0, 19).replace("T", " ") + " UTC"; }
    // The next occurrences as <time> elements: the user's zone, the UTC instant on hover.
    function occurrences(list) {
      preview.textContent = "";
      list.forEach(function (o, i) {
        if (i) preview.appendChild(document.createTextNode(" · "));
        const t = document.createElement("time");
        t.dateTime = o.start; t.title = utcText(o.start); t.textContent = local(o.start);
        preview.appendChild(t);
      });
    }

    function clearServed(key) {
      const el = served[key];
      if (el) {
        el.remove();
        delete served[key];
        const field = form.querySelector('[name="' + key + '"]');
        if (field) field.removeAttribute("aria-invalid");
      }
      const summary = document.getElementById("err-summary");
      if (summary) {
        summary.querySelectorAll('li[data-field="' + key + '"]').forEach(function (li) { li.remove(); });
        if (!summary.querySelector("li")) summary.remove();
      }
    }

    // The draft fields the preview judges: a server message on one of them it no longer
    // finds is stale (the others wait for their own field to change).
    const judged = ["recurrence", "start_date", "start_time", "duration_minutes", "timezone",
      "weekdays", "day_of_month", "short_month", "nth", "until", "auto_apply"];

    function show(problems) {
      Object.keys(live).forEach(function (k) { if (!problems[k]) { live[k].remove(); delete live[k]; } });
      judged.forEach(function (k) { if (!problems[k]) clearServed(k); });
      Object.keys(problems).forEach(function (k) {
        if (served[k]) { served[k].textContent = problems[k]; return; }
        const anchor = k === "weekdays" ? document.getElementById("w-weekdays") : form.querySelector('[name="' + k + '"]');
        if (!anchor) return;
        if (!live[k]) {
          live[k] = document.createElement("p");
          live[k].className = "error";
          live[k].id = "err-" + k;
          anchor.insertAdjacentElement("afterend", live[k]);
        }
        live[k].textContent = problems[k];
      });
    }

    function update() {
      // The API takes typed JSON (numbers, booleans, host_id/group_id), not form strings.
      const data = new FormData(form);
      const body = { weekdays: [], enabled: false, allow_reboot: false };
      data.forEach(function (v, k) {
        if (k === "csrf_token" || k === "target" || k === "name" || v === "") return;
        if (k === "weekdays") body.weekdays.push(Number(v));
        else if (k === "enabled" || k === "allow_reboot") body[k] = true;
        else if (numbers.indexOf(k) >= 0 && /^-?\d{1,9}$/.test(v)) body[k] = Number(v);
        else body[k] = v;
      });
      fetch("/api/v1/windows/preview", { method: "POST", headers: { "content-type": "application/json", "x-csrf-token": csrf.content }, body: JSON.stringify(body) })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (j) {
          if (!j) { preview.textContent = "—"; return; }
          show(j.problems || {});
          text.textContent = j.text || "not a usable window yet";
          if (j.occurrences.length) occurrences(j.occurrences);
          else preview.textContent = Object.keys(j.problems || {}).length ? "—" : "none in the next 120 days";
        })
        .catch(function () { preview.textContent = "—"; });
    }
    function edited(event) {
      const name = event.target && event.target.name;
      if (!name) return;
      (answers[name] || [name]).forEach(clearServed);
    }
    form.addEventListener("input", edited);
    form.addEventListener("change", function (event) { edited(event); update(); });
    form.addEventListener("submit", function () {
      Object.keys(served).forEach(clearServed);  // the answer reports every problem afresh
    });
    update();
  });
})();
