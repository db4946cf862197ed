// The Audit page's activity chart: events per hour for the current filter (GET /api/audit/activity),
// drawn as an SVG made here, with no library. Allowed and failed events stack up from the axis;
// denials hang below it in red on their own scale, so a handful of refusals among thousands of
// allowed events still shows. Each hour's bar has a tooltip (an SVG <title>) with its counts by
// action; the whole chart has a text summary for screen readers.
"use strict";

const Activity = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const WIDTH = 960, UP = 120, DOWN = 48, AXIS = 22, LEFT = 44;

  function svg(tag, attrs = {}, text = "") {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    if (text) node.textContent = text;
    return node;
  }

  function hourLabel(iso) {
    return new Date(iso).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  }

  function tooltip(hour) {
    const lines = [`${Gateway.localTime(hour.hour)}: ${hour.allowed} allowed, ${hour.failed} failed, ${hour.denied} denied`];
    for (const [action, outcomes] of Object.entries(hour.actions)) {
      lines.push(`${action}: ${Object.entries(outcomes).map(([outcome, n]) => `${n} ${outcome}`).join(", ")}`);
    }
    return lines.join("\n");
  }

  function render(box, data) {
    const hours = data.hours;
    const top = Math.max(1, ...hours.map((h) => h.allowed + h.failed));
    const bottom = Math.max(1, ...hours.map((h) => h.denied));
    const slot = (WIDTH - LEFT) / Math.max(1, hours.length);
    const bar = Math.max(1, slot * 0.8);
    const denied = hours.reduce((sum, h) => sum + h.denied, 0);
    const total = hours.reduce((sum, h) => sum + h.allowed + h.failed + h.denied, 0);
    const summary = `${total} events from ${Gateway.localTime(data.since)} to ${Gateway.localTime(data.until)}: ` +
      `${denied} denied, ${hours.reduce((s, h) => s + h.failed, 0)} failed` +
      (denied ? `; most denials at ${Gateway.localTime(hours.reduce((a, b) => (b.denied > a.denied ? b : a)).hour)}` : "") +
      (data.complete ? "." : " (counted the newest events only).");
    const chart = svg("svg", {
      viewBox: `0 0 ${WIDTH} ${UP + AXIS + DOWN}`, role: "img", "aria-labelledby": "activity-svg-title", class: "activity",
    });
    chart.append(svg("title", { id: "activity-svg-title" }, `Events per hour. ${summary}`));
    chart.append(svg("text", { x: LEFT - 6, y: 10, class: "scale", "text-anchor": "end" }, String(top)));
    chart.append(svg("text", { x: LEFT - 6, y: UP + AXIS + DOWN - 2, class: "scale denied", "text-anchor": "end" }, String(denied ? bottom : 0)));
    chart.append(svg("line", { x1: LEFT, x2: WIDTH, y1: UP, y2: UP, class: "axis" }));
    chart.append(svg("line", { x1: LEFT, x2: WIDTH, y1: UP + AXIS, y2: UP + AXIS, class: "axis" }));
    const every = Math.ceil(hours.length / 12);
    hours.forEach((hour, index) => {
      const x = LEFT + index * slot + (slot - bar) / 2;
      const group = svg("g", { class: "hour", "data-hour": hour.hour, "data-denied": hour.denied });
      group.append(svg("title", {}, tooltip(hour)));
      const allowedH = (hour.allowed / top) * UP;
      const failedH = (hour.failed / top) * UP;
      if (hour.allowed) group.append(svg("rect", { x, y: UP - allowedH, width: bar, height: allowedH, class: "allowed" }));
      if (hour.failed) group.append(svg("rect", { x, y: UP - allowedH - failedH, width: bar, height: failedH, class: "failed" }));
      // A denial is never thinner than 3 units: one refusal among thousands must still be seen.
      if (hour.denied) group.append(svg("rect", { x, y: UP + AXIS, width: bar, height: Math.max(3, (hour.denied / bottom) * DOWN), class: "denied" }));
      // An invisible full-height target, so the tooltip shows anywhere in the hour's column.
      group.append(svg("rect", { x: LEFT + index * slot, y: 0, width: slot, height: UP + AXIS + DOWN, class: "target" }));
      chart.append(group);
      if (index % every === 0 && LEFT + index * slot + slot / 2 + 30 < WIDTH) {  // no label cut by the edge
        chart.append(svg("text", { x: LEFT + index * slot + slot / 2, y: UP + AXIS - 6, class: "tick", "text-anchor": "middle" }, hourLabel(hour.hour)));
      }
    });
    box.replaceChildren(chart);
    document.getElementById("activity-summary").textContent = summary;
    const range = document.getElementById("activity-range");
    if (range) range.textContent = `per hour, ${Gateway.localTime(data.since)} – ${Gateway.localTime(data.until)}` + (data.clamped ? " (the last 7 days of the range)" : "");
  }

  async function draw(box, url) {
    if (!box) return;
    try {
      render(box, await Gateway.call("GET", url));
    } catch (err) {
      if (err.status !== 401) document.getElementById("activity-summary").textContent = `The activity could not be drawn: ${err.message}`;
    }
  }

  return { draw };
})();
