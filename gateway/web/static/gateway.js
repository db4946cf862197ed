// Shared by the gateway's pages: JSON calls to the API, the page banner, and signing in again
// when the session has ended (the API answers 401; the browser is sent round the sign-in and
// comes back to the page it was on).
"use strict";

const Gateway = (() => {
  class ApiError extends Error {
    constructor(status, code, message, field) {
      super(message);
      this.status = status;
      this.code = code;
      this.field = field || null;
    }
  }

  // Pages may register a hook that saves unsent work before the browser leaves to sign in.
  const beforeSignIn = [];
  let leaving = false;

  function signInAgain() {
    if (leaving) return;
    leaving = true;
    for (const hook of beforeSignIn) {
      try {
        hook();
      } catch (err) {
        console.error(err);
      }
    }
    const back = location.pathname + location.search;
    location.assign("/oauth2/start?rd=" + encodeURIComponent(back));
  }

  // `background`: the page asks on its own (polling), not because the person did something, so
  // the request must not keep an unattended session from idling out.
  async function call(method, url, body, { background = false } = {}) {
    const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (background) init.headers["X-Gateway-Background"] = "1";
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (err) {
      throw new ApiError(0, "network", "The gateway did not answer. Check your connection; retrying.");
    }
    let payload = null;
    try {
      payload = await response.json();
    } catch (err) {
      payload = null; // e.g. a proxy's HTML error page: never shown raw
    }
    if (response.status === 401) {
      signInAgain();
      throw new ApiError(401, "login_required", "Your session has ended. Taking you to sign in again…");
    }
    if (!response.ok) {
      const message = (payload && payload.message) || `The gateway answered ${response.status} ${response.statusText}.`;
      throw new ApiError(response.status, (payload && payload.error) || "http_error", message, payload && payload.field);
    }
    return payload;
  }

  function banner(message, kind = "error") {
    const box = document.getElementById("banner");
    if (!box) return;
    box.textContent = message || "";
    box.dataset.kind = kind;
    box.hidden = !message;
  }

  // Times: the API speaks UTC (`2024-05-01T12:30:05.123Z`); people read their own zone. A <time>
  // element keeps the exact UTC instant in `datetime` and shows it on hover.
  function localTime(iso) {
    const when = new Date(iso);
    if (Number.isNaN(when.getTime())) return String(iso);
    return when.toLocaleString(undefined, {
      year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
  }

  function time(iso) {
    const node = document.createElement("time");
    node.setAttribute("datetime", iso);
    node.title = `${String(iso).replace("T", " ").replace("Z", "")} UTC`;
    node.textContent = localTime(iso);
    return node;
  }

  // The namespace selector switches as soon as a namespace is picked.
  document.addEventListener("DOMContentLoaded", () => {
    for (const select of document.querySelectorAll("select[data-autosubmit]")) {
      select.addEventListener("change", () => select.form.submit());
    }
  });

  return { ApiError, call, banner, signInAgain, beforeSignIn, localTime, time };
})();
