// Runs before the first paint (not deferred) so a dark-mode user never sees a light flash.
// A file of its own because the Content-Security-Policy allows no inline script.
document.documentElement.dataset.theme = localStorage.getItem("theme") || "auto";
