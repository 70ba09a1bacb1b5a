// The Deploy page: ticking a patch makes the job "only these packages"; only the Deploy button
// asks for a confirmation ("Show the plan" just shows the page again with the plan).
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    const form = document.getElementById("deploy-form");
    if (!form) return;
    const selection = document.getElementById("selection");
    const deploy = document.getElementById("deploy-button");
    // The plan shown is for the choices as they were: after a change, Deploy waits for it.
    const stale = function () {
      if (!deploy || deploy.disabled) return;
      deploy.disabled = true;
      deploy.textContent = "Show the plan for the new choices first";
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
      if (button && button.dataset.deployConfirm && !confirm(button.dataset.deployConfirm)) event.preventDefault();
    });
  });
})();
