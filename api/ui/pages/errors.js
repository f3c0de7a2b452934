// Live errors: the bridge's WebSocket feed, newest first, with a service filter. Reconnects on its own.
import * as api from "../lib/api.js";
import { h, Panel } from "../lib/dom.js";
import * as fmt from "../lib/format.js";

const KEEP = 500;

export function feedUrl(cfg) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const token = api.token();
  const query = token ? `?access_token=${encodeURIComponent(token)}` : "";
  return `${scheme}://${location.hostname}:${cfg.error_stream.port}${cfg.error_stream.path}${query}`;
}

export function mount(root, ctx) {
  const filter = h("input", { type: "search", placeholder: "Filter by service", "aria-label": "Filter errors by service",
    value: ctx.query.get("service") || "" });
  const clear = h("button", { type: "button" }, "Clear");
  const state = h("span", { class: "note", role: "status" }, "Connecting…");
  root.append(h("h1", {}, "Live errors"));
  const panel = new Panel(root, "Errors as they happen", { tools: [state, filter, clear] });
  const list = h("ul", { class: "feed", "aria-label": "Live errors, newest first", "aria-live": "off" });
  panel.body.append(list);
  panel.setStatus("Waiting for errors…");
  const events = [];
  let socket = null;
  let retry = null;
  let delay = 1000;
  let closed = false;
  let received = 0;

  const matches = (e) => {
    const needle = filter.value.trim().toLowerCase();
    return !needle || (e.service_name || "").toLowerCase().includes(needle);
  };

  function item(e, fresh) {
    return h("li", { class: fresh ? "fresh" : "", "data-service": e.service_name || "" },
      h("span", { class: "mono" }, fmt.time(e.timestamp)),
      h("span", {}, e.service_name ? h("a", { href: ctx.href("service", e.service_name, { env: e.environment }) }, e.service_name) : "–",
        h("span", { class: "note" }, ` ${e.environment || ""}`)),
      h("span", { class: "wrap" }, h("span", { class: `pill ${e.level || "ERROR"}` }, e.level || "ERROR"), " ",
        e.http_method || e.http_status_code ? h("span", { class: "note" }, `${[e.http_method, e.http_path, e.http_status_code].filter(Boolean).join(" ")} `) : null,
        e.message || "",
        e.trace_id ? [" ", h("a", { href: ctx.href("trace", e.trace_id) }, "trace")] : null));
  }

  function redraw() {
    list.replaceChildren(...events.filter(matches).map((e) => item(e, false)));
    describe();
  }

  function describe() {
    const shown = list.children.length;
    if (!events.length) panel.setStatus("No errors yet: new ones appear here as they happen.");
    else if (!shown) panel.setStatus("No error matches the service filter.");
    else panel.setStatus("");
  }

  function add(event) {
    events.unshift(event);
    if (events.length > KEEP) events.length = KEEP;
    if (matches(event)) {
      list.prepend(item(event, true));
      while (list.children.length > KEEP) list.lastElementChild.remove();
    }
    received += 1;
    describe();
  }

  async function connect() {
    if (closed) return;
    const cfg = await api.config();
    if (closed) return;
    if (!cfg) {
      state.textContent = "Cannot read /ui/config.json; retrying.";
      retry = setTimeout(connect, 5000);
      return;
    }
    if (!cfg.error_stream.origin_allowed) {
      state.textContent = "The live feed refuses this page's origin: add it to ERROR_STREAM_WS_ORIGINS.";
    }
    socket = new WebSocket(feedUrl(cfg));
    socket.addEventListener("open", () => {
      delay = 1000;
      state.textContent = "Connected";
      describe();
      ctx.ready();
    });
    socket.addEventListener("message", (message) => {
      try { add(JSON.parse(message.data)); } catch { /* not JSON: not an error event */ }
    });
    socket.addEventListener("close", () => {
      socket = null;
      if (closed) return;
      state.textContent = `Disconnected; reconnecting in ${Math.round(delay / 1000)} s.`;
      retry = setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30_000);
    });
  }

  filter.addEventListener("input", () => { ctx.remember({ service: filter.value.trim() }); redraw(); });
  clear.addEventListener("click", () => { events.length = 0; redraw(); });
  connect();

  return {
    refresh() { /* pushed, not polled */ },
    destroy() {
      closed = true;
      clearTimeout(retry);
      socket?.close();
    },
    get received() { return received; },
  };
}
