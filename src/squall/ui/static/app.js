// Squall dashboard: plain JavaScript, no build step, no dependency (see docs/ui.md).
// Every read and write goes through /api/v1 (and two /ui/api views) with the API key the user
// signed in with, held in sessionStorage only: never in a URL, a cookie or localStorage.
"use strict";

const KEY = "squall.auth";
const NS = "/api/v1/namespaces/_";
const STATUS = ["success", "application error", "developer error", "whisk error"];
const FEEDS = { cron: "alarm", interval: "interval", once: "once" };
const LIMIT_UNITS = { timeout: " ms", memory: " MB", logs: " MB" };
const view = { timers: [], seen: null, filters: { name: "", status: "", since: "", upto: "", live: true } };

// -- small helpers -------------------------------------------------------------------------

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}

function svg(tag, attrs, ...kids) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  setAttrs(el, attrs);
  for (const kid of kids.flat(Infinity)) if (kid) el.append(kid instanceof Node ? kid : String(kid));
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.setAttribute("class", v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

function announce(text) {
  const region = document.getElementById("announce");
  region.textContent = "";
  setTimeout(() => { region.textContent = text; }, 50);
}

// A refresh that works again clears the problem an earlier one showed (a store back up).
function every(ms, fn) {
  const run = () => fn().then(clearProblem, showError);
  view.timers.push(setInterval(run, ms));
  return run();
}

function showError(err) {
  if (err && err.signedOut) return;
  const box = document.getElementById("problem");
  if (box) box.textContent = String(err && err.message ? err.message : err);
}

function clearProblem() {
  const box = document.getElementById("problem");
  if (box) box.textContent = "";
}

function time(ms) {
  if (!ms) return "–";
  const when = new Date(ms);
  return when.toDateString() === new Date().toDateString() ? when.toLocaleTimeString() : when.toLocaleString();
}
function clock(ms) { return ms ? new Date(ms).toLocaleTimeString() : "–"; }
function ms(value) { return value === null || value === undefined ? "–" : `${Math.round(value * 10) / 10} ms`; }
function relative(when) {
  const s = Math.round((when - Date.now()) / 1000);
  if (Math.abs(s) < 1) return "now";
  const span = Math.abs(s) < 120 ? `${Math.abs(s)} s` : `${Math.round(Math.abs(s) / 60)} min`;
  return s > 0 ? `in ${span}` : `${span} ago`;
}
function annotation(record, key) {
  const found = (record.annotations || []).find((a) => a.key === key);
  return found ? found.value : undefined;
}
function statusBadge(code) {
  return h("span", { class: `badge ${code === 0 ? "ok" : "bad"}` }, STATUS[code] || `status ${code}`);
}
function actionPath(name) { return name.split("/").map(encodeURIComponent).join("/"); }
function pretty(value) { return JSON.stringify(value, null, 2); }

// Re-render a live region without losing the keyboard focus inside it.
function replaceKeepingFocus(container, ...kids) {
  const active = document.activeElement;
  const key = active && container.contains(active) ? active.getAttribute("data-key") : null;
  container.replaceChildren(...kids);
  if (key) {
    const again = container.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (again) again.focus();
  }
}

// -- the API -------------------------------------------------------------------------------

async function api(path, options = {}) {
  const auth = sessionStorage.getItem(KEY);
  if (!auth) throw signOut();
  const headers = { Authorization: "Basic " + btoa(auth), Accept: "application/json" };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    cache: "no-store",
    credentials: "omit",
  });
  if (response.status === 401) throw signOut("The key was refused; sign in again.");
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!response.ok && !(options.accept || []).includes(response.status)) {
    const message = data && data.error ? data.error : `HTTP ${response.status}`;
    throw new Error(`${message}${data && data.code ? ` (code ${data.code})` : ""}`);
  }
  return { status: response.status, data };
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  route(message);
  return { signedOut: true };
}

// -- routing -------------------------------------------------------------------------------

function route(message) {
  for (const timer of view.timers) clearInterval(timer);
  view.timers = [];
  const signedIn = Boolean(sessionStorage.getItem(KEY));
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("signout").hidden = !signedIn;
  if (!signedIn) {
    document.getElementById("who").textContent = "";
    return render(signInPage(message));
  }
  const [section, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  const name = rest.map(decodeURIComponent).join("/");
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.section === (section || "activations")) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const pages = {
    activations: name ? () => activationPage(name) : activationsPage,
    actions: name ? () => actionPage(name) : actionsPage,
    triggers: triggersPage,
    system: systemPage,
  };
  return render((pages[section] || activationsPage)());
}

function render(content) {
  const main = document.getElementById("main");
  main.replaceChildren(content);
  const heading = main.querySelector("h1");
  document.title = heading ? `${heading.textContent} · Squall` : "Squall";
}

function page(title, ...kids) {
  return h("section", {}, h("h1", {}, title), h("p", { id: "problem", class: "error", role: "alert" }), kids);
}

// -- sign in -------------------------------------------------------------------------------

function signInPage(message) {
  const input = h("input", { id: "key", name: "key", type: "password", autocomplete: "off",
    required: true, spellcheck: "false", "aria-describedby": "key-help" });
  const problem = h("p", { class: "error", role: "alert" }, message || "");
  const form = h("form", { class: "panel signin", onsubmit: async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!/^[^:\s]+:[^:\s]+$/.test(key)) { problem.textContent = "The key has the form uuid:key."; return; }
    sessionStorage.setItem(KEY, key);
    try {
      await whoAmI();
      route();
    } catch (err) {
      if (!err.signedOut) { sessionStorage.removeItem(KEY); problem.textContent = String(err.message || err); }
    }
  } },
  h("h1", {}, "Sign in"),
  h("label", { for: "key" }, "API key (uuid:key)", input),
  h("p", { id: "key-help", class: "muted" },
    "The key of a namespace, as `squall property get --auth` shows it. It is kept in this ",
    "browser tab only (sessionStorage) and sent as HTTP Basic credentials, like the CLI does."),
  problem,
  h("button", { type: "submit" }, "Sign in"));
  setTimeout(() => input.focus(), 0);
  return form;
}

async function whoAmI() {
  const { data } = await api("/api/v1/namespaces");
  document.getElementById("who").textContent = `namespace ${data[0]}`;
}

// -- activations ---------------------------------------------------------------------------

function activationsPage() {
  view.seen = null;
  const f = view.filters;
  const timeline = h("div", { class: "timeline", id: "timeline" });
  const table = h("div", { class: "scroll", id: "activation-list" });
  const refresh = () => loadActivations(timeline, table);
  const update = (key) => (event) => {
    f[key] = event.target.type === "checkbox" ? event.target.checked : event.target.value;
    view.seen = null;
    refresh().then(clearProblem, showError);
  };
  const form = h("form", { class: "filters panel", role: "search", onsubmit: (e) => e.preventDefault() },
    h("label", {}, "Name", h("input", { id: "filter-name", type: "search", value: f.name, placeholder: "action or trigger", oninput: update("name") })),
    h("label", {}, "Status", h("select", { id: "filter-status", onchange: update("status") },
      h("option", { value: "" }, "any"),
      STATUS.map((s, i) => h("option", { value: i, selected: f.status === String(i) }, s)))),
    h("label", {}, "Since", h("input", { id: "filter-since", type: "datetime-local", value: f.since, onchange: update("since") })),
    h("label", {}, "Until", h("input", { id: "filter-upto", type: "datetime-local", value: f.upto, onchange: update("upto") })),
    h("label", { class: "inline" }, h("input", { id: "filter-live", type: "checkbox", checked: f.live, onchange: update("live") }), "Live"));
  refresh().then(clearProblem, showError);
  view.timers.push(setInterval(() => { if (f.live) refresh().then(clearProblem, showError); }, 2000));
  return page("Activations", form,
    h("div", { class: "panel" }, h("h2", {}, "Timeline"), timeline),
    h("div", { class: "panel" }, h("h2", {}, "Recent activations"), table));
}

async function loadActivations(timeline, table) {
  const f = view.filters;
  const params = new URLSearchParams({ limit: "100" });
  if (f.name.trim()) params.set("name", f.name.trim());
  if (f.since) params.set("since", String(new Date(f.since).getTime()));
  if (f.upto) params.set("upto", String(new Date(f.upto).getTime()));
  const { data } = await api(`${NS}/activations?${params}`);
  const records = f.status === "" ? data : data.filter((r) => String(r.statusCode) === f.status);
  const firstLoad = view.seen === null;
  const seen = view.seen || new Set();
  const fresh = records.filter((r) => !seen.has(r.activationId));
  for (const r of records) seen.add(r.activationId);
  view.seen = seen;
  if (!firstLoad && fresh.length) announce(`${fresh.length} new activation${fresh.length > 1 ? "s" : ""}`);
  replaceKeepingFocus(timeline, timelineChart(records.slice(0, 40)));
  replaceKeepingFocus(table, activationTable(records, firstLoad ? new Set() : new Set(fresh.map((r) => r.activationId))));
}

function activationTable(records, fresh) {
  if (!records.length) return h("p", { class: "muted" }, "No activations match.");
  return h("table", {},
    h("caption", { class: "sr-only" }, "Activations, newest first"),
    h("thead", {}, h("tr", {}, h("th", {}, "Start"), h("th", {}, "Name"), h("th", {}, "Status"),
      h("th", { class: "num" }, "Duration"), h("th", { class: "wide" }, "Start kind"), h("th", { class: "wide" }, "Activation"))),
    h("tbody", {}, records.map((r) => h("tr", { class: fresh.has(r.activationId) ? "new" : null, "data-id": r.activationId },
      h("td", {}, time(r.start)),
      h("td", {}, h("a", { href: `#/activations/${r.activationId}`, "data-key": `a-${r.activationId}` }, r.name)),
      h("td", {}, statusBadge(r.statusCode)),
      h("td", { class: "num" }, `${r.duration ?? 0} ms`),
      h("td", { class: "wide" }, startKind(r)),
      h("td", { class: "wide" }, h("code", {}, r.activationId))))));
}

function startKind(record) {
  const kind = annotation(record, "kind");
  if (kind === "sequence") return "sequence";
  if (annotation(record, "initTime") !== undefined) return h("span", { class: "cold" }, "cold");
  return annotation(record, "waitTime") !== undefined ? "warm" : "–";
}

// One bar per activation, oldest on the left: its height is the duration (the cold start's
// init time in orange at its foot, an error in red), the queue wait a faint cap on top. A time
// axis would shrink millisecond runs spread over minutes to slivers; order keeps them readable.
function timelineChart(records) {
  if (!records.length) return h("p", { class: "muted" }, "Nothing to draw yet.");
  const ordered = [...records].reverse();
  const width = 1000, height = 160, slot = width / Math.max(ordered.length, 12);
  const total = (r) => (r.duration || 0) + (annotation(r, "waitTime") || 0);
  const top = Math.max(1, ...ordered.map(total));
  const y = (value) => (value / top) * (height - 4);
  const bars = ordered.map((r, i) => {
    const wait = annotation(r, "waitTime") || 0, init = Math.min(annotation(r, "initTime") || 0, r.duration || 0);
    const x = i * slot + slot * 0.15, w = slot * 0.7;
    const run = Math.max(y(r.duration || 0), 2), cold = init ? Math.max(y(init), 2) : 0;
    const label = `${r.name}: ${STATUS[r.statusCode] || r.statusCode}, ${r.duration ?? 0} ms` +
      (init ? `, cold start (init ${init} ms)` : "") + (wait ? `, waited ${wait} ms` : "") + `, at ${clock(r.start)}`;
    return svg("a", { href: `#/activations/${r.activationId}`, "aria-label": label, class: "tl-bar", "data-id": r.activationId },
      svg("title", {}, label),
      svg("rect", { class: "bar-hit", x: i * slot, y: 0, width: slot, height }),
      wait ? svg("rect", { class: "bar-wait", x, y: height - run - Math.max(y(wait), 1), width: w, height: Math.max(y(wait), 1) }) : null,
      svg("rect", { class: r.statusCode === 0 ? "bar-ok" : "bar-bad", x, y: height - run, width: w, height: run }),
      init ? svg("rect", { class: "bar-cold", x, y: height - cold, width: w, height: cold }) : null);
  });
  const first = ordered[0].start, last = ordered[ordered.length - 1].start;
  return h("figure", {},
    svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", height, role: "group",
      "aria-label": `Durations of the ${records.length} most recent activations, oldest first` }, bars),
    h("div", { class: "axis" }, h("span", {}, clock(first)), h("span", {}, `tallest ${top} ms`), h("span", {}, clock(last))),
    h("ul", { class: "legend" },
      h("li", {}, h("span", { class: "swatch sw-ok" }), "success"),
      h("li", {}, h("span", { class: "swatch sw-bad" }), "error"),
      h("li", {}, h("span", { class: "swatch sw-cold" }), "cold start (init)"),
      h("li", {}, h("span", { class: "swatch sw-wait" }), "waiting for a container")));
}

// -- one activation ------------------------------------------------------------------------

function activationPage(id) {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  showActivation(id, body).catch(showError);
  return page(`Activation ${id}`, body);
}

// A record is written a moment after its run ends (and later while the store is down): a link
// followed early waits for it instead of failing.
async function showActivation(id, body) {
  let r = null;
  for (let attempt = 0; attempt < 30 && location.hash.endsWith(id); attempt++) {
    const { status, data } = await api(`${NS}/activations/${encodeURIComponent(id)}`, { accept: [404] });
    if (status !== 404) { r = data; break; }
    body.replaceChildren(h("p", { class: "muted" }, "Waiting for the activation record to be stored…"));
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  if (!r) return;
  const chain = h("ol", { class: "chain", "aria-label": "Chain of causes" }, h("li", {}, "…"));
  body.replaceChildren(
    h("div", { class: "grid" },
      h("div", { class: "panel" }, h("h2", {}, r.name, " ", statusBadge(r.statusCode)), facts(r)),
      h("div", { class: "panel" }, h("h2", {}, "Chain of causes"), chain)),
    h("div", { class: "panel" }, h("h2", {}, "Result"), h("pre", { id: "result", tabindex: "0" }, pretty(r.response))),
    h("div", { class: "panel" }, h("h2", { id: "logs-heading" }, "Logs"),
      (r.logs || []).length ? h("pre", { id: "logs", tabindex: "0", "aria-labelledby": "logs-heading" }, r.logs.join("\n")) : h("p", { class: "muted", id: "logs" }, "No log lines.")),
    h("div", { class: "panel" }, h("h2", {}, "Annotations"), annotationsTable(r.annotations || [])));
  chain.replaceChildren(...(await causes(r)));
}

function facts(r) {
  const init = annotation(r, "initTime"), wait = annotation(r, "waitTime"), limits = annotation(r, "limits");
  const rows = [
    ["Activation", h("code", {}, r.activationId)], ["Namespace", r.namespace], ["Version", r.version],
    ["Start", time(r.start)], ["End", time(r.end)], ["Duration", `${r.duration ?? 0} ms`],
    ["Start kind", init !== undefined ? h("span", { class: "cold" }, `cold (init ${init} ms)`) : (wait !== undefined ? "warm" : "–")],
    ["Wait", wait !== undefined ? `${wait} ms` : "–"], ["Kind", annotation(r, "kind") || "–"],
    ["Limits", limits ? `${limits.memory} MB, ${limits.timeout} ms` : "–"],
    ["Cause", r.cause ? h("a", { href: `#/activations/${r.cause}` }, r.cause) : "–"],
  ];
  return h("dl", { class: "facts" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function annotationsTable(annotations) {
  if (!annotations.length) return h("p", { class: "muted" }, "None.");
  return h("table", {}, h("tbody", {}, annotations.map((a) =>
    h("tr", {}, h("th", { scope: "row" }, a.key), h("td", {}, h("code", {}, typeof a.value === "string" ? a.value : JSON.stringify(a.value)))))));
}

function ruleLines(record) {
  const lines = [];
  for (const line of record.logs || []) {
    try {
      const value = JSON.parse(line);
      if (value && typeof value === "object" && "rule" in value) lines.push(value);
    } catch { /* an ordinary log line */ }
  }
  return lines;
}

function link(id, text) { return h("a", { href: `#/activations/${id}` }, text); }

// trigger -> rule -> action when a trigger caused this; the rules a trigger activation ran;
// the components of a sequence (its logs are their activation ids, as in OpenWhisk).
async function causes(r) {
  const items = [];
  if (r.cause) {
    const { data: parent } = await api(`${NS}/activations/${encodeURIComponent(r.cause)}`, { accept: [404] });
    const rule = parent && parent.logs ? ruleLines(parent).find((l) => l.activationId === r.activationId) : null;
    if (rule) items.push(h("li", {}, "trigger ", link(parent.activationId, parent.name)), h("li", {}, "rule ", h("code", {}, rule.rule)));
    else if (parent && parent.name) items.push(h("li", {}, "sequence ", link(parent.activationId, parent.name)));
    else items.push(h("li", {}, "cause ", h("code", {}, r.cause), " (record not found)"));
  }
  const lines = ruleLines(r);
  if (lines.length) {
    items.push(h("li", {}, "trigger ", h("strong", {}, r.name)));
    items.push(h("li", {}, h("ul", {}, lines.map((l) => h("li", {}, "rule ", h("code", {}, l.rule), " → action ",
      h("code", {}, l.action), " ", l.activationId ? link(l.activationId, l.activationId) : h("span", { class: "bad" }, l.error))))));
    return items;
  }
  if (annotation(r, "kind") === "sequence") {
    items.push(h("li", {}, "sequence ", h("strong", {}, r.name)));
    items.push(h("li", {}, h("ol", {}, (r.logs || []).map((id) => h("li", {}, link(id, id))))));
    return items;
  }
  items.push(h("li", {}, "action ", h("strong", {}, r.name)));
  return items.length > 1 ? items : [h("li", {}, "invoked directly: ", h("strong", {}, r.name))];
}

// -- actions -------------------------------------------------------------------------------

function actionsPage() {
  const list = h("div", { class: "scroll" }, h("p", { class: "muted" }, "Loading…"));
  api(`${NS}/actions?limit=200`).then(({ data }) => {
    list.replaceChildren(data.length ? h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Kind"), h("th", { class: "wide" }, "Version"),
        h("th", { class: "num" }, "Memory"), h("th", { class: "num wide" }, "Timeout"))),
      h("tbody", {}, data.map((a) => {
        const name = a.namespace.includes("/") ? `${a.namespace.split("/").slice(1).join("/")}/${a.name}` : a.name;
        const limits = a.limits || {};
        return h("tr", {}, h("td", {}, h("a", { href: `#/actions/${actionPath(name)}` }, name)),
          h("td", {}, annotation(a, "exec") || (a.exec && a.exec.kind) || "–"), h("td", { class: "wide" }, a.version),
          h("td", { class: "num" }, limits.memory ? `${limits.memory} MB` : "–"),
          h("td", { class: "num wide" }, limits.timeout ? `${limits.timeout} ms` : "–"));
      }))) : h("p", { class: "muted" }, "No actions yet: `squall action create NAME FILE`."));
  }).catch(showError);
  return page("Actions", h("div", { class: "panel" }, list));
}

function actionPage(name) {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  api(`${NS}/actions/${actionPath(name)}`).then(({ data }) => body.replaceChildren(actionDetail(name, data))).catch(showError);
  return page(`Action ${name}`, body);
}

function actionDetail(name, a) {
  const exec = a.exec || {};
  const limits = a.limits || {};
  const code = exec.code !== undefined ? (exec.binary ? "(binary code, not shown)" : exec.code)
    : (exec.components ? `sequence of ${exec.components.join(", ")}` : "(no code)");
  return h("div", {},
    h("div", { class: "grid" },
      h("div", { class: "panel" }, h("h2", {}, "Limits"), h("dl", { class: "facts" },
        Object.entries(limits).map(([k, v]) => [h("dt", {}, k), h("dd", {}, typeof v === "object" ? JSON.stringify(v) : `${v}${LIMIT_UNITS[k] || ""}`)]),
        h("dt", {}, "kind"), h("dd", {}, exec.kind || "–"), h("dt", {}, "version"), h("dd", {}, a.version))),
      invokeForm(name)),
    h("div", { class: "panel" }, h("h2", {}, "Code"), h("pre", { id: "code", tabindex: "0" }, h("code", {}, code))),
    h("div", { class: "panel" }, h("h2", {}, "Default parameters"), annotationsTable(a.parameters || [])),
    h("div", { class: "panel" }, h("h2", {}, "Annotations"), annotationsTable(a.annotations || [])));
}

function invokeForm(name) {
  const params = h("textarea", { id: "params", name: "params", "aria-describedby": "params-help", spellcheck: "false" }, "{}");
  const blocking = h("input", { id: "blocking", type: "checkbox", checked: true });
  const outcome = h("div", { id: "invoke-outcome", role: "status", "aria-live": "polite" });
  const button = h("button", { type: "submit", id: "invoke" }, "Invoke");
  return h("form", { class: "panel", onsubmit: async (event) => {
    event.preventDefault();
    let body;
    try {
      body = JSON.parse(params.value || "{}");
      if (!body || typeof body !== "object" || Array.isArray(body)) throw new Error("not an object");
    } catch (err) {
      outcome.replaceChildren(h("p", { class: "error" }, `Parameters must be a JSON object: ${err.message}`));
      params.focus();
      return;
    }
    button.disabled = true;
    try {
      const query = blocking.checked ? "?blocking=true" : "";
      const { status, data } = await api(`${NS}/actions/${actionPath(name)}${query}`, { method: "POST", body, accept: [502] });
      const id = data.activationId;
      outcome.replaceChildren(
        h("p", {}, status === 202 ? "Accepted: " : "Finished: ", link(id, id), data.statusCode !== undefined ? [" ", statusBadge(data.statusCode)] : null,
          " · ", h("a", { href: "#/activations" }, "see it in the list")),
        data.response ? h("pre", {}, pretty(data.response.result)) : null);
    } catch (err) {
      outcome.replaceChildren(h("p", { class: "error" }, String(err.message || err)));
    } finally {
      button.disabled = false;
    }
  } },
  h("h2", {}, "Invoke"),
  h("label", { for: "params" }, "Parameters (JSON object)", params),
  h("p", { id: "params-help", class: "muted" }, 'For example {"name": "Squall"}. Merged over the default parameters.'),
  h("div", { class: "row" }, h("label", { class: "inline" }, blocking, "Wait for the result"), button),
  outcome);
}

// -- triggers, rules and alarms ------------------------------------------------------------

function triggersPage() {
  const triggers = h("div", { class: "scroll" }), rules = h("div", { class: "scroll", id: "rules" });
  const alarms = h("div", { id: "alarms" });
  every(2000, async () => {
    const [t, r, a] = await Promise.all([api(`${NS}/triggers?limit=200`), api(`${NS}/rules?limit=200`), api("/ui/api/alarms")]);
    replaceKeepingFocus(triggers, triggerTable(t.data));
    replaceKeepingFocus(rules, ruleTable(r.data));
    const shown = a.data.alarms.length < a.data.total ? h("p", { class: "muted" }, `The first ${a.data.alarms.length} of ${a.data.total} alarms, by trigger name.`) : null;
    replaceKeepingFocus(alarms, ...alarmCards(a.data.alarms), shown || "");
  });
  return page("Triggers, rules & alarms",
    h("div", { class: "panel" }, h("h2", {}, "Alarms"), alarms),
    h("div", { class: "panel" }, h("h2", {}, "Rules"), rules),
    h("div", { class: "panel" }, h("h2", {}, "Triggers"), triggers));
}

function triggerTable(triggers) {
  if (!triggers.length) return h("p", { class: "muted" }, "No triggers.");
  return h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Feed"), h("th", {}, "Activations"))),
    h("tbody", {}, triggers.map((t) => h("tr", {}, h("td", {}, t.name), h("td", {}, annotation(t, "feed") || "–"),
      h("td", {}, h("a", { href: "#/activations", "data-key": `tr-${t.name}`, onclick: () => { view.filters.name = t.name; } }, "show"))))));
}

function ruleTable(rules) {
  if (!rules.length) return h("p", { class: "muted" }, "No rules.");
  return h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Rule"), h("th", {}, "Trigger"), h("th", {}, "Action"), h("th", {}, "Status"), h("th", {}, h("span", { class: "sr-only" }, "Change")))),
    h("tbody", {}, rules.map((r) => {
      const active = r.status === "active";
      const button = h("button", { type: "button", class: "secondary", "data-key": `rule-${r.name}`, "data-rule": r.name,
        "aria-label": `${active ? "Disable" : "Enable"} rule ${r.name}`, onclick: async () => {
          // aria-busy, not disabled: a disabled button drops the keyboard focus.
          if (button.getAttribute("aria-busy")) return;
          button.setAttribute("aria-busy", "true");
          try {
            await api(`${NS}/rules/${encodeURIComponent(r.name)}`, { method: "POST", body: { status: active ? "inactive" : "active" } });
            announce(`Rule ${r.name} ${active ? "disabled" : "enabled"}`);
            r.status = active ? "inactive" : "active";
            replaceKeepingFocus(document.getElementById("rules"), ruleTable(rules));
          } catch (err) { showError(err); button.removeAttribute("aria-busy"); }
        } }, active ? "Disable" : "Enable");
      return h("tr", {}, h("td", {}, r.name), h("td", {}, r.trigger.name), h("td", {}, r.action.name),
        h("td", { class: "rule-status" }, h("span", { class: `badge ${active ? "ok" : "warn"}` }, r.status)), h("td", {}, button));
    })));
}

function alarmCards(alarms) {
  if (!alarms.length) return [h("p", { class: "muted" }, "No alarms. Create one with `squall trigger create T --feed /whisk.system/alarms/alarm -p cron '*/5 * * * *'`.")];
  return alarms.map((a) => {
    const state = a.paused ? ["paused", "warn"] : (a.status.active ? ["active", "ok"] : ["disabled", "bad"]);
    const button = h("button", { type: "button", class: "secondary", "data-key": `alarm-${a.trigger}`,
      "aria-label": `${a.paused ? "Resume" : "Pause"} alarm ${a.trigger}`, onclick: async () => {
        if (button.getAttribute("aria-busy")) return;
        button.setAttribute("aria-busy", "true");
        try {
          await api(`/api/v1/namespaces/whisk.system/actions/alarms/${FEEDS[a.kind]}?blocking=true`,
            { method: "POST", body: { lifecycleEvent: a.paused ? "UNPAUSE" : "PAUSE", triggerName: `/_/${a.trigger}` } });
          announce(`Alarm ${a.trigger} ${a.paused ? "resumed" : "paused"}`);
        } catch (err) { showError(err); button.removeAttribute("aria-busy"); }
      } }, a.paused ? "Resume" : "Pause");
    const expr = a.config.cron ? `cron ${a.config.cron}` : (a.config.minutes ? `every ${a.config.minutes} min` : `once ${a.config.date}`);
    return h("article", { class: "panel alarm", "data-trigger": a.trigger },
      h("div", { class: "row" }, h("h3", {}, a.trigger), h("span", { class: `badge ${state[1]}` }, state[0]), button),
      h("p", { class: "words" }, h("strong", {}, a.words), " ", h("code", { class: "muted" }, expr)),
      a.status.reason ? h("p", { class: "warn" }, `Reason: ${a.status.reason.message}`) : null,
      h("p", { class: "muted" }, `misfire policy ${a.misfire_policy}, ${a.fires_count} fires so far`, a.jitter_s ? `, jitter ${a.jitter_s} s` : ""),
      h("div", { class: "grid" },
        h("div", {}, h("h4", {}, "Next fires"), a.next.length
          ? h("ol", { class: "times next-fires" }, a.next.map((t) => h("li", {}, time(Date.parse(t)), " ", h("span", { class: "muted" }, `(${relative(Date.parse(t))})`))))
          : h("p", { class: "muted" }, "none scheduled")),
        h("div", { class: "scroll" }, h("h4", {}, "Last fires"), a.fires.length ? h("table", { class: "last-fires" },
          h("thead", {}, h("tr", {}, h("th", {}, "Tick"), h("th", { class: "num" }, "Lag"), h("th", {}, "Outcome"))),
          h("tbody", {}, a.fires.map((f) => h("tr", {}, h("td", {}, link(f.activationId, clock(Date.parse(f.tick)))),
            h("td", { class: "num" }, ms(f.lagMs)), h("td", {}, f.outcome.replace(/_/g, " "), f.catchup ? " (catch-up)" : "")))))
          : h("p", { class: "muted" }, a.last_fire ? `last fire ${time(Date.parse(a.last_fire.firedAt))}, lag ${ms(a.last_fire.lagMs)}` : "no fire yet"))),
      a.events.length ? h("div", {}, h("h4", {}, "Misfire and throttling events"),
        h("ul", {}, a.events.map((e) => h("li", {}, clock(Date.parse(e.tick)), ": ", e.what)))) : null);
  });
}

// -- system --------------------------------------------------------------------------------

function systemPage() {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  every(2000, async () => {
    const { data } = await api("/ui/api/system");
    replaceKeepingFocus(body, systemView(data));
  });
  return page("System", body);
}

function systemView(s) {
  const checks = Object.entries(s.checks);
  const a = s.alarms;
  return h("div", {},
    h("p", { id: "overall", class: `panel ${s.ready ? "ok" : "bad"}` }, h("strong", {}, s.ready ? "Ready" : "Not ready"),
      " · roles: ", s.roles.map((r, i) => [i ? ", " : "", `${r.role} ${r.ready ? "ready" : `not ready (${r.waitingFor.join(", ").replace(/_/g, " ")})`}`])),
    h("div", { class: "panel scroll" }, h("h2", {}, "Dependencies"), h("table", { id: "checks" },
      h("thead", {}, h("tr", {}, h("th", {}, "Check"), h("th", {}, "State"), h("th", {}, "Reason"), h("th", { class: "wide" }, "Fix"))),
      h("tbody", {}, checks.map(([name, c]) => h("tr", { "data-check": name }, h("td", {}, name.replace(/_/g, " ")),
        h("td", {}, h("span", { class: `badge ${c.state === "ok" ? "ok" : c.ready ? "warn" : "bad"}` }, c.state)),
        h("td", {}, c.reason || "–"), h("td", { class: "wide" }, c.fix || "–")))))),
    h("div", { class: "grid" },
      numbers("Queues", { "action queues": s.queues.queues, "queued activations": s.queues.queued, "containers starting": s.queues.creating }),
      numbers("Containers", { ...s.containers, "memory reserved": `${s.memoryMb} MB` }),
      numbers("Prewarm pool", { ready: s.prewarm.ready, target: s.prewarm.target }),
      numbers("Activations", { ...s.activations, "records not yet stored": s.pendingRecords }),
      numbers("Alarms", { alarms: a.alarms, active: a.active, paused: a.paused, fires: a.fires, throttled: a.throttled,
        "missed ticks": a.missed_ticks, "catch-up fires": a.catchup_fires, "dropped ticks": a.dropped_ticks })),
    h("div", { class: "grid" },
      chart("Alarm fire lag (ms)", s.history, [["lagP50Ms", "p50", "a"], ["lagP99Ms", "p99", "b"]]),
      chart("Activation latency (ms)", s.history, [["meanMs", "mean", "a"], ["p95Ms", "p95 (bucket bound)", "b"]]),
      chart("Action runs per second", s.history, [["perSecond", "finished", "c"]])));
}

function numbers(title, values) {
  return h("div", { class: "panel" }, h("h2", {}, title), h("dl", { class: "facts" },
    Object.entries(values).map(([k, v]) => [h("dt", {}, k.replace(/_/g, " ")), h("dd", {}, String(v))])));
}

// A line chart of the samples the server kept while someone watched (see ui/history.py).
function chart(title, points, series) {
  const width = 600, height = 140;
  const values = points.flatMap((p) => series.map(([key]) => p[key]).filter((v) => typeof v === "number"));
  const top = Math.max(1, ...values) * 1.1;
  const t0 = points.length ? points[0].t : 0, t1 = points.length ? points[points.length - 1].t : 1;
  const x = (t) => ((t - t0) / Math.max(t1 - t0, 1)) * width, y = (v) => height - (v / top) * height;
  const lines = series.map(([key, , cls]) => {
    const coords = points.filter((p) => typeof p[key] === "number").map((p) => `${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`);
    if (coords.length === 1) {  // one point is no line: mark it
      const [cx, cy] = coords[0].split(",");
      return svg("circle", { class: `line-${cls}`, cx, cy, r: 4, fill: "none", "stroke-width": 2, "vector-effect": "non-scaling-stroke" });
    }
    return coords.length ? svg("polyline", { class: `line-${cls}`, fill: "none", "stroke-width": 2, "vector-effect": "non-scaling-stroke", points: coords.join(" ") }) : null;
  });
  const latest = points.length ? points[points.length - 1] : {};
  const summary = series.map(([key, name]) => `${name} ${typeof latest[key] === "number" ? latest[key] : "–"}`).join(", ");
  return h("figure", { class: "panel chart" }, h("figcaption", {}, h("h2", {}, title)),
    points.length < 2 ? h("p", { class: "muted" }, "Collecting samples while this page is open…")
      : svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", height, role: "img", "aria-label": `${title}: latest ${summary}` }, lines),
    h("div", { class: "axis" }, h("span", {}, points.length ? clock(t0) : ""), h("span", {}, `max ${Math.round(top / 1.1 * 10) / 10}`), h("span", {}, points.length ? clock(t1) : "")),
    h("ul", { class: "legend" }, series.map(([, name, cls]) => h("li", {}, h("span", { class: `swatch sw-${cls}` }), name))),
    h("p", { class: "muted" }, `latest: ${summary}`));
}

// -- start ---------------------------------------------------------------------------------

window.addEventListener("hashchange", () => route());
document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("signout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    location.hash = "";
    route("Signed out.");
  });
  if (sessionStorage.getItem(KEY)) whoAmI().catch(showError);
  route();
});
