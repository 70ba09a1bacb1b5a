// The window editor: asks the API about the draft as it changes and shows the rule in words,
// the next occurrences, and each problem beside its field (the API answers a draft's problems
// with 200, so nothing is logged in the console while the form is incomplete).
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

    function show(problems) {
      Object.keys(live).forEach(function (k) { if (!problems[k]) { live[k].remove(); delete live[k]; } });
      Object.keys(problems).forEach(function (k) {
        if (document.getElementById("err-" + k)) {
          if (!live[k]) { document.getElementById("err-" + k).textContent = problems[k]; return; }
        }
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
          preview.textContent = j.occurrences.map(function (o) { return o.start.slice(0, 16).replace("T", " "); }).join(" · ") || (Object.keys(j.problems || {}).length ? "—" : "none in the next 120 days");
        })
        .catch(function () { preview.textContent = "—"; });
    }
    form.addEventListener("change", update);
    update();
  });
})();
