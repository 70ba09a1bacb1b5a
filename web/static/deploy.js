// The Deploy page: ticking a patch makes the job "only these packages"; after any change the
// plan shown is marked as outdated until "Show the plan" computes it again (the job stores the
// plan computed when it is created, shown on its page); only Deploy asks for a confirmation.
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    const form = document.getElementById("deploy-form");
    if (!form) return;
    const selection = document.getElementById("selection");
    const deploy = document.getElementById("deploy-button");
    const summary = document.getElementById("plan-summary");
    let outdated = false;
    const stale = function () {
      // The digest binds Deploy to the plan shown; that plan is for earlier choices now, so
      // the confirmation below (which says so) is the check instead of a refusal.
      const digest = document.querySelector('input[name="plan_digest"]');
      if (digest) digest.value = "";
      if (outdated || !summary) return;
      outdated = true;
      summary.classList.add("outdated");
      summary.insertAdjacentText("afterbegin", "Outdated (the choices changed: show the plan again). ");
    };
    form.addEventListener("change", stale);
    document.querySelectorAll('input[name="patch"]').forEach(function (box) {
      box.addEventListener("change", function () {
        if (box.checked && selection) selection.value = "list";
        stale();
      });
    });
    form.addEventListener("submit", function (event) {
      const button = event.submitter;
      if (!button || !button.dataset.deployConfirm) return;
      const text = button.dataset.deployConfirm + (outdated ? " The plan shown is for earlier choices." : "");
      if (!confirm(text)) event.preventDefault();
    });
  });
})();
