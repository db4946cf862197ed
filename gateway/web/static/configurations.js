// The Configurations page: CREATE posts the form as a PodDefault body; DELETE removes one. Both go
// through the JSON API (which decides and audits) and reload the page to show the result.
"use strict";

(() => {
  const section = document.getElementById("configurations");
  const form = document.getElementById("new-configuration");
  if (!section || !form) return;
  const api = `/api/namespaces/${encodeURIComponent(section.dataset.namespace)}/poddefaults`;
  const lines = (text) => text.split("\n").map((line) => line.trim()).filter(Boolean);

  function body() {
    const value = (name) => form.elements.namedItem(name).value;
    const env = lines(value("env")).map((line) => {
      const at = line.indexOf("=");
      return at < 0 ? { name: line, value: "" } : { name: line.slice(0, at).trim(), value: line.slice(at + 1) };
    });
    const secretMounts = lines(value("secretMounts")).map((line) => {
      const at = line.indexOf(":");
      return { secret: at < 0 ? line : line.slice(0, at).trim(), mountPath: at < 0 ? "" : line.slice(at + 1).trim() };
    });
    const envFromSecrets = value("envFromSecrets").split(",").map((name) => name.trim()).filter(Boolean);
    return { name: value("name").trim(), desc: value("desc"), env, secretMounts, envFromSecrets };
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    Gateway.banner("");
    try {
      await Gateway.call("POST", api, body());
      location.reload();
    } catch (err) {
      if (err.status !== 401) Gateway.banner(`The configuration was not created: ${err.message}`);
    }
  });

  section.addEventListener("click", async (event) => {
    const name = event.target.dataset && event.target.dataset.delete;
    if (!name || !confirm(`Delete the configuration ${name}? New servers can no longer choose it.`)) return;
    try {
      await Gateway.call("DELETE", `${api}/${encodeURIComponent(name)}`);
      location.reload();
    } catch (err) {
      if (err.status !== 401) Gateway.banner(`The configuration was not deleted: ${err.message}`);
    }
  });
})();
