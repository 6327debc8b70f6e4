/* The main menu on a narrow screen (a tablet): folded behind the "Menu" button instead of
   wrapping into several rows. Without this script the menu stays unfolded (and wraps). */
(function () {
  "use strict";
  const toggle = document.querySelector("[data-menu-toggle]");
  const topbar = toggle && toggle.closest(".topbar");
  if (!topbar) return;
  topbar.classList.add("menu-foldable");
  toggle.hidden = false;
  const close = () => {
    topbar.classList.remove("menu-open");
    toggle.setAttribute("aria-expanded", "false");
  };
  toggle.addEventListener("click", () => {
    const open = !topbar.classList.contains("menu-open");
    topbar.classList.toggle("menu-open", open);
    toggle.setAttribute("aria-expanded", String(open));
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && topbar.classList.contains("menu-open")) {
      close();
      toggle.focus();
    }
  });
})();
