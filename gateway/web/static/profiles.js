// The Profiles page: CREATE posts the form to the API; DELETE asks for the profile's name to be typed
// and sends it as the API's `confirm`. The API decides and audits; the page reloads to show the result.
// A 400 names the field at fault: its message goes beside that field, else into the banner.
"use strict";

(() => {
  const section = document.getElementById("profiles");
  const form = document.getElementById("new-profile");
  const dialog = document.getElementById("confirm-delete");
  if (!section || !form || !dialog) return;
  const confirmForm = dialog.querySelector("form");
  const confirmInput = document.getElementById("confirm-name");
  let deleting = "";

  function clearErrors(scope) {
    for (const slot of scope.querySelectorAll(".field-error")) slot.textContent = "";
    for (const input of scope.querySelectorAll("[aria-invalid]")) input.setAttribute("aria-invalid", "false");
  }

  function showError(scope, err, prefix) {
    const slot = err.field && scope.querySelector(`[data-error-for="${CSS.escape(err.field)}"]`);
    if (!slot) {
      Gateway.banner(`${prefix}: ${err.message}`);
      return;
    }
    slot.textContent = err.message;
    const input = document.getElementById(slot.id.replace(/-error$/, ""));
    if (input) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
  }

  function body() {
    const quota = {};
    for (const input of form.querySelectorAll("[data-quota]")) {
      const value = input.value.trim();
      if (value) quota[input.dataset.quota] = value;
    }
    const value = (name) => form.elements.namedItem(name).value.trim();
    return { name: value("name"), owner: value("owner"), quota };
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    Gateway.banner("");
    try {
      await Gateway.call("POST", "/api/profiles", body());
      location.reload();
    } catch (err) {
      if (err.status !== 401) showError(form, err, "The profile was not created");
    }
  });

  section.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-delete]");
    if (!button) return;
    deleting = button.dataset.delete;
    dialog.querySelector("[data-name]").textContent = deleting;
    confirmInput.value = "";
    clearErrors(dialog);
    dialog.showModal();
    confirmInput.focus();
  });

  dialog.querySelector("[data-cancel]").addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => {
    const button = section.querySelector(`button[data-delete="${CSS.escape(deleting)}"]`);
    if (button) button.focus(); // back where the keyboard was
  });

  confirmForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(dialog);
    Gateway.banner("");
    const url = `/api/profiles/${encodeURIComponent(deleting)}?confirm=${encodeURIComponent(confirmInput.value.trim())}`;
    try {
      await Gateway.call("DELETE", url);
      location.reload();
    } catch (err) {
      if (err.status === 401) return;
      if (err.field === "confirm") {
        showError(dialog, { field: "confirm", message: `Type ${deleting} exactly to delete it.` }, "");
      } else {
        dialog.close();
        Gateway.banner(`The profile was not deleted: ${err.message}`);
      }
    }
  });
})();
