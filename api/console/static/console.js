// The aifactory web console: one page, no framework, nothing loaded from elsewhere.
// The API key lives in this tab's sessionStorage only and goes in the Authorization header of each call.
"use strict";

const KEY = "aifactory.key";
const main = document.getElementById("main");
let timers = [];
let me = null; // {tenant, role, key_id}

// ---- small helpers ---------------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "text") el.textContent = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function detailText(body, fallback) {
  if (!body) return fallback;
  const d = body.detail ?? body.error ?? body.message;
  if (typeof d === "string") return d;
  if (Array.isArray(d)) return d.map((e) => `${(e.loc || []).slice(1).join(".")}: ${e.msg}`).join("; ");
  return fallback;
}

async function api(path, options = {}, key = sessionStorage.getItem(KEY)) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (key) headers.Authorization = `Bearer ${key}`;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options = { ...options, body: JSON.stringify(options.json) };
  }
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (err) {
    throw new ApiError(0, `The API does not answer (${err.message}).`);
  }
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!response.ok) {
    const message = detailText(body, `${response.status} ${response.statusText}`);
    if (response.status === 401 && path !== "/api/auth/whoami") {
      signOut(`Signed out: the API refused the key (${message}).`);
    }
    throw new ApiError(response.status, message);
  }
  return body;
}

function when(text) {
  if (!text) return "";
  const date = typeof text === "number" ? new Date(text * 1000) : new Date(text);
  return isNaN(date) ? String(text) : date.toLocaleString();
}

function gib(mb) { return mb === null || mb === undefined ? "?" : `${(mb / 1024).toFixed(1)} GiB`; }

function phaseBadge(phase) { return h("span", { class: `phase phase-${phase}` }, phase); }

function errorBox(message) { return h("p", { class: "error", role: "alert" }, message); }

function every(ms, fn) { fn(); timers.push(setInterval(fn, ms)); }

function stopTimers() { timers.forEach(clearInterval); timers = []; }

function show(title, ...content) {
  main.replaceChildren(h("h1", {}, title), ...content);
  document.title = `${title} · aifactory console`;
  main.focus();
}

function updatedLine() { return h("p", { class: "updated" }, `Updated ${new Date().toLocaleTimeString()}`); }

// ---- sign in and out -------------------------------------------------------------------------------------

let signInMessage = null; // what the sign-in page says after a sign-out the user did not ask for

function go(hash) {
  if (location.hash === hash) route(); else location.hash = hash; // hashchange routes
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  me = null;
  signInMessage = message || null;
  go("#/signin");
}

async function whoAmI(key) { return api("/api/auth/whoami", {}, key); }

function renderSignIn(message) {
  stopTimers();
  document.getElementById("nav").hidden = true;
  const status = h("div", { id: "signin-status", "aria-live": "assertive" }, message ? errorBox(message) : null);
  const input = h("input", { id: "key", name: "key", type: "password", autocomplete: "off", required: true,
                             "aria-describedby": "key-hint", size: 60 });
  const form = h("form", { id: "signin", onsubmit: async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    status.replaceChildren(h("p", {}, "Checking the key…"));
    try {
      me = await whoAmI(key);
    } catch (err) {
      status.replaceChildren(errorBox(`Sign-in failed: ${err.message}`));
      input.focus();
      return;
    }
    sessionStorage.setItem(KEY, key);
    go("#/services");
  } },
  h("div", { class: "field" },
    h("label", { for: "key" }, "API key"),
    input,
    h("span", { id: "key-hint", class: "hint" },
      "An aifactory key (aif_…). On the local stack `python -m aifactory dev env` prints AIFACTORY_API_KEY. " +
      "The key stays in this browser tab only.")),
  h("button", { type: "submit", class: "primary" }, "Sign in"));
  show("Sign in", status, form);
  input.focus();
}

// ---- services --------------------------------------------------------------------------------------------

function serviceRow(s) {
  return h("tr", {},
    h("td", {}, h("a", { href: `#/services/${encodeURIComponent(s.id)}` }, s.name)),
    h("td", {}, s.namespace),
    h("td", {}, s.recipe),
    h("td", {}, phaseBadge(s.deleting ? "deleting" : s.phase)),
    h("td", {}, s.slurm_state || ""),
    h("td", {}, s.pending_reason || ""),
    h("td", {}, s.node || ""),
    h("td", { class: "num" }, s.job_id || ""),
    h("td", {}, when(s.created_at)));
}

function renderServices() {
  const area = h("div", { id: "services" }, h("p", {}, "Loading…"));
  show("Services", h("p", {}, h("a", { href: "#/new" }, "Create a service from a recipe")), area);
  every(2000, async () => {
    try {
      const { items } = await api("/ui/api/services");
      const table = items.length === 0 ? h("p", {}, "No services yet.") : h("div", { class: "table" },
        h("table", {},
          h("caption", {}, `${items.length} service${items.length === 1 ? "" : "s"}, updated every 2 seconds`),
          h("thead", {}, h("tr", {}, ["Name", "Namespace", "Recipe", "Phase", "Slurm state", "Pending reason",
                                      "Node", "Job", "Created"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, items.map(serviceRow))));
      area.replaceChildren(table, updatedLine());
    } catch (err) {
      area.replaceChildren(errorBox(err.message));
    }
  });
}

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function renderService(id) {
  const summary = h("div", {}, h("p", {}, "Loading…"));
  const actions = h("div", { class: "actions" });
  const status = h("div", { "aria-live": "polite" });
  const conditions = h("div", {});
  const lines = h("select", { id: "lines" }, [50, 200, 1000].map((n) => h("option", { value: n }, n)));
  lines.value = "200";
  // Whose logs: the current job (""), or one attempt (each Slurm job of the service keeps its own files).
  const attempt = h("select", { id: "attempt" }, h("option", { value: "" }, "current job"));
  const attempts = h("div", {});
  const logs = h("pre", { class: "logs", id: "logs", tabindex: "0", "aria-label": "Log tail" }, "");
  show("Service", summary, actions, status,
       h("h2", {}, "Conditions"), conditions,
       h("h2", {}, "Attempts"), attempts,
       h("h2", {}, "Log tail"),
       h("p", {}, h("label", { for: "attempt" }, "Job "), attempt, " ",
         h("label", { for: "lines" }, "Lines of each file "), lines, " ",
         h("span", { class: "muted" }, "(stdout and stderr of the Slurm job, refreshed every 3 seconds)")),
       logs);
  const act = async (label, fn) => {
    status.replaceChildren(h("p", {}, `${label}…`));
    try { await fn(); status.replaceChildren(h("p", { class: "notice" }, `${label}: done.`)); }
    catch (err) { status.replaceChildren(errorBox(`${label} failed: ${err.message}`)); }
  };
  const path = `/ui/api/services/${encodeURIComponent(id)}`;
  let shown = null;
  every(2000, async () => {
    let s;
    try { s = await api(path); } catch (err) {
      summary.replaceChildren(errorBox(err.status === 404 ? "This service does not exist (any more)." : err.message));
      actions.replaceChildren(h("a", { href: "#/services" }, "Back to the services"));
      return;
    }
    main.querySelector("h1").textContent = `Service ${s.name}`;
    summary.replaceChildren(facts([
      ["Phase", phaseBadge(s.deleting ? "deleting" : s.phase)], ["Slurm state", s.slurm_state],
      ["Pending reason", s.pending_reason], ["Expected start", when(s.expected_start)],
      ["Message", s.message], ["Recipe", s.recipe], ["Namespace", s.namespace], ["Node", s.node],
      ["Slurm job", s.job_id], ["Endpoint", s.endpoint], ["Cluster", s.cluster], ["Pinned to", s.nodelist],
      ["Settings", Object.entries(s.settings).map(([k, v]) => `${k}=${v}`).join(", ")],
      ["Resources", Object.entries(s.resources).map(([k, v]) => `${k}=${v}`).join(", ")],
      ["Created", when(s.created_at)], ["Id", s.id],
    ]));
    const state = s.actions.join(",");
    if (state !== shown) {
      shown = state;
      const buttons = {
        stop: () => h("button", { type: "button", id: "stop",
                                  onclick: () => act("Stop", () => api(`${path}/stop`, { method: "POST" })) }, "Stop"),
        start: () => h("button", { type: "button", id: "start",
                                   onclick: () => act("Start", () => api(`${path}/start`, { method: "POST" })) }, "Start"),
        delete: () => h("button", { type: "button", id: "delete", class: "danger", onclick: () => {
          if (!confirm(`Delete service ${s.name}? Its Slurm job is cancelled.`)) return;
          act("Delete", () => api(path, { method: "DELETE" }));
        } }, "Delete"),
      };
      actions.replaceChildren(...s.actions.filter((a) => buttons[a]).map((a) => buttons[a]()));
    }
    conditions.replaceChildren(s.conditions.length === 0 ? h("p", { class: "muted" }, "None yet.") :
      h("div", { class: "table" }, h("table", { id: "conditions" },
        h("thead", {}, h("tr", {}, ["Type", "Status", "Reason", "Message", "Since"].map(
          (t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, s.conditions.map((c) => h("tr", {}, h("td", {}, c.type), h("td", {}, c.status),
          h("td", {}, c.reason), h("td", {}, c.message), h("td", {}, when(c.last_transition_time))))))));
    attempts.replaceChildren(s.attempts.length === 0 ? h("p", { class: "muted" }, "No Slurm job yet.") :
      h("div", { class: "table" }, h("table", { id: "attempts" },
        h("thead", {}, h("tr", {}, ["Attempt", "Slurm job", "Started by", "Node", "Start", "End", "End state",
                                    "Exit code", "Reason"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, s.attempts.map((a) => h("tr", {}, [a.number, a.job_id, a.started_by, a.node,
          when(a.start_time), when(a.end_time), a.end_state, a.exit_code, a.reason].map(
          (v) => h("td", {}, v === null || v === undefined ? "" : String(v)))))))));
    const options = s.attempts.map((a) => `${a.number}`).join(",");
    if (attempt.dataset.options !== options) {
      attempt.dataset.options = options;
      const chosen = attempt.value;
      attempt.replaceChildren(h("option", { value: "" }, "current job"),
        ...s.attempts.slice().reverse().map((a) => h("option", { value: a.number },
          `attempt ${a.number}: job ${a.job_id}${a.reason ? ` (${a.reason})` : ""}`)));
      attempt.value = s.attempts.some((a) => `${a.number}` === chosen) ? chosen : "";
    }
  });
  every(3000, async () => {
    try {
      const which = attempt.value ? `&attempt=${attempt.value}` : "";
      const tail = await api(`${path}/logs?lines=${lines.value}${which}`);
      const atEnd = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
      logs.textContent = tail.logs;
      if (atEnd) logs.scrollTop = logs.scrollHeight;
    } catch (err) {
      if (err.status !== 404) logs.textContent = `(${err.message})`;
    }
  });
}

// ---- a new service from a recipe -------------------------------------------------------------------------

function field(id, label, input, hint) {
  input.id = id;
  if (hint) input.setAttribute("aria-describedby", `${id}-hint`);
  return h("div", { class: "field" }, h("label", { for: id }, label), input,
           hint ? h("span", { id: `${id}-hint`, class: "hint" }, hint) : null);
}

async function renderNew() {
  show("New service", h("p", {}, "Loading the recipes…"));
  let recipes;
  try { ({ items: recipes } = await api("/ui/api/recipes")); } catch (err) {
    show("New service", errorBox(err.message));
    return;
  }
  const byCategory = {};
  recipes.forEach((r) => (byCategory[r.category] ||= []).push(r));
  const select = h("select", { name: "recipe", required: true },
    h("option", { value: "" }, "Choose a recipe"),
    Object.entries(byCategory).map(([category, list]) => h("optgroup", { label: category },
      list.map((r) => h("option", { value: r.path }, `${r.path} — ${r.description}`)))));
  const settingsArea = h("div", {});
  const status = h("div", { "aria-live": "assertive" });
  const name = h("input", { name: "name", pattern: "[a-z0-9]+(-[a-z0-9]+)*", maxlength: 63 });
  const res = {
    cpu: h("input", { name: "cpu", type: "number", min: 1 }),
    memory: h("input", { name: "memory", pattern: "[0-9]+([KMGT]i?B?)?" }),
    gpu: h("input", { name: "gpu", type: "number", min: 0 }),
    time_limit: h("input", { name: "time_limit", type: "number", min: 1 }),
  };
  const renderSettings = () => {
    const recipe = recipes.find((r) => r.path === select.value);
    if (!recipe) { settingsArea.replaceChildren(); return; }
    for (const [k, input] of Object.entries(res)) {
      input.placeholder = recipe.resources[k === "time_limit" ? "timeLimit" : k] ?? "";
    }
    settingsArea.replaceChildren(recipe.settings.length === 0 ?
      h("p", { class: "muted" }, "This recipe has no settings.") :
      h("fieldset", {}, h("legend", {}, `Settings of ${recipe.path}`),
        recipe.settings.map((s) => field(`setting-${s.name}`,
          s.name + (s.name === recipe.model_setting ? " (model)" : ""),
          h("input", { name: s.name, "data-setting": s.name, placeholder: s.default ?? "" }),
          `${s.description}${s.description ? " " : ""}(sets ${s.env}; empty keeps the default)`))));
  };
  select.addEventListener("change", renderSettings);
  const form = h("form", { id: "new-service", onsubmit: async (event) => {
    event.preventDefault();
    const settings = {};
    settingsArea.querySelectorAll("[data-setting]").forEach((i) => {
      if (i.value) settings[i.dataset.setting] = i.value;
    });
    const resources = {};
    for (const [k, input] of Object.entries(res)) {
      if (input.value !== "") resources[k] = k === "memory" ? input.value : Number(input.value);
    }
    status.replaceChildren(h("p", {}, "Creating…"));
    try {
      const created = await api("/ui/api/services", { method: "POST",
        json: { recipe: select.value, name: name.value || null, settings, resources } });
      go(`#/services/${encodeURIComponent(created.id)}`);
    } catch (err) {
      status.replaceChildren(errorBox(`Not created: ${err.message}`));
    }
  } },
  field("recipe", "Recipe", select, "What to run; its settings appear below."),
  field("name", "Name", name, "Optional: lower case letters, digits and '-'; default: the recipe's name and a suffix."),
  settingsArea,
  h("fieldset", {}, h("legend", {}, "Slurm job (empty: the recipe's default)"),
    field("res-cpu", "CPUs", res.cpu), field("res-memory", "Memory", res.memory, "For example 512M or 4G."),
    field("res-gpu", "GPUs", res.gpu), field("res-time", "Time limit (minutes)", res.time_limit)),
  status,
  h("button", { type: "submit", class: "primary" }, "Create service"));
  show("New service", form);
  const wanted = new URLSearchParams(location.hash.split("?")[1] || "").get("recipe");
  if (wanted) { select.value = wanted; renderSettings(); }
}

// ---- nodes -----------------------------------------------------------------------------------------------

function gpuText(n) {
  if (n.gpus.length === 0) return "No GPU";
  const used = n.gpus.filter((g) => g.in_use).length;
  const kinds = {};
  n.gpus.forEach((g) => { kinds[g.name] = (kinds[g.name] || 0) + 1; });
  const names = Object.entries(kinds).map(([name, count]) => {
    const memory = n.gpus.find((g) => g.name === name).memory_mb;
    return `${count}× ${name}${memory ? ` (${gib(memory)})` : ""}`;
  });
  return `${used} of ${n.gpus.length} in use: ${names.join(", ")}`;
}

function renderNodes() {
  const area = h("div", {}, h("p", {}, "Loading…"));
  show("Nodes", area);
  every(5000, async () => {
    try {
      const { items } = await api("/ui/api/nodes");
      area.replaceChildren(h("div", { class: "table" }, h("table", { id: "nodes" },
        h("caption", {}, `${items.length} node${items.length === 1 ? "" : "s"}; read from Slurm at most once per the cluster's node interval`),
        h("thead", {}, h("tr", {}, ["Node", "Cluster", "State", "CPUs in use", "Memory", "GPUs", "Last contact"]
          .map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, items.map((n) => h("tr", {},
          h("td", {}, n.name),
          h("td", {}, n.cluster),
          h("td", {}, n.state, n.reason ? h("span", { class: "muted" }, ` (${n.reason})`) : null),
          h("td", { class: "num" }, h("meter", { min: 0, max: n.cpus || 1, value: n.cpus_allocated,
                                                 "aria-label": `CPUs of ${n.name} in use` }),
            ` ${n.cpus_allocated} of ${n.cpus}`),
          h("td", { class: "num" }, h("meter", { min: 0, max: n.memory_mb || 1, value: n.memory_allocated_mb,
                                                 "aria-label": `Memory of ${n.name} held by jobs` }),
            ` ${gib(n.memory_allocated_mb)} of ${gib(n.memory_mb)} held by jobs, ${gib(n.memory_free_mb)} free`),
          h("td", {}, gpuText(n)),
          h("td", {}, when(n.last_contact))))))), updatedLine());
    } catch (err) {
      area.replaceChildren(errorBox(err.message));
    }
  });
}

// ---- API keys --------------------------------------------------------------------------------------------

function renderKeys() {
  const list = h("div", {}, h("p", {}, "Loading…"));
  const made = h("div", { "aria-live": "polite", id: "made-key" });
  const name = h("input", { name: "name", required: true, maxlength: 200 });
  const role = h("select", { name: "role" }, ["inference", "management", "admin"].map((r) => h("option", { value: r }, r)));
  const load = async () => {
    try {
      const { items } = await api("/api/api-keys");
      list.replaceChildren(h("div", { class: "table" }, h("table", { id: "keys" },
        h("thead", {}, h("tr", {}, ["Name", "Prefix", "Role", "Tenant", "Created", "Last used", ""]
          .map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, items.map((k) => h("tr", {},
          h("td", {}, k.name), h("td", {}, h("code", {}, k.prefix)), h("td", {}, k.role), h("td", {}, k.tenant),
          h("td", {}, when(k.created_at)), h("td", {}, when(k.last_used) || "never"),
          h("td", {}, h("button", { type: "button", class: "danger", "aria-label": `Revoke ${k.name}`,
                                    onclick: async () => {
            if (!confirm(`Revoke key ${k.name} (${k.prefix}…)? Anything using it stops working.`)) return;
            try {
              await api(`/api/api-keys/${encodeURIComponent(k.id)}`, { method: "DELETE" });
              made.replaceChildren(h("p", { class: "notice" }, `Key ${k.name} revoked.`));
              if (me && k.id === me.key_id) { signOut("You revoked the key you signed in with."); return; }
            } catch (err) { made.replaceChildren(errorBox(`Not revoked: ${err.message}`)); }
            load();
          } }, "Revoke"))))))));
    } catch (err) {
      list.replaceChildren(errorBox(err.message));
    }
  };
  const form = h("form", { id: "new-key", onsubmit: async (event) => {
    event.preventDefault();
    try {
      const key = await api("/api/api-keys", { method: "POST", json: { name: name.value, role: role.value } });
      made.replaceChildren(h("div", { class: "notice" },
        h("p", {}, `Key ${key.name} (${key.role}) made. Copy it now: it is shown this once and stored only as a hash.`),
        h("output", { class: "key", id: "new-key-value", for: "key-name" }, key.key)));
      name.value = "";
      load();
    } catch (err) {
      made.replaceChildren(errorBox(`Not made: ${err.message}`));
    }
  } },
  h("fieldset", {}, h("legend", {}, "Make a key"),
    field("key-name", "Name", name, "What the key is for."),
    field("key-role", "Role", role, "inference: only the models; management: services and keys; admin: everything."),
    h("button", { type: "submit", class: "primary" }, "Make key")));
  show("API keys", made, form, h("h2", {}, "Keys"), list);
  load();
}

// ---- routing ---------------------------------------------------------------------------------------------

async function route() {
  stopTimers();
  const key = sessionStorage.getItem(KEY);
  const hash = location.hash || "#/services";
  if (!key || hash.startsWith("#/signin")) {
    renderSignIn(signInMessage);
    signInMessage = null;
    return;
  }
  if (!me) {
    try { me = await whoAmI(key); } catch (err) { signOut(`Sign-in failed: ${err.message}`); return; }
  }
  const nav = document.getElementById("nav");
  nav.hidden = false;
  document.getElementById("who").textContent = `Tenant ${me.tenant}, role ${me.role}`;
  nav.querySelectorAll("a").forEach((a) => {
    const current = hash === a.getAttribute("href") || hash.startsWith(`${a.getAttribute("href")}/`);
    if (current) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  });
  const [, page, id] = hash.split("?")[0].split("/");
  if (page === "services" && id) renderService(decodeURIComponent(id));
  else if (page === "new") renderNew();
  else if (page === "nodes") renderNodes();
  else if (page === "keys") renderKeys();
  else renderServices();
}

document.getElementById("signout").addEventListener("click", () => signOut());
window.addEventListener("hashchange", route);
route();
