// The Access page (one namespace, for its admins) and the Policies page (every rule, for
// cluster-admins): list rules, grant, revoke, and "who can, and why", over the policy JSON API.
// A rule is {"subject": "user:…" | "group:…", "namespace": "team-a" | "*", "role", "notebook"?, "effect"?}.
"use strict";

(() => {
  const page = document.querySelector("[data-page]");
  if (!page) return;
  const onAccess = page.dataset.page === "access";
  const namespace = page.dataset.namespace || "";
  const rows = document.getElementById("rules");
  const empty = document.getElementById("empty");
  let filters = new URLSearchParams();

  function element(tag, attrs = {}, text = "") {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    if (text) node.textContent = text;
    return node;
  }

  // Only the fields the API takes, so a rule read from a list can be sent back to revoke it.
  function ruleBody(rule) {
    const body = { subject: rule.subject, namespace: rule.namespace || namespace, role: rule.role };
    if (rule.notebook) body.notebook = rule.notebook;
    if (rule.effect && rule.effect !== "allow") body.effect = rule.effect;
    return body;
  }

  // How a rule reaches this namespace, for the Access page.
  function through(rule) {
    const how = rule.namespace === "*" ? "every namespace" : rule.subject.startsWith("group:") ? "group" : "directly";
    if (rule.source === "bootstrap") return `${how} (GATEWAY_BOOTSTRAP_ADMINS)`;
    return rule.editable === false ? `${how} (${fromKubeflow(rule)})` : how;
  }

  // Kubeflow's rules are read-only here: they change with the contributor UI or kubectl.
  function fromKubeflow(rule) {
    const kind = rule.source === "kubeflow-profile" ? "Profile" : "RoleBinding";
    return `Kubeflow ${kind} ${rule.location}`;
  }

  // Rules from GATEWAY_BOOTSTRAP_ADMINS, and on the Access page cluster-wide rules, are not this page's to revoke.
  function revocable(rule) {
    if (rule.source === "bootstrap" || rule.editable === false) return false;
    return !onAccess || rule.namespace === namespace;
  }

  function renderRules(rules) {
    rows.replaceChildren();
    for (const rule of rules) {
      const row = element("tr");
      const denied = rule.effect === "deny";
      const role = `${rule.role}${denied ? " (denied)" : ""}`;
      const cells = onAccess
        ? [rule.subject, role, rule.notebook || "all", through(rule)]
        : [rule.subject, rule.namespace, rule.notebook || "all", rule.role, rule.effect || "allow"];
      cells.forEach((text, index) => {
        row.append(index === 0 ? element("th", { scope: "row" }, text) : element("td", {}, text));
      });
      const actions = element("td", { class: "actions" });
      if (revocable(rule)) {
        const revoke = element("button", { type: "button", class: "quiet danger" }, "REVOKE");
        revoke.addEventListener("click", () => change("DELETE", ruleBody(rule), `Revoked ${rule.role} from ${rule.subject}.`));
        actions.append(revoke);
      }
      row.append(actions);
      rows.append(row);
    }
    empty.hidden = rules.length > 0;
  }

  async function load() {
    try {
      if (onAccess) {
        const payload = await Gateway.call("GET", `/api/namespaces/${encodeURIComponent(namespace)}/access`);
        renderRules(payload.access || payload.rules || payload.members || []);
      } else {
        const query = filters.toString();
        const payload = await Gateway.call("GET", `/api/policies${query ? `?${query}` : ""}`);
        document.getElementById("version").textContent = payload.version ? `(version ${payload.version})` : "";
        const bootstrap = (payload.bootstrap_admins || []).map((subject) => ({
          subject, namespace: "*", role: "cluster-admin", source: "bootstrap",
        }));
        renderRules([...bootstrap, ...(payload.rules || [])]);
      }
    } catch (err) {
      if (err.status !== 401) Gateway.banner(err.message);
    }
  }

  async function change(method, body, done) {
    try {
      await Gateway.call(method, "/api/policies", body);
      Gateway.banner(done, "info");
    } catch (err) {
      if (err.status !== 401) Gateway.banner(err.message);
      return false;
    }
    await load();
    return true;
  }

  function clearErrors(form) {
    for (const slot of form.querySelectorAll(".field-error")) slot.textContent = "";
    for (const input of form.querySelectorAll("[aria-invalid]")) input.setAttribute("aria-invalid", "false");
  }

  // A 400 names the field at fault: show the message beside it, else in the banner.
  function showError(form, err) {
    const slot = err.field && form.querySelector(`[data-error-for="${CSS.escape(err.field)}"]`);
    if (!slot) {
      Gateway.banner(err.message);
      return;
    }
    slot.textContent = err.message;
    const input = document.getElementById(slot.id.replace(/-error$/, ""));
    if (input) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
  }

  const grant = document.getElementById("grant");
  grant.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(grant);
    Gateway.banner("");
    const data = new FormData(grant);
    const body = onAccess
      ? { subject: `${data.get("kind")}:${String(data.get("who")).trim()}`, namespace, role: data.get("role") }
      : { subject: String(data.get("subject")).trim(), namespace: String(data.get("namespace")).trim(), role: data.get("role") };
    const notebook = String(data.get("notebook") || "").trim();
    if (notebook) body.notebook = notebook;
    if (data.get("effect") && data.get("effect") !== "allow") body.effect = data.get("effect");
    try {
      await Gateway.call("POST", "/api/policies", body);
    } catch (err) {
      if (err.status !== 401) showError(grant, err);
      return;
    }
    Gateway.banner(`Granted ${body.role} to ${body.subject}.`, "info");
    grant.reset();
    await load();
  });

  const filter = document.getElementById("filter");
  if (filter) {
    filter.addEventListener("submit", (event) => {
      event.preventDefault();
      filters = new URLSearchParams();
      for (const [key, value] of new FormData(filter)) {
        if (String(value).trim()) filters.set(key, String(value).trim());
      }
      load();
    });
  }

  const check = document.getElementById("check");
  if (check) {
    const result = document.getElementById("check-result");
    check.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors(check);
      Gateway.banner("");
      const data = new FormData(check);
      const body = {
        user: String(data.get("user")).trim(),
        groups: String(data.get("groups")).split(",").map((group) => group.trim()).filter(Boolean),
        namespace: String(data.get("namespace")).trim(),
        action: data.get("action"),
      };
      const notebook = String(data.get("notebook") || "").trim();
      if (notebook) body.notebook = notebook;
      let answer;
      try {
        answer = await Gateway.call("POST", "/api/policies/check", body);
      } catch (err) {
        if (err.status !== 401) showError(check, err);
        return;
      }
      const verdict = element("p", { class: "verdict", "data-allowed": String(answer.allowed) },
        answer.allowed ? `Allowed: ${body.user} may ${body.action} in ${body.namespace}.`
                       : `Denied: ${answer.reason || `${body.user} may not ${body.action} in ${body.namespace}.`}`);
      const list = element("ul");
      for (const rule of answer.rules || []) {
        const where = rule.notebook ? `${rule.namespace}/${rule.notebook}` : rule.namespace;
        const from = rule.source === "bootstrap" ? "GATEWAY_BOOTSTRAP_ADMINS"
          : rule.editable === false ? fromKubeflow(rule)
          : [rule.location, rule.line].filter((part) => part !== null && part !== undefined && part !== "").join(":");
        list.append(element("li", {}, `${rule.effect || "allow"} ${rule.subject} ${rule.role} in ${where}${from ? ` (${from})` : ""}`));
      }
      const why = answer.rules && answer.rules.length
        ? list : element("p", { class: "note" }, "No rule gives this: denied by default.");
      result.replaceChildren(verdict, why);
    });
  }

  load();
})();
