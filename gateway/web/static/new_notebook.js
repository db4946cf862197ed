// The NEW SERVER form: the name is checked as it is typed; LAUNCH posts the Jupyter web app's JSON
// body to the API and returns to the list. The API's 400s name the field at fault, and the message
// is shown beside that field. If the session ended meanwhile, the form is kept in sessionStorage
// across signing in again and filled back in.
"use strict";

(() => {
  const form = document.getElementById("new-notebook");
  if (!form) return;
  const namespace = form.dataset.namespace;
  const template = form.dataset.workspaceTemplate;
  const accessMode = form.dataset.accessMode;
  const saveKey = `notebook-gateway:new-server:${namespace}`;
  const nameInput = form.elements.namedItem("name");
  const gpuCount = document.getElementById("gpu-count");
  const gpuVendor = document.getElementById("gpu-vendor");
  const customCheck = document.getElementById("use-custom-image");
  const customInput = document.getElementById("custom-image");
  const workspace = document.getElementById("workspace");
  const volumeList = document.getElementById("data-volume-list");
  const launch = document.getElementById("launch");
  const PLACEHOLDER = "{notebook-name}";
  let volumeCount = 0;

  // -- showing errors ---------------------------------------------------------------------------

  function showError(slot, input, message) {
    if (!slot) return false;
    slot.textContent = message;
    if (input) input.setAttribute("aria-invalid", message ? "true" : "false");
    return true;
  }

  function clearErrors() {
    for (const slot of form.querySelectorAll(".field-error")) slot.textContent = "";
    for (const input of form.querySelectorAll("[aria-invalid]")) input.setAttribute("aria-invalid", "false");
    Gateway.banner("");
  }

  function volumeError(fieldset, rest, message) {
    // rest: "" | ".mount" | ".newPvc.metadata.name" | ".existingSource.persistentVolumeClaim.claimName" | ...
    let part = "volume";
    if (rest.includes("mount")) part = "mount";
    else if (rest.endsWith("metadata.name") || rest.includes("claimName")) part = "name";
    else if (rest.includes("storage")) part = "size";
    const input = part === "volume" ? null : fieldset.querySelector(`[data-part="${part}"]`);
    return showError(fieldset.querySelector(`[data-error="${part}"]`), input, message);
  }

  // The API's `field` -> the slot beside that input. Returns false when no slot fits.
  function placeError(field, message) {
    if (!field) return false;
    const simple = { name: "name", image: imageSelect().id, customImage: "custom-image", cpu: "cpu",
                     cpuLimit: "cpu-limit", memory: "memory", memoryLimit: "memory-limit",
                     imagePullPolicy: "image-pull-policy", configurations: "configurations",
                     serverType: "server-type", "gpus.num": "gpu-count", "gpus.vendor": "gpu-vendor",
                     affinityConfig: "affinity-config", tolerationGroup: "toleration-group", shm: "shm" };
    if (simple[field]) {
      const id = simple[field];
      return showError(document.getElementById(`${id}-error`), document.getElementById(id), message);
    }
    if (field === "gpus") return showError(document.getElementById("gpus-error"), gpuCount, message);
    if (field.startsWith("workspace")) return volumeError(workspace, field.slice("workspace".length), message);
    const match = /^datavols\[(\d+)\](.*)$/.exec(field);
    if (match) {
      const fieldset = volumeList.children[Number(match[1])];
      return fieldset ? volumeError(fieldset, match[2], message) : false;
    }
    return false;
  }

  // -- the name, checked as it is typed ---------------------------------------------------------

  function nameProblem(name) {
    if (!name) return "Give the server a name.";
    if (/\s/.test(name)) return "No spaces: use '-' between words.";
    if (/[A-Z]/.test(name)) return "Use lowercase letters only.";
    if (/[^a-z0-9-]/.test(name)) return "Use only lowercase letters, digits and '-'.";
    if (name.startsWith("-") || name.endsWith("-")) return "Start and end with a letter or a digit.";
    if (name.length > 63) return "Use at most 63 characters.";
    return "";
  }

  function checkName({ quietWhenEmpty }) {
    const problem = nameProblem(nameInput.value);
    showError(document.getElementById("name-error"), nameInput, quietWhenEmpty && !nameInput.value ? "" : problem);
    return !problem;
  }

  // Volume names follow the server's name until the user types one of their own.
  function followName() {
    const name = nameInput.value || PLACEHOLDER;
    for (const fieldset of form.querySelectorAll("[data-volume]")) {
      const input = fieldset.querySelector('[data-part="name"]');
      if (input.dataset.edited !== "true" && input.dataset.pattern) {
        input.value = input.dataset.pattern.replace(PLACEHOLDER, name);
      }
    }
  }

  nameInput.addEventListener("input", () => {
    checkName({ quietWhenEmpty: true });
    followName();
  });

  // -- server types, images, GPUs and volumes ----------------------------------------------------

  // The chosen server type; each has its own list of images (the spawner config's image groups).
  function serverType() {
    const chosen = form.querySelector('input[name="serverType"]:checked');
    return chosen ? chosen.value : "jupyter";
  }

  function imageField() {
    return form.querySelector(`[data-server-type="${serverType()}"]`);
  }

  function imageSelect() {
    return imageField().querySelector("select");
  }

  // A field the spawner config made read-only is shown but not sent: the server then gets its default.
  function editable(element) {
    return Boolean(element) && !element.hasAttribute("data-read-only");
  }

  function syncServerType() {
    for (const field of form.querySelectorAll("[data-server-type]")) field.hidden = field !== imageField();
    syncCustomImage();
  }
  for (const radio of form.querySelectorAll('input[name="serverType"]')) radio.addEventListener("change", syncServerType);

  function syncCustomImage() {
    if (!customCheck) return;
    document.getElementById("custom-image-field").hidden = !customCheck.checked;
    imageSelect().disabled = customCheck.checked;
  }
  if (customCheck) customCheck.addEventListener("change", syncCustomImage);

  function syncGpus() {
    if (!gpuCount) return;
    document.getElementById("gpu-vendor-field").hidden = gpuCount.value === "none";
  }
  if (gpuCount) gpuCount.addEventListener("change", syncGpus);

  function syncKind(fieldset) {
    const kind = fieldset.querySelector('[data-part="kind"]').value;
    const details = fieldset.querySelector('[data-part="details"]');
    if (details) details.hidden = kind === "none";
    fieldset.querySelector('[data-part="size-field"]').hidden = kind !== "new";
  }

  function setUpVolume(fieldset, pattern) {
    const nameField = fieldset.querySelector('[data-part="name"]');
    nameField.dataset.pattern = pattern;
    nameField.addEventListener("input", () => {
      nameField.dataset.edited = "true";
    });
    const kind = fieldset.querySelector('[data-part="kind"]');
    kind.addEventListener("change", () => syncKind(fieldset));
    syncKind(fieldset);
  }

  function renumber() {
    [...volumeList.children].forEach((fieldset, index) => {
      fieldset.querySelector('[data-part="number"]').textContent = String(index + 1);
    });
    document.getElementById("data-volumes-empty").hidden = volumeList.children.length > 0;
  }

  // preset: a data volume of the spawner config's `dataVolumes.value` ({kind, name, size, mount, accessMode}).
  function addVolume(preset) {
    volumeCount += 1;
    const n = volumeCount;
    const fieldset = document.getElementById("data-volume-template").content.firstElementChild.cloneNode(true);
    fieldset.dataset.volume = `datavol-${n}`;
    // Unique ids, so each label names its own input and each error is that input's description.
    for (const input of fieldset.querySelectorAll("[data-part]")) {
      if (!["INPUT", "SELECT"].includes(input.tagName)) continue;
      const id = `datavol-${n}-${input.dataset.part}`;
      input.id = id;
      const label = fieldset.querySelector(`label[data-for="${input.dataset.part}"]`);
      if (label) label.htmlFor = id;
      const error = fieldset.querySelector(`[data-error="${input.dataset.part}"]`);
      if (error) {
        error.id = `${id}-error`;
        input.setAttribute("aria-describedby", error.id);
      }
    }
    const mountBase = document.getElementById("workspace-mount").value.replace(/\/+$/, "") || "/home/jovyan";
    const part = (name) => fieldset.querySelector(`[data-part="${name}"]`);
    part("mount").value = preset ? preset.mount : `${mountBase}/datavol-${n}`;
    if (preset) {
      part("kind").value = preset.kind;
      if (preset.size) part("size").value = preset.size;
      if (preset.accessMode) fieldset.dataset.accessMode = preset.accessMode;
      if (preset.kind === "existing") part("name").value = preset.name;
    }
    // A new volume's name follows the server's name; an existing claim's is fixed.
    const pattern = preset ? (preset.kind === "new" ? preset.name : "") : `${PLACEHOLDER}-datavol-${n}`;
    setUpVolume(fieldset, pattern);
    fieldset.querySelector('[data-part="remove"]').addEventListener("click", () => {
      fieldset.remove();
      renumber();
      document.getElementById("add-volume").focus();
    });
    volumeList.append(fieldset);
    renumber();
    followName();
    return fieldset;
  }

  document.getElementById("add-volume").addEventListener("click", () => {
    addVolume().querySelector("select").focus();
  });
  setUpVolume(workspace, template);

  // -- the request body ---------------------------------------------------------------------------

  function volumeBody(fieldset) {
    const value = (part) => fieldset.querySelector(`[data-part="${part}"]`).value.trim();
    const kind = value("kind");
    if (kind === "none") return null;
    if (kind === "existing") {
      return { mount: value("mount"), existingSource: { persistentVolumeClaim: { claimName: value("name") } } };
    }
    return {
      mount: value("mount"),
      newPvc: {
        metadata: { name: value("name") },
        spec: { resources: { requests: { storage: value("size") } }, accessModes: [fieldset.dataset.accessMode || accessMode] },
      },
    };
  }

  function chosenConfigurations() {
    return [...form.querySelectorAll('input[name="configurations"]:checked')].map((box) => box.value);
  }

  // The web app's body (its getSubmitNotebook()), leaving out the fields that are read-only.
  function body() {
    const useCustom = Boolean(customCheck && customCheck.checked);
    const payload = { name: nameInput.value, namespace, serverType: serverType() };
    const put = (key, element, value) => {
      if (editable(element)) payload[key] = value === undefined ? element.value.trim() : value;
    };
    put("image", imageSelect());
    put("imagePullPolicy", document.getElementById("image-pull-policy"));
    put("cpu", document.getElementById("cpu"));
    put("memory", document.getElementById("memory"));
    for (const [key, id] of [["cpuLimit", "cpu-limit"], ["memoryLimit", "memory-limit"]]) {
      const input = document.getElementById(id);
      if (input.value.trim()) put(key, input);  // empty: request x the limit factor
    }
    if (gpuCount) put("gpus", gpuCount, { num: gpuCount.value, vendor: gpuCount.value === "none" ? "" : gpuVendor.value });
    put("affinityConfig", document.getElementById("affinity-config"));
    put("tolerationGroup", document.getElementById("toleration-group"));
    const shm = document.getElementById("shm");
    put("shm", shm, shm && shm.checked);
    if (customCheck) {
      payload.customImageCheck = useCustom;
      payload.customImage = useCustom ? customInput.value.trim() : "";
    }
    put("datavols", document.getElementById("data-volumes"), [...volumeList.children].map(volumeBody));
    const configurations = document.getElementById("configurations");
    if (!configurations || editable(configurations)) payload.configurations = chosenConfigurations();
    if (editable(workspace)) {
      const ws = volumeBody(workspace);
      if (ws === null) payload.noWorkspace = true;
      else payload.workspace = ws;
    }
    return payload;
  }

  // -- keeping the form across signing in again ---------------------------------------------------

  function snapshot() {
    const volume = (fieldset) => {
      const parts = {};
      for (const input of fieldset.querySelectorAll("input[data-part], select[data-part]")) {
        parts[input.dataset.part] = input.value;
      }
      parts.edited = fieldset.querySelector('[data-part="name"]').dataset.edited === "true";
      parts.pattern = fieldset.querySelector('[data-part="name"]').dataset.pattern || "";
      parts.accessMode = fieldset.dataset.accessMode || "";
      return parts;
    };
    const value = (id) => (document.getElementById(id) ? document.getElementById(id).value : "");
    const shm = document.getElementById("shm");
    return {
      name: nameInput.value,
      serverType: serverType(),
      image: imageSelect().value,
      pullPolicy: value("image-pull-policy"),
      cpuLimit: value("cpu-limit"),
      memoryLimit: value("memory-limit"),
      gpuCount: value("gpu-count"),
      gpuVendor: value("gpu-vendor"),
      affinity: value("affinity-config"),
      tolerations: value("toleration-group"),
      shm: shm ? shm.checked : null,
      custom: customCheck ? customCheck.checked : false,
      customImage: customInput ? customInput.value : "",
      cpu: form.elements.namedItem("cpu").value,
      memory: form.elements.namedItem("memory").value,
      workspace: volume(workspace),
      datavols: [...volumeList.children].map(volume),
      configurations: chosenConfigurations(),
    };
  }

  function restoreVolume(fieldset, saved) {
    for (const [part, value] of Object.entries(saved)) {
      const input = fieldset.querySelector(`[data-part="${part}"]`);
      if (input && "value" in input) input.value = value;
    }
    const name = fieldset.querySelector('[data-part="name"]');
    name.dataset.edited = String(saved.edited);
    if (saved.pattern !== undefined) name.dataset.pattern = saved.pattern;
    if (saved.accessMode) fieldset.dataset.accessMode = saved.accessMode;
    syncKind(fieldset);
  }

  function restore() {
    const raw = sessionStorage.getItem(saveKey);
    if (!raw) return;
    sessionStorage.removeItem(saveKey);
    let saved;
    try {
      saved = JSON.parse(raw);
    } catch (err) {
      return;
    }
    nameInput.value = saved.name || "";
    const radio = form.querySelector(`input[name="serverType"][value="${CSS.escape(saved.serverType || "jupyter")}"]`);
    if (radio) radio.checked = true;
    syncServerType();
    const select = imageSelect();
    if ([...select.options].some((option) => option.value === saved.image)) select.value = saved.image;
    const choose = (id, value) => {
      const element = document.getElementById(id);
      if (!element || value === undefined || value === null || element.hasAttribute("data-read-only")) return;
      if (element.tagName === "SELECT" && ![...element.options].some((option) => option.value === value)) return;
      element.value = value;
    };
    choose("image-pull-policy", saved.pullPolicy);
    choose("cpu-limit", saved.cpuLimit);
    choose("memory-limit", saved.memoryLimit);
    choose("gpu-count", saved.gpuCount);
    choose("gpu-vendor", saved.gpuVendor);
    choose("affinity-config", saved.affinity);
    choose("toleration-group", saved.tolerations);
    const shm = document.getElementById("shm");
    if (shm && typeof saved.shm === "boolean" && editable(shm)) shm.checked = saved.shm;
    syncGpus();
    if (customCheck) {
      customCheck.checked = Boolean(saved.custom);
      customInput.value = saved.customImage || "";
      syncCustomImage();
    }
    form.elements.namedItem("cpu").value = saved.cpu;
    form.elements.namedItem("memory").value = saved.memory;
    const chosen = new Set(saved.configurations || []);
    for (const box of form.querySelectorAll('input[name="configurations"]')) box.checked = chosen.has(box.value);
    restoreVolume(workspace, saved.workspace);
    volumeList.replaceChildren(); // the saved volumes replace the config's defaults added at load
    volumeCount = 0;
    for (const volume of saved.datavols || []) restoreVolume(addVolume(), volume);
    checkName({ quietWhenEmpty: true });
    Gateway.banner("You were signed in again and your form was kept. Check it and press LAUNCH.", "info");
  }

  Gateway.beforeSignIn.push(() => sessionStorage.setItem(saveKey, JSON.stringify(snapshot())));

  // -- LAUNCH ---------------------------------------------------------------------------------------

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    if (!checkName({ quietWhenEmpty: false })) {
      nameInput.focus();
      return;
    }
    launch.disabled = true; // one click, one server
    launch.setAttribute("aria-busy", "true");
    try {
      await Gateway.call("POST", `/api/namespaces/${encodeURIComponent(namespace)}/notebooks`, body());
      location.assign(`/notebooks?ns=${encodeURIComponent(namespace)}`); // the list shows it starting
      return;
    } catch (err) {
      if (err.status === 401) return; // on the way to sign in; the form is saved
      const field = err.code === "notebook_exists" ? "name" : err.field;
      if (placeError(field, err.message)) {
        const invalid = form.querySelector('[aria-invalid="true"]');
        if (invalid) invalid.focus();
        Gateway.banner("The server was not created: correct the highlighted field.");
      } else {
        Gateway.banner(`The server was not created: ${err.message}`);
      }
    }
    launch.disabled = false;
    launch.removeAttribute("aria-busy");
  });

  // The spawner config's default data volumes (`dataVolumes.value`), as the web app's form starts.
  for (const preset of JSON.parse(document.getElementById("data-volumes").dataset.defaults || "[]")) addVolume(preset);
  syncServerType();
  syncGpus();
  restore();
  followName();
  launch.disabled = false; // ready: LAUNCH (and Enter in a field) now posts through this script
})();
