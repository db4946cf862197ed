// The Notebook Servers list: statuses that update live (the list API is polled every 2 s while the
// tab is visible) and CONNECT, STOP / START and DELETE per server. Rows are updated in place, so
// keyboard focus stays on the button it was on while the list refreshes.
"use strict";

(() => {
  const section = document.getElementById("notebooks");
  if (!section) return;
  const namespace = section.dataset.namespace;
  const allowed = new Set(section.dataset.allowed.split(" ").filter(Boolean));
  const listUrl = `/api/namespaces/${encodeURIComponent(namespace)}/notebooks`;
  const rows = document.getElementById("server-rows");
  const empty = document.getElementById("empty");
  const notes = document.getElementById("notes");
  const dialog = document.getElementById("confirm-delete");
  const POLL_MS = 2000;
  // Idle culling (when on): how long before a server is stopped the list warns about it.
  const cullWarningMs = Number(section.dataset.cullWarningS || 0) * 1000;

  // phase -> [icon, label]; the icon's accessible name is the label.
  const PHASES = {
    waiting: ["spinner", "Starting"],
    ready: ["ready", "Running"],
    stopped: ["stopped", "Stopped"],
    warning: ["warning", "Warning"],
    terminating: ["spinner", "Deleting"],
    unavailable: ["warning", "Unavailable"],
  };
  const busy = new Map(); // name -> label of the action in flight ("Stopping", ...)
  let timer = null;
  let failures = 0;

  function element(tag, attrs = {}, text = "") {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    if (text) node.textContent = text;
    return node;
  }

  function makeRow(name) {
    const row = element("tr", { "data-name": name });
    const status = element("td", { class: "status" });
    status.append(
      element("span", { class: "icon", role: "img" }),
      element("span", { class: "phase", "aria-hidden": "true" }),
      element("span", { class: "message" }),
    );
    const title = element("th", { scope: "row", class: "name" });
    const actions = element("td", { class: "actions" });
    const connect = element("button", { type: "button", "data-action": "connect" }, "CONNECT");
    const toggle = element("button", { type: "button", "data-action": "toggle", class: "quiet" }, "STOP");
    const remove = element("button", { type: "button", "data-action": "delete", class: "quiet danger" }, "DELETE");
    if (allowed.has("connect")) actions.append(connect);
    if (allowed.has("stop") || allowed.has("start")) actions.append(toggle);
    if (allowed.has("delete")) actions.append(remove);
    if (allowed.has("history")) {
      // For auditors: who created this server and who opened it, from the audit log.
      const query = new URLSearchParams({ namespace, notebook: name });
      actions.append(element("a", { href: `/audit?${query}`, class: "history" }, "History"));
    }
    row.append(
      status,
      title,
      element("td", { class: "image", "data-label": "Image" }),
      element("td", { class: "cpu", "data-label": "CPU" }),
      element("td", { class: "memory", "data-label": "Memory" }),
      element("td", { class: "gpus", "data-label": "GPUs" }),
      element("td", { class: "volumes", "data-label": "Volumes" }),
      element("td", { class: "created", "data-label": "Created" }),
      element("td", { class: "activity", "data-label": "Last activity" }),
      actions,
    );
    return row;
  }

  function ago(timestamp) {
    const seconds = Math.round((Date.parse(timestamp) - Date.now()) / 1000);
    if (Number.isNaN(seconds)) return "";
    const format = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
    for (const [unit, size] of [["day", 86400], ["hour", 3600], ["minute", 60]]) {
      if (Math.abs(seconds) >= size) return format.format(Math.round(seconds / size), unit);
    }
    return format.format(Math.min(seconds, 0), "second");
  }

  function update(row, notebook) {
    const phase = notebook.status.phase;
    const inFlight = busy.get(notebook.name);
    const [icon, label] = inFlight ? ["spinner", inFlight] : PHASES[phase] || ["warning", phase];
    const iconNode = row.querySelector(".icon");
    iconNode.className = `icon ${icon}`;
    iconNode.setAttribute("aria-label", label);
    iconNode.title = label;
    row.dataset.phase = inFlight ? "busy" : phase;
    row.querySelector(".phase").textContent = label;
    row.querySelector(".message").textContent = inFlight ? "" : notebook.status.message;
    const link = element("a", { href: `/notebooks/${encodeURIComponent(namespace)}/${encodeURIComponent(notebook.name)}` });
    link.textContent = notebook.name; // details: overview, events, logs, YAML
    row.querySelector(".name").replaceChildren(link);
    const image = row.querySelector(".image");
    image.textContent = notebook.shortImage;
    image.title = notebook.image;
    row.querySelector(".cpu").textContent = notebook.cpu;
    row.querySelector(".memory").textContent = notebook.memory;
    row.querySelector(".gpus").textContent = notebook.gpus.message || "—"; // e.g. "2 NVIDIA", as the web app says
    row.querySelector(".volumes").textContent = notebook.volumes.join(", ") || "—";
    const created = row.querySelector(".created");
    created.textContent = ago(notebook.age);
    created.title = notebook.age;
    const activity = row.querySelector(".activity");
    activity.textContent = notebook.last_activity ? ago(notebook.last_activity) : "—";
    activity.title = notebook.last_activity;
    const culls = notebook.cull_at ? Date.parse(notebook.cull_at) - Date.now() : NaN;
    if (culls <= cullWarningMs) {
      // Idle culling stops it soon unless someone uses it: say so where the user looks.
      const minutes = Math.max(0, Math.ceil(culls / 60000));
      const warning = element("span", { class: "cull-warning" }, `idle: stops in ${minutes} min`);
      warning.title = `Idle servers are stopped; open it to keep it running (at ${notebook.cull_at}).`;
      activity.append(" ", warning);
    }

    const connect = row.querySelector('[data-action="connect"]');
    const toggle = row.querySelector('[data-action="toggle"]');
    const remove = row.querySelector('[data-action="delete"]');
    if (connect) connect.disabled = Boolean(inFlight) || phase !== "ready";
    if (toggle) {
      const start = notebook.stopped;
      toggle.textContent = start ? "START" : "STOP";
      toggle.disabled = Boolean(inFlight) || phase === "terminating" || !allowed.has(start ? "start" : "stop");
    }
    if (remove) remove.disabled = Boolean(inFlight) || phase === "terminating";
  }

  function render(notebooks) {
    const seen = new Set();
    for (const notebook of notebooks) {
      seen.add(notebook.name);
      let row = rows.querySelector(`tr[data-name="${CSS.escape(notebook.name)}"]`);
      if (!row) {
        row = makeRow(notebook.name);
        // Keep the table sorted by name, as the API lists it.
        const after = [...rows.children].find((other) => other.dataset.name > notebook.name);
        rows.insertBefore(row, after || null);
      }
      row.notebook = notebook;
      update(row, notebook);
    }
    for (const row of [...rows.children]) {
      if (!seen.has(row.dataset.name)) row.remove();
    }
    empty.hidden = notebooks.length > 0;
    const allNotes = [...new Set(notebooks.flatMap((notebook) => notebook.notes || []))];
    notes.textContent = allNotes.join(" ");
    notes.hidden = allNotes.length === 0;
  }

  async function refresh({ background = false } = {}) {
    try {
      const payload = await Gateway.call("GET", listUrl, undefined, { background });
      render(payload.notebooks);
      if (failures) Gateway.banner("");
      failures = 0;
    } catch (err) {
      failures += 1;
      if (err.status !== 401) Gateway.banner(err.message);
      if (err.status === 401) return false;
    }
    return true;
  }

  function schedule(delay = POLL_MS) {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      if (document.hidden) return; // resumes on visibilitychange
      if (await refresh({ background: true })) schedule(Math.min(POLL_MS * 2 ** Math.min(failures, 3), 15000));
    }, delay);
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) schedule(0);
  });

  // `report`: show the gateway's message when done (e.g. which volumes went and which were kept).
  async function act(row, label, method, url, body, { report = false } = {}) {
    const name = row.dataset.name;
    busy.set(name, label);
    update(row, row.notebook);
    try {
      const payload = await Gateway.call(method, url, body);
      Gateway.banner(report && payload ? payload.message : "", "info");
    } catch (err) {
      if (err.status !== 401) Gateway.banner(`${name}: ${err.message}`);
    } finally {
      busy.delete(name);
    }
    if (await refresh()) schedule();
  }

  // Resolves to null (cancelled) or { volumes } (whether to delete the volumes made with the server).
  function confirmDelete(name) {
    return new Promise((resolve) => {
      const volumes = dialog.querySelector("[data-volumes]");
      dialog.querySelector("[data-name]").textContent = name;
      volumes.checked = false; // never carried over from the last server
      dialog.returnValue = "";
      dialog.addEventListener(
        "close",
        () => resolve(dialog.returnValue === "delete" ? { volumes: volumes.checked } : null),
        { once: true },
      );
      dialog.showModal();
    });
  }

  rows.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button || button.disabled) return;
    const row = button.closest("tr");
    const notebook = row.notebook;
    const url = `${listUrl}/${encodeURIComponent(notebook.name)}`;
    const action = button.dataset.action;
    if (action === "connect") {
      window.open(notebook.url, "_blank", "noopener");
    } else if (action === "toggle") {
      const stop = !notebook.stopped;
      await act(row, stop ? "Stopping" : "Starting", "PATCH", url, { stopped: stop });
    } else if (action === "delete") {
      const choice = await confirmDelete(notebook.name);
      if (choice && choice.volumes) {
        await act(row, "Deleting", "DELETE", `${url}?volumes=true`, undefined, { report: true });
      } else if (choice) {
        await act(row, "Deleting", "DELETE", url);
      }
      button.isConnected ? button.focus() : document.getElementById("servers-title").focus();
    }
  });

  render(JSON.parse(document.getElementById("initial-notebooks").textContent));
  schedule();
})();
