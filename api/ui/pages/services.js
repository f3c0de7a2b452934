// Services: one row per service x environment (requests, error rate, p95, trend), sortable and filterable.
import * as api from "../lib/api.js";
import { h, Panel, SortableTable, sparkline } from "../lib/dom.js";
import * as fmt from "../lib/format.js";

const TREND_CONCURRENCY = 4;

export function mount(root, ctx) {
  const nameInput = h("input", { type: "search", placeholder: "Filter by name", "aria-label": "Filter services by name",
    value: ctx.query.get("q") || "" });
  const envSelect = h("select", { "aria-label": "Environment" }, h("option", { value: "" }, "All environments"));
  root.append(h("h1", {}, "Services"));
  const panel = new Panel(root, "Services", { tools: [nameInput, envSelect] });
  const seconds = ctx.rangeMs / 1000;
  const trends = new Map(); // "service|env" -> values
  const table = new SortableTable({
    label: "Services",
    rowKey: (r) => `${r.service_name}|${r.environment}`,
    sort: { key: "request_count", dir: "desc" },
    onOpen: (r) => ctx.go("service", r.service_name, { env: r.environment }),
    columns: [
      { key: "service_name", label: "Service", className: "wrap",
        render: (r) => h("a", { href: ctx.href("service", r.service_name, { env: r.environment }) }, r.service_name) },
      { key: "environment", label: "Environment" },
      { key: "request_count", label: "Requests", num: true,
        render: (r) => h("span", { title: `${r.request_count} requests` }, `${fmt.count(r.request_count)} · ${fmt.rate(r.request_count / seconds)}`) },
      { key: "error_rate", label: "Error rate", num: true,
        render: (r) => h("span", { class: r.error_rate >= 0.05 ? "bad-text" : "" }, fmt.percent(r.error_rate)) },
      { key: "latency_p95_ms", label: "p95", num: true, render: (r) => fmt.ms(r.latency_p95_ms) },
      { key: "trend", label: "Trend", sortable: false, className: "hide-narrow",
        render: (r) => { const v = trends.get(`${r.service_name}|${r.environment}`); return v ? sparkline(v) : "…"; } },
    ],
  });
  panel.body.append(table.el);
  let rows = [];
  let environments = new Set();

  function shown() {
    const needle = nameInput.value.trim().toLowerCase();
    const env = envSelect.value;
    return rows.filter((r) => (!needle || r.service_name.toLowerCase().includes(needle)) && (!env || r.environment === env));
  }

  function draw() {
    const visible = shown();
    table.setRows(visible);
    if (!rows.length) return "No services sent data in this range.";
    return visible.length ? "" : "No service matches the filters.";
  }

  function fillEnvironments() {
    const wanted = ctx.env || envSelect.value;
    for (const env of [...new Set(rows.map((r) => r.environment))].sort()) {
      if (!environments.has(env)) {
        environments.add(env);
        envSelect.append(h("option", { value: env }, env));
      }
    }
    if (wanted && environments.has(wanted)) envSelect.value = wanted;
  }

  const redraw = () => panel.setStatus(draw());
  nameInput.addEventListener("input", () => { ctx.remember({ q: nameInput.value }); redraw(); });
  envSelect.addEventListener("change", () => { ctx.remember({ env: envSelect.value }); redraw(); });

  async function loadTrends(visible) {
    const queue = [...visible];
    const worker = async () => {
      while (queue.length && ctx.alive()) {
        const r = queue.shift();
        try {
          const series = await api.get(`/query/services/${api.enc(r.service_name)}/metrics`, {
            metric: "http_requests_total", environment: r.environment, from: ctx.from() });
          trends.set(`${r.service_name}|${r.environment}`, (series[0]?.points || []).map((p) => p.value));
        } catch { trends.set(`${r.service_name}|${r.environment}`, []); }
      }
    };
    await Promise.all(Array.from({ length: TREND_CONCURRENCY }, worker));
    if (ctx.alive()) table.render();
  }

  return {
    async refresh() {
      const answer = await panel.load(
        () => api.get("/query/services", { from: ctx.from(), limit: 1000 }),
        (data) => { rows = data.services; fillEnvironments(); return draw(); });
      if (answer) {
        ctx.ready();
        loadTrends(rows);
      }
    },
  };
}
