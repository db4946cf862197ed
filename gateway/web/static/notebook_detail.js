// The detail page's tabs (WAI-ARIA tabs pattern). Without JavaScript every panel shows, one after another.
"use strict";

(() => {
  const list = document.getElementById("detail-tabs");
  if (!list) return;
  const tabs = [...list.querySelectorAll('[role="tab"]')];

  function select(tab, focus = false) {
    for (const other of tabs) {
      const chosen = other === tab;
      other.setAttribute("aria-selected", String(chosen));
      other.tabIndex = chosen ? 0 : -1;
      document.getElementById(other.getAttribute("aria-controls")).hidden = !chosen;
    }
    if (focus) tab.focus();
    history.replaceState(null, "", `#${tab.getAttribute("aria-controls")}`);
  }

  list.addEventListener("click", (event) => {
    const tab = event.target.closest('[role="tab"]');
    if (tab) select(tab);
  });
  list.addEventListener("keydown", (event) => {
    const index = tabs.indexOf(document.activeElement);
    if (index < 0) return;
    const moves = { ArrowRight: 1, ArrowLeft: -1, Home: -index, End: tabs.length - 1 - index };
    if (!(event.key in moves)) return;
    event.preventDefault();
    select(tabs[(index + moves[event.key] + tabs.length) % tabs.length], true);
  });

  list.hidden = false;
  const wanted = tabs.find((tab) => `#${tab.getAttribute("aria-controls")}` === location.hash);
  select(wanted || tabs[0]);
})();
