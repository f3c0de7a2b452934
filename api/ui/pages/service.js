// One service: RED charts, endpoints, root traces (filters, paging), error groups, logs (full text), and its
// callers and callees from the service map.
import * as api from "../lib/api.js";
import { Chart, timeSeries } from "../lib/charts.js";
import { h, Panel, SortableTable, replace } from "../lib/dom.js";
import * as fmt from "../lib/format.js";

const PAGE_SIZE = 20;

export function mount(root, ctx) {
  const service = ctx.arg;
  const path = `/query/services/${api.enc(service)}`;
  const envSelect = h("select", { "aria-label": "Environment" }, h("option", { value: "" }, "All environments"));
  const kpis = h("div", { class: "kpis", "aria-label": "Totals" });
  root.append(h("h1", {}, service), h("div", { class: "panel-head" }, envSelect), kpis);
  const env = () => envSelect.value || ctx.env;
  const charts = h("div", { class: "grid" });
  root.append(charts);
  const ratePanel = new Panel(charts, "Request rate");
  const errorPanel = new Panel(charts, "Error rate");
  const latencyPanel = new Panel(charts, "Latency p50 / p95 / p99");
  const rateChart = new Chart(ratePanel.body, { label: "Request rate over time" });
  const errorChart = new Chart(errorPanel.body, { label: "Error rate over time" });
  const latencyChart = new Chart(latencyPanel.body, { label: "Latency percentiles over time" });
  const seconds = ctx.rangeMs / 1000;

  const lower = h("div", { class: "stack" });
  root.append(lower);
  const endpointsPanel = new Panel(lower, "Endpoints", { id: "endpoints" });
  const endpoints = new SortableTable({
    label: "Endpoints", rowKey: (r) => r.endpoint_name, sort: { key: "request_count", dir: "desc" },
    columns: [
      { key: "endpoint_name", label: "Endpoint", className: "wrap mono" },
      { key: "request_count", label: "Requests", num: true,
        render: (r) => `${fmt.count(r.request_count)} · ${fmt.rate(r.request_count / seconds)}` },
      { key: "error_rate", label: "Error rate", num: true,
        render: (r) => h("span", { class: r.error_rate >= 0.05 ? "bad-text" : "" }, fmt.percent(r.error_rate)) },
      { key: "latency_p95_ms", label: "p95", num: true, render: (r) => fmt.ms(r.latency_p95_ms) },
    ],
  });
  endpointsPanel.body.append(endpoints.el);

  // Root traces: status and duration filters, paging; kept in the URL.
  const traceState = { status: ctx.query.get("status") || "", min: ctx.query.get("min_ms") || "",
    max: ctx.query.get("max_ms") || "", page: Number(ctx.query.get("page")) || 1,
    sort: ctx.query.get("sort") || "start_time_desc" };
  const statusSelect = h("select", { "aria-label": "Trace status" },
    h("option", { value: "" }, "Any status"), h("option", { value: "OK" }, "OK"), h("option", { value: "ERROR" }, "Error"));
  statusSelect.value = traceState.status;
  const minInput = h("input", { type: "number", min: "0", step: "any", placeholder: "min ms", size: "7",
    "aria-label": "Minimum duration (ms)", value: traceState.min });
  const maxInput = h("input", { type: "number", min: "0", step: "any", placeholder: "max ms", size: "7",
    "aria-label": "Maximum duration (ms)", value: traceState.max });
  const sortSelect = h("select", { "aria-label": "Trace order" },
    h("option", { value: "start_time_desc" }, "Newest first"), h("option", { value: "duration_desc" }, "Slowest first"),
    h("option", { value: "duration_asc" }, "Fastest first"), h("option", { value: "start_time_asc" }, "Oldest first"));
  sortSelect.value = traceState.sort;
  const tracesPanel = new Panel(lower, "Traces", { id: "traces", tools: [statusSelect, minInput, maxInput, sortSelect] });
  const traces = new SortableTable({
    label: "Root traces", rowKey: (r) => r.trace_id, sort: { key: "start_time", dir: "desc" },
    onOpen: (r) => ctx.go("trace", r.trace_id),
    columns: [
      { key: "start_time", label: "Started", sortValue: (r) => Date.parse(r.start_time), render: (r) => fmt.time(r.start_time) },
      { key: "root_span_name", label: "Root span", className: "wrap",
        render: (r) => h("a", { href: ctx.href("trace", r.trace_id) }, r.root_span_name) },
      { key: "status", label: "Status", render: (r) => h("span", { class: r.status === "ERROR" ? "bad-text" : "ok-text" }, r.status) },
      { key: "duration_ms", label: "Duration", num: true, render: (r) => fmt.ms(r.duration_ms) },
      { key: "environment", label: "Environment", className: "hide-narrow" },
    ],
  });
  const pageInfo = h("span", { class: "note" });
  const prev = h("button", { type: "button" }, "‹ Newer");
  const next = h("button", { type: "button" }, "Older ›");
  tracesPanel.body.append(traces.el, h("div", { class: "pager" }, prev, pageInfo, next));

  const errorsPanel = new Panel(lower, "Error groups", { id: "errors" });
  const errors = new SortableTable({
    label: "Error groups", rowKey: (r) => r.fingerprint, sort: { key: "count", dir: "desc" },
    columns: [
      { key: "sample_message", label: "Message", className: "wrap", render: (r) => h("span", { title: r.fingerprint }, r.sample_message) },
      { key: "count", label: "Count", num: true, render: (r) => fmt.count(r.count) },
      { key: "last_seen", label: "Last seen", sortValue: (r) => Date.parse(r.last_seen), render: (r) => fmt.time(r.last_seen) },
      { key: "last_trace_id", label: "Trace", sortable: false,
        render: (r) => (r.last_trace_id ? h("a", { href: ctx.href("trace", r.last_trace_id) }, "open") : "–") },
    ],
  });
  errorsPanel.body.append(errors.el);

  const search = h("input", { type: "search", placeholder: "Search logs (all words)", "aria-label": "Search logs",
    value: ctx.query.get("log_q") || "" });
  const levelSelect = h("select", { "aria-label": "Log level" }, h("option", { value: "" }, "Any level"),
    ["ERROR", "WARN", "INFO", "DEBUG"].map((l) => h("option", { value: l }, l)));
  levelSelect.value = ctx.query.get("level") || "";
  const logsPanel = new Panel(lower, "Logs", { id: "logs", tools: [search, levelSelect] });
  const logList = h("div", { class: "scroll" });
  logsPanel.body.append(logList);

  const deps = h("div", { class: "grid" });
  lower.append(deps);
  const callersPanel = new Panel(deps, "Callers");
  const calleesPanel = new Panel(deps, "Callees");
  const edgeTable = (label, key) => new SortableTable({
    label, rowKey: (e) => e[key], sort: { key: "request_count", dir: "desc" },
    columns: [
      { key, label: "Service", render: (e) => (e[key] === "user" ? e[key] : h("a", { href: ctx.href("service", e[key]) }, e[key])) },
      { key: "request_count", label: "Calls", num: true, render: (e) => `${fmt.count(e.request_count)} · ${fmt.rate(e.request_count / seconds)}` },
      { key: "error_rate", label: "Errors", num: true, render: (e) => fmt.percent(e.error_rate) },
      { key: "latency_p95_ms", label: "p95", num: true, render: (e) => fmt.ms(e.latency_p95_ms) },
    ],
  });
  const callers = edgeTable("Callers", "source");
  const callees = edgeTable("Callees", "target");
  callersPanel.body.append(callers.el);
  calleesPanel.body.append(callees.el);

  const base = () => ({ from: ctx.from(), environment: env() });

  async function loadCharts() {
    const [all, p99] = await Promise.all([
      api.get(`${path}/metrics`, base()),
      api.get(`${path}/metrics`, { ...base(), metric: "latency_p99_ms" }).catch(() => []),
    ]);
    const byName = Object.fromEntries([...all, ...p99].map((s) => [s.metric_name, s.points]));
    const counts = byName.http_requests_total || [];
    const step = counts.length > 1 ? (Date.parse(counts[1].timestamp) - Date.parse(counts[0].timestamp)) / 1000 : 60;
    const xy = (points, scale = 1) => (points || []).map((p) => [Date.parse(p.timestamp), p.value * scale]);
    const total = counts.reduce((sum, p) => sum + p.value, 0);
    rateChart.set(timeSeries([{ name: "requests/s", points: xy(counts, 1 / step), colour: "#2458d3" }], fmt.rate, { area: true }));
    errorChart.set(timeSeries([{ name: "error rate", points: xy(byName.error_rate), colour: "#c62828" }], fmt.percent, { area: true }));
    latencyChart.set(timeSeries([
      { name: "p50", points: xy(byName.latency_p50_ms), colour: "#59a14f" },
      { name: "p95", points: xy(byName.latency_p95_ms), colour: "#f28e2b" },
      { name: "p99", points: xy(byName.latency_p99_ms), colour: "#b07aa1" },
    ], fmt.ms));
    for (const [chart, points] of [[rateChart, counts], [errorChart, byName.error_rate], [latencyChart, byName.latency_p95_ms]]) {
      chart.el.dataset.points = String((points || []).filter((p) => p.value > 0).length);
    }
    return total;
  }

  async function refreshCharts() {
    const empty = "No requests in this range.";
    const total = await ratePanel.load(loadCharts, (t) => t === 0, empty);
    for (const panel of [errorPanel, latencyPanel]) panel.setStatus(ratePanel.status.textContent, ratePanel.status.className.includes("error"));
    return total;
  }

  async function refreshEndpoints() {
    return endpointsPanel.load(() => api.get(`${path}/endpoints`, { ...base(), limit: 200 }), (data) => {
      endpoints.setRows(data.endpoints);
      const sum = data.endpoints.reduce((acc, e) => acc + e.request_count, 0);
      const errs = data.endpoints.reduce((acc, e) => acc + e.request_count * e.error_rate, 0);
      replace(kpis, h("span", {}, "Requests ", h("b", {}, fmt.count(sum)), ` (${fmt.rate(sum / seconds)})`),
        h("span", {}, "Errors ", h("b", {}, fmt.percent(sum ? errs / sum : 0))),
        h("span", {}, "Range ", h("b", {}, ctx.range)), h("span", {}, "Times in ", h("b", {}, fmt.zone)));
      return data.endpoints.length === 0;
    }, "No endpoints served requests in this range.");
  }

  async function refreshTraces() {
    const params = { ...base(), status: traceState.status, min_duration_ms: traceState.min, max_duration_ms: traceState.max,
      page: traceState.page, size: PAGE_SIZE, sort: traceState.sort };
    return tracesPanel.load(() => api.get(`${path}/traces`, params), (data) => {
      traces.sort = { key: traceState.sort.startsWith("duration") ? "duration_ms" : "start_time",
        dir: traceState.sort.endsWith("asc") ? "asc" : "desc" };
      traces.setRows(data.traces);
      const pages = Math.max(1, Math.ceil(data.total / PAGE_SIZE));
      pageInfo.textContent = `Page ${traceState.page} of ${fmt.count(pages)} · ${fmt.count(data.total)} traces`;
      prev.disabled = traceState.page <= 1;
      next.disabled = traceState.page >= pages || traceState.page * PAGE_SIZE >= 10_000;
      return data.traces.length === 0;
    }, "No traces match.");
  }

  function traceFilters() {
    Object.assign(traceState, { status: statusSelect.value, min: minInput.value, max: maxInput.value, sort: sortSelect.value });
    ctx.remember({ status: traceState.status, min_ms: traceState.min, max_ms: traceState.max, sort: traceState.sort,
      page: traceState.page > 1 ? traceState.page : "" });
    refreshTraces();
  }
  for (const el of [statusSelect, sortSelect]) el.addEventListener("change", () => { traceState.page = 1; traceFilters(); });
  for (const el of [minInput, maxInput]) el.addEventListener("change", () => { traceState.page = 1; traceFilters(); });
  prev.addEventListener("click", () => { traceState.page = Math.max(1, traceState.page - 1); traceFilters(); });
  next.addEventListener("click", () => { traceState.page += 1; traceFilters(); });

  async function refreshErrors() {
    return errorsPanel.load(() => api.get(`${path}/errors`, { ...base(), limit: 50 }), (data) => {
      errors.setRows(data.groups);
      if (data.truncated) return `Counts cover the newest ${fmt.count(data.scanned)} errors of the range.`;
      return data.groups.length === 0;
    }, "No errors in this range.");
  }

  async function refreshLogs() {
    const params = { ...base(), service_name: service, message: search.value.trim(), level: levelSelect.value, size: 50 };
    return logsPanel.load(() => api.get("/query/logs", params), (data) => {
      replace(logList, h("table", { "aria-label": "Logs" },
        h("thead", {}, h("tr", {}, h("th", {}, "Time"), h("th", {}, "Level"), h("th", {}, "Message"), h("th", { class: "hide-narrow" }, "Trace"))),
        h("tbody", {}, data.items.map((log) => h("tr", {},
          h("td", { class: "num" }, fmt.time(log.timestamp)),
          h("td", {}, h("span", { class: `pill ${log.level}` }, log.level)),
          h("td", { class: "wrap" }, log.message),
          h("td", { class: "hide-narrow" }, log.trace_id ? h("a", { href: ctx.href("trace", log.trace_id) }, "open") : "–"))))));
      if (data.total > data.items.length && data.items.length) return `Newest ${data.items.length} of ${fmt.count(data.total)} logs.`;
      return data.items.length === 0;
    }, search.value.trim() ? "No logs contain these words." : "No logs in this range.");
  }
  let typing;
  search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { ctx.remember({ log_q: search.value.trim() }); refreshLogs(); }, 300);
  });
  levelSelect.addEventListener("change", () => { ctx.remember({ level: levelSelect.value }); refreshLogs(); });

  async function refreshDeps() {
    const data = await callersPanel.load(() => api.get(`${path}/dependencies`, base()), (d) => {
      callers.setRows(d.callers);
      return d.callers.length === 0;
    }, "No callers in this range.");
    if (data) {
      callees.setRows(data.callees);
      calleesPanel.setStatus(data.callees.length ? "" : "No callees in this range.");
    } else {
      calleesPanel.setStatus(callersPanel.status.textContent, true);
    }
  }

  async function fillEnvironments() {
    try {
      const data = await api.get("/query/services", { from: ctx.from(), name_filter: service, limit: 1000 });
      const envs = [...new Set(data.services.filter((s) => s.service_name === service).map((s) => s.environment))].sort();
      const have = new Set([...envSelect.options].map((o) => o.value));
      for (const e of envs) if (!have.has(e)) envSelect.append(h("option", { value: e }, e));
      if (ctx.env && !have.has(ctx.env) && !envs.includes(ctx.env)) envSelect.append(h("option", { value: ctx.env }, ctx.env));
      envSelect.value = ctx.env;
    } catch { /* the filter stays "all" */ }
  }
  envSelect.addEventListener("change", () => { ctx.go("service", service, { env: envSelect.value }); });

  let first = true;
  return {
    async refresh() {
      if (first) {
        if (ctx.env) envSelect.append(h("option", { value: ctx.env }, ctx.env));
        envSelect.value = ctx.env;
        fillEnvironments();
      }
      first = false;
      const endpointsDone = refreshEndpoints();
      const chartsDone = refreshCharts();
      const rest = Promise.all([refreshTraces(), refreshErrors(), refreshLogs(), refreshDeps()]);
      await Promise.all([endpointsDone, chartsDone]);
      ctx.ready();
      await rest;
    },
    destroy() {
      clearTimeout(typing);
      for (const chart of [rateChart, errorChart, latencyChart]) chart.dispose();
    },
  };
}
