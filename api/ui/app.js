// The shell: hash routing (#/page/arg?range=1h&env=...), the shared time range, the refresh loop (pausable),
// the API-health banner and the token form. Each page module exports mount(root, ctx) -> {refresh, destroy}.
import * as api from "./lib/api.js";

export const RANGES = { "15m": 15 * 60_000, "1h": 60 * 60_000, "24h": 24 * 3600_000, "7d": 7 * 86_400_000,
  "14d": 14 * 86_400_000 };
const PAGES = {
  services: () => import("./pages/services.js"),
  service: () => import("./pages/service.js"),
  trace: () => import("./pages/trace.js"),
  errors: () => import("./pages/errors.js"),
  map: () => import("./pages/map.js"),
};
const EVERY_KEY = "panopticon.refresh";

const view = document.getElementById("view");
const rangeSelect = document.getElementById("range");
const everySelect = document.getElementById("every");
const pauseButton = document.getElementById("pause");
const banner = document.getElementById("banner");
let current = null; // {page, timer, mountId}
let mounts = 0;
let paused = false;

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, search = ""] = raw.split("?");
  const [name, ...rest] = path.split("/");
  return { name: PAGES[name] ? name : "services", arg: rest.length ? decodeURIComponent(rest.join("/")) : "",
    query: new URLSearchParams(search) };
}

export function href(page, arg = "", extra = {}) {
  const now = parseHash().query;
  const query = new URLSearchParams();
  for (const key of ["range", "env"]) if (now.get(key)) query.set(key, now.get(key));
  for (const [key, value] of Object.entries(extra)) {
    if (value === undefined || value === null || value === "") query.delete(key); else query.set(key, value);
  }
  const qs = query.toString();
  return `#/${page}${arg ? `/${encodeURIComponent(arg)}` : ""}${qs ? `?${qs}` : ""}`;
}

function context(route, mountId) {
  const range = RANGES[route.query.get("range")] ? route.query.get("range") : "1h";
  const started = performance.now();
  let announced = false;
  return {
    arg: route.arg,
    query: route.query,
    range,
    rangeMs: RANGES[range],
    env: route.query.get("env") || "",
    // `from` on a 10 s grid: the API keeps sliding answers for 5 s per (from, to) question.
    from() {
      return new Date(Math.floor((Date.now() - RANGES[range]) / 10_000) * 10_000).toISOString();
    },
    href,
    go(page, arg, extra) { location.hash = href(page, arg, extra); },
    // Page-local state into the URL without re-mounting (filters, paging).
    remember(updates) {
      const q = parseHash().query;
      for (const [key, value] of Object.entries(updates)) {
        if (value === undefined || value === null || value === "") q.delete(key); else q.set(key, value);
      }
      const { name, arg } = parseHash();
      const qs = q.toString();
      history.replaceState(null, "", `#/${name}${arg ? `/${encodeURIComponent(arg)}` : ""}${qs ? `?${qs}` : ""}`);
    },
    alive: () => current && current.mountId === mountId,
    // The page's first data is on screen: mark it (the end-to-end test measures it).
    ready() {
      if (announced || !(current && current.mountId === mountId)) return;
      announced = true;
      const elapsed = Math.round(performance.now() - started);
      view.dataset.ready = "true";
      view.dataset.firstDataMs = String(elapsed);
    },
  };
}

async function render() {
  const route = parseHash();
  stop();
  const mountId = ++mounts;
  for (const link of document.querySelectorAll("[data-nav]")) {
    const on = link.dataset.nav === route.name || (route.name === "service" && link.dataset.nav === "services")
      || (route.name === "trace" && link.dataset.nav === "services");
    link.classList.toggle("current", on);
    if (on) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
    link.href = href(link.dataset.nav);
  }
  rangeSelect.value = RANGES[route.query.get("range")] ? route.query.get("range") : "1h";
  delete view.dataset.ready;
  delete view.dataset.firstDataMs;
  view.replaceChildren();
  let module;
  try {
    module = await PAGES[route.name]();
  } catch (err) {
    view.textContent = `This page could not be loaded (${err.message}).`;
    return;
  }
  if (mountId !== mounts) return;
  const ctx = context(route, mountId);
  const page = module.mount(view, ctx);
  current = { page, mountId, timer: null, busy: false };
  await refresh(current);
  schedule(current);
}

async function refresh(state) {
  if (state.busy || !state.page.refresh) return;
  state.busy = true;
  try { await state.page.refresh(); } catch (err) { console.warn("refresh failed", err); }
  state.busy = false;
}

function schedule(state) {
  const seconds = Number(everySelect.value) || 15;
  state.timer = setTimeout(async () => {
    if (current !== state) return;
    if (!paused && !document.hidden) await refresh(state);
    if (current === state) schedule(state);
  }, seconds * 1000);
}

function stop() {
  if (!current) return;
  clearTimeout(current.timer);
  try { current.page.destroy?.(); } catch (err) { console.warn("destroy failed", err); }
  current = null;
}

function setupControls() {
  let saved = null;
  try { saved = localStorage.getItem(EVERY_KEY); } catch { /* no storage: the default */ }
  if (saved && [...everySelect.options].some((o) => o.value === saved)) everySelect.value = saved; else everySelect.value = "15";
  everySelect.addEventListener("change", () => {
    try { localStorage.setItem(EVERY_KEY, everySelect.value); } catch { /* kept for this page only */ }
    if (current) { clearTimeout(current.timer); schedule(current); }
  });
  rangeSelect.addEventListener("change", () => {
    const { name, arg, query } = parseHash();
    query.set("range", rangeSelect.value);
    location.hash = `#/${name}${arg ? `/${encodeURIComponent(arg)}` : ""}?${query}`;
  });
  pauseButton.addEventListener("click", () => {
    paused = !paused;
    pauseButton.setAttribute("aria-pressed", String(paused));
    pauseButton.textContent = paused ? "Resume" : "Pause";
    if (!paused && current) refresh(current);
  });
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  document.getElementById("token").addEventListener("click", () => {
    form.hidden = !form.hidden;
    if (!form.hidden) { input.value = api.token(); input.focus(); }
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    api.setToken(input.value.trim());
    form.hidden = true;
    render();
  });
  document.getElementById("token-clear").addEventListener("click", () => {
    api.setToken("");
    input.value = "";
    form.hidden = true;
    render();
  });
  api.onHealth((problem) => {
    banner.hidden = !problem;
    banner.textContent = problem || "";
    banner.className = problem && problem.includes("token") ? "bad" : "";
  });
  api.config().then((cfg) => {
    if (cfg && cfg.auth_required && !api.token()) {
      form.hidden = false;
      banner.hidden = false;
      banner.className = "bad";
      banner.textContent = "This API needs a token: enter it below (it stays in this browser).";
    }
  });
}

setupControls();
window.addEventListener("hashchange", render);
render();
