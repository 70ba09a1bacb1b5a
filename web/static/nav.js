// The navigation menu on narrow screens: one button shows or hides the links (keyboard: the
// button is a real <button>, Escape closes the open menu and returns focus to it).
"use strict";
(function () {
  const header = document.querySelector("header.top");
  const button = document.getElementById("nav-toggle");
  if (!header || !button) return;
  function set(open) {
    header.classList.toggle("nav-open", open);
    button.setAttribute("aria-expanded", open ? "true" : "false");
  }
  button.addEventListener("click", function () { set(!header.classList.contains("nav-open")); });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && header.classList.contains("nav-open")) { set(false); button.focus(); }
  });
})();
