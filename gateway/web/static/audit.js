// The Audit page: the filters in the address are sent to GET /api/audit; events are shown newest
// first with links (a user's events, a notebook's history), details as labelled fields, times in
// the reader's zone (UTC on hover), older pages on demand, a live tail that polls the first page for
// new event ids, streamed exports of the same search, and the activity chart (events per hour).
"use strict";

(() => {
  const body = document.getElementById("events");
  if (!body) return;
  const me = (document.querySelector(".user") || {}).textContent || "";
  const filters = new URLSearchParams();
  for (const [key, value] of new URLSearchParams(location.search)) {
    if (value.trim()) filters.set(key, value.trim());
  }
  const api = (extra = {}, path = "/api/audit") => {
    const query = new URLSearchParams(filters);
    for (const [key, value] of Object.entries(extra)) query.set(key, value);
    return `${path}?${query}`;
  };
  for (const format of ["csv", "jsonl", "ecs"]) {
    document.getElementById(`export-${format}`).href = api({ format }, "/api/audit/export");
  }
  const empty = document.getElementById("empty");
  const older = document.getElementById("older");
  const tail = document.getElementById("live-tail");
  const hideReads = document.getElementById("hide-reads");
  const TAIL_MS = 3000;
  const seen = new Set();
  let events = [];
  let cursor = null;
  let timer = null;

  function element(tag, attrs = {}, text = "") {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    if (text) node.textContent = text;
    return node;
  }

  function link(text, params) {
    return element("a", { href: `/audit?${new URLSearchParams(params)}` }, text);
  }

  function row(event) {
    const tr = element("tr", { "data-outcome": event.outcome });
    const cell = element("td", { class: "time", "data-label": "Time" });
    cell.append(Gateway.time(event.time));
    tr.append(cell);
    tr.append(element("th", { scope: "row" }, event.action));
    tr.append(element("td", { class: `outcome ${event.outcome}`, "data-label": "Outcome" }, event.outcome));
    const user = element("td", { "data-label": "User" });
    if (event.actor && event.actor !== "-") user.append(link(event.actor, { user: event.actor }));
    else user.textContent = "—";
    tr.append(user);
    const where = element("td", { "data-label": "Where" });
    if (event.namespace && event.notebook) {
      where.append(link(`${event.namespace}/${event.notebook}`, { namespace: event.namespace, notebook: event.notebook }));
    } else if (event.namespace) {
      where.append(link(event.namespace, { namespace: event.namespace }));
    } else {
      where.textContent = "—";
    }
    tr.append(where);
    const about = element("td", { class: "about", "data-label": "Details" });
    if (event.reason) about.append(element("span", { class: "reason" }, event.reason));
    if (event.details && Object.keys(event.details).length) about.append(fields(event.details));
    tr.append(about);
    tr.append(element("td", { "data-label": "Client" }, event.client_ip || "—"));
    return tr;
  }

  // Details as a list of labelled fields: `bytes_in` reads "Bytes in"; a list of plain values is joined;
  // a nested object (the filters of a read, a rule) is a list of labelled fields of its own, inside its
  // field, and a list of objects a numbered list of them. Past MAX_DEPTH levels what is left is compact
  // JSON, so a deep value cannot stretch the row without end. Keys and values are text, never markup.
  const MAX_DEPTH = 4;

  function label(key) {
    const words = key.replace(/_/g, " ");
    return words.charAt(0).toUpperCase() + words.slice(1);
  }

  const plain = (item) => item === null || typeof item !== "object";

  function value(item, depth) {
    if (item === null || item === undefined) return document.createTextNode("—");
    if (Array.isArray(item)) {
      if (item.every(plain)) return document.createTextNode(item.map((x) => (x === null ? "—" : String(x))).join(", ") || "—");
      if (depth >= MAX_DEPTH) return document.createTextNode(JSON.stringify(item));
      const list = element("ol", { class: "details" });
      for (const entry of item) {
        const li = element("li");
        li.append(value(entry, depth + 1));
        list.append(li);
      }
      return list;
    }
    if (typeof item === "object") {
      if (!Object.keys(item).length) return document.createTextNode("—");
      if (depth >= MAX_DEPTH) return document.createTextNode(JSON.stringify(item));
      return fields(item, depth + 1);
    }
    return document.createTextNode(String(item));
  }

  function fields(details, depth = 0) {
    const list = element("dl", { class: "details" });
    for (const [key, item] of Object.entries(details)) {
      const field = element("dd");
      field.append(value(item, depth));
      list.append(element("dt", {}, label(key)), field);
    }
    return list;
  }

  function shown(event) {
    return !(hideReads.checked && event.action === "audit.read" && event.actor === me);
  }

  function render() {
    const visible = events.filter(shown);
    body.replaceChildren(...visible.map(row));
    empty.hidden = visible.length > 0;
    older.hidden = !cursor;
    history();
  }

  // With one notebook chosen: who created it, and who opened it last (from the events loaded).
  function history() {
    const box = document.getElementById("history");
    if (!(filters.get("namespace") && filters.get("notebook"))) return;
    const created = events.find((event) => event.action === "notebook.create" && event.outcome === "allowed");
    const opened = events.find((event) => event.action === "notebook.access");
    const parts = [];
    if (created) parts.push(`Created by ${created.actor} at ${Gateway.localTime(created.time)}.`);
    if (opened) parts.push(`Last opened by ${opened.actor} at ${Gateway.localTime(opened.time)}.`);
    box.textContent = parts.join(" ") || "Neither its creation nor an access is among the events loaded.";
    box.hidden = false;
  }

  async function load({ more = false, background = false } = {}) {
    try {
      const payload = await Gateway.call("GET", api(more && cursor ? { cursor } : {}), undefined, { background });
      const fresh = payload.events.filter((event) => !seen.has(event.event_id));
      fresh.forEach((event) => seen.add(event.event_id));
      if (more) {
        events = events.concat(fresh);
        cursor = payload.next_cursor;
      } else if (!events.length) {
        events = fresh;
        cursor = payload.next_cursor;
      } else {
        events = fresh.concat(events); // the live tail: new events on top
      }
      Gateway.banner("");
      render();
    } catch (err) {
      if (err.status !== 401) Gateway.banner(err.message);
    }
  }

  function schedule() {
    clearTimeout(timer);
    if (tail.checked && !document.hidden) timer = setTimeout(async () => {
      await load({ background: true });
      schedule();
    }, TAIL_MS);
  }

  tail.addEventListener("change", schedule);
  hideReads.addEventListener("change", render);
  document.addEventListener("visibilitychange", schedule);
  older.addEventListener("click", () => load({ more: true }));
  load();
  Activity.draw(document.getElementById("activity-chart"), api({}, "/api/audit/activity"));
})();
