// Kubeflow's central dashboard shows its apps in an iframe and tells them the namespace it has selected
// (its public/library.js): the app posts {type: "iframe-connected"} to its parent; the dashboard answers
// {type: "parent-connected"}, then {type: "namespace-selected", value: "<namespace>"} now and on every
// change ({type: "all-namespaces", value: [...]} when it shows them all, which these pages cannot).
// Loaded only when GATEWAY_DASHBOARD_ORIGIN is set, and listening to that origin's parent frame only:
// another page's messages never switch the namespace. Not framed, the page is left as it is.
"use strict";

(() => {
  const meta = document.querySelector('meta[name="dashboard-origin"]');
  if (!meta || window.parent === window) return;
  const dashboard = meta.content;

  // As if the person had picked it in the page's own selector, which reloads the page for it; a
  // namespace this page does not offer (no role in it here) is left alone.
  function follow(namespace) {
    const select = document.querySelector('form select[name="ns"]');
    if (!select || select.value === namespace) return;
    if (!Array.from(select.options).some((option) => option.value === namespace)) return;
    select.value = namespace;
    select.form.submit();
  }

  window.addEventListener("message", (event) => {
    if (event.origin !== dashboard || event.source !== window.parent) return;
    const data = event.data;
    if (data && data.type === "namespace-selected" && typeof data.value === "string") follow(data.value);
  });
  window.parent.postMessage({ type: "iframe-connected" }, dashboard);
})();
