// One trace: a waterfall of every span (nesting from parent ids, service colours, errors marked), span details
// on click, and the trace's logs in time order.
import * as api from "../lib/api.js";
import { colour, h, Panel, replace } from "../lib/dom.js";
import * as fmt from "../lib/format.js";

// Spans in waterfall order: depth-first from the roots (spans whose parent is absent), children by start time.
export function layout(spans) {
  const byId = new Map(spans.map((s) => [s.span_id, s]));
  const children = new Map();
  const roots = [];
  for (const span of spans) {
    const parent = span.parent_span_id && byId.has(span.parent_span_id) && span.parent_span_id !== span.span_id
      ? span.parent_span_id : null;
    if (parent) {
      if (!children.has(parent)) children.set(parent, []);
      children.get(parent).push(span);
    } else roots.push(span);
  }
  const start = (s) => Date.parse(s.timestamp);
  const byStart = (a, b) => start(a) - start(b);
  const out = [];
  const seen = new Set();
  const visit = (span, depth) => {
    if (seen.has(span.span_id)) return;
    seen.add(span.span_id);
    out.push({ span, depth });
    for (const child of (children.get(span.span_id) || []).sort(byStart)) visit(child, depth + 1);
  };
  for (const root of roots.sort(byStart)) visit(root, 0);
  for (const span of spans) if (!seen.has(span.span_id)) visit(span, 0); // a cycle of parent ids
  return out;
}

export function mount(root, ctx) {
  const traceId = ctx.arg;
  root.append(h("h1", {}, "Trace ", h("span", { class: "mono" }, traceId)));
  const summary = h("div", { class: "kpis" });
  root.append(summary);
  const waterfallPanel = new Panel(root, "Spans", { id: "waterfall" });
  const waterfall = h("div", { class: "waterfall", role: "list", "aria-label": "Spans of the trace" });
  waterfallPanel.body.append(h("div", { class: "scroll" }, waterfall));
  const detailsPanel = new Panel(root, "Span details", { id: "span-details" });
  detailsPanel.setStatus("Choose a span above to see its details.");
  const logsPanel = new Panel(root, "Logs", { id: "trace-logs" });
  let selected = null;
  let loaded = false;

  function showDetails(span) {
    selected = span.span_id;
    for (const row of waterfall.querySelectorAll(".wf-row")) row.classList.toggle("selected", row.dataset.spanId === selected);
    const fields = [
      ["Name", span.name], ["Service", span.service_name], ["Environment", span.environment], ["Kind", span.kind],
      ["Status", span.status], ["Duration", fmt.ms(span.duration_ms)], ["Start", fmt.clock(span.timestamp)],
      ["Span id", span.span_id], ["Parent span id", span.parent_span_id || "–"],
      ["HTTP", [span.http_method, span.http_path, span.http_status_code].filter((v) => v != null).join(" ") || "–"],
      ...Object.entries(span.labels || {}).map(([k, v]) => [`label ${k}`, String(v)]),
    ];
    detailsPanel.setStatus("");
    replace(detailsPanel.body, h("div", { class: "details" }, h("dl", {},
      fields.map(([k, v]) => [h("dt", {}, k), h("dd", { class: k.endsWith("id") ? "mono" : "" }, v)]))));
  }

  function drawWaterfall(spans) {
    const rows = layout(spans);
    const t0 = Math.min(...spans.map((s) => Date.parse(s.timestamp)));
    const t1 = Math.max(...spans.map((s) => Date.parse(s.timestamp) + s.duration_ms));
    const total = Math.max(t1 - t0, 0.001);
    const errors = spans.filter((s) => s.status === "ERROR").length;
    const services = [...new Set(spans.map((s) => s.service_name))];
    replace(summary, h("span", {}, "Duration ", h("b", {}, fmt.ms(total))), h("span", {}, "Spans ", h("b", {}, spans.length)),
      h("span", {}, "Services ", h("b", {}, services.length)),
      h("span", {}, "Errors ", h("b", { class: errors ? "bad-text" : "" }, errors)),
      h("span", {}, "Started ", h("b", {}, fmt.time(new Date(t0).toISOString()))));
    const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => h("span", { style: { left: `${f * 100}%` } }, fmt.ms(f * total)));
    const axis = h("div", { class: "wf-axis", "aria-hidden": "true" }, h("div", { class: "wf-label" }, "Span"), h("div", { class: "ticks" }, ticks));
    const items = rows.map(({ span, depth }) => {
      const left = ((Date.parse(span.timestamp) - t0) / total) * 100;
      const width = Math.max((span.duration_ms / total) * 100, 0.2);
      const error = span.status === "ERROR";
      const row = h("div", {
        class: "wf-row", role: "listitem", tabindex: "0", "data-span-id": span.span_id,
        "aria-label": `${span.service_name} ${span.name}, ${fmt.ms(span.duration_ms)}${error ? ", error" : ""}`,
        onclick: () => showDetails(span),
        onkeydown: (event) => {
          if (event.key === "Enter" || event.key === " ") { showDetails(span); event.preventDefault(); }
          else if (event.key === "ArrowDown") { row.nextElementSibling?.focus(); event.preventDefault(); }
          else if (event.key === "ArrowUp") { row.previousElementSibling?.focus(); event.preventDefault(); }
        },
      },
      h("div", { class: "wf-label", style: { paddingLeft: `${6 + depth * 14}px` }, title: `${span.service_name}: ${span.name}` },
        h("span", { class: "chip", style: { background: colour(span.service_name) } }),
        error ? h("span", { class: "bad-text", title: "error" }, "! ") : null,
        h("span", {}, span.name), h("span", { class: "note" }, ` · ${span.service_name}`)),
      h("div", { class: "wf-track" },
        h("div", { class: `wf-bar${error ? " error" : ""}`, style: { left: `${left}%`, width: `${width}%`, background: colour(span.service_name) } }),
        h("span", { class: "wf-dur", style: { left: `${Math.min(left + width, 100)}%` } }, fmt.ms(span.duration_ms))));
      return row;
    });
    replace(waterfall, axis, items);
    if (selected) {
      const again = spans.find((s) => s.span_id === selected);
      if (again) showDetails(again);
    }
  }

  function drawLogs(logs, spans) {
    const names = new Map(spans.map((s) => [s.span_id, s.name]));
    const sorted = [...logs].sort((a, b) => Date.parse(a.timestamp) - Date.parse(b.timestamp));
    replace(logsPanel.body, h("div", { class: "scroll" }, h("table", { "aria-label": "Logs of the trace" },
      h("thead", {}, h("tr", {}, h("th", {}, "Time"), h("th", {}, "Service"), h("th", {}, "Level"), h("th", {}, "Message"), h("th", { class: "hide-narrow" }, "Span"))),
      h("tbody", {}, sorted.map((log) => h("tr", {},
        h("td", { class: "num" }, fmt.clock(log.timestamp)),
        h("td", {}, h("span", { class: "chip", style: { background: colour(log.service_name) } }), log.service_name),
        h("td", {}, h("span", { class: `pill ${log.level}` }, log.level)),
        h("td", { class: "wrap" }, log.message),
        h("td", { class: "hide-narrow" }, log.span_id ? h("button", { type: "button", onclick: () => {
          const span = spans.find((s) => s.span_id === log.span_id);
          if (span) showDetails(span);
        } }, names.get(log.span_id) || log.span_id) : "–")))))));
  }

  return {
    async refresh() {
      if (loaded) return; // a trace does not change once it has ended; the refresh loop leaves it alone
      const data = await waterfallPanel.load(() => api.get(`/query/traces/${api.enc(traceId)}`), (d) => {
        if (d.spans.length) drawWaterfall(d.spans);
        drawLogs(d.logs, d.spans);
        logsPanel.setStatus(d.logs.length ? "" : "This trace has no logs.");
        if (d.truncated) return "This trace is large: only its first 10,000 spans and 1,000 logs are shown.";
        return d.spans.length === 0 ? "This trace has logs but no spans." : "";
      });
      if (data) {
        loaded = true;
        ctx.ready();
      } else {
        logsPanel.setStatus(waterfallPanel.status.textContent, true);
        if (waterfallPanel.status.textContent === "Not found.") waterfallPanel.setStatus(`No trace with id ${traceId} was found.`, true);
      }
    },
  };
}
