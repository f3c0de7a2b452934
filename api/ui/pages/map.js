// The service map: services and calls with RED numbers on nodes and edges (ECharts graph, laid out in layers
// from the callers), and the same calls as a table. A click on a service opens it.
import * as api from "../lib/api.js";
import { Chart } from "../lib/charts.js";
import { colour, h, Panel, SortableTable } from "../lib/dom.js";
import * as fmt from "../lib/format.js";

// Layers: a node's column is the longest call path reaching it from a node nothing calls (cycles cut).
export function layers(nodes, edges) {
  const incoming = new Map(nodes.map((n) => [n.service_name, []]));
  for (const e of edges) incoming.get(e.target)?.push(e.source);
  const depth = new Map();
  const visiting = new Set();
  const walk = (name) => {
    if (depth.has(name)) return depth.get(name);
    if (visiting.has(name)) return 0;
    visiting.add(name);
    const d = Math.max(-1, ...(incoming.get(name) || []).map(walk)) + 1;
    visiting.delete(name);
    depth.set(name, d);
    return d;
  };
  for (const n of nodes) walk(n.service_name);
  return depth;
}

export function mount(root, ctx) {
  root.append(h("h1", {}, "Service map"));
  const graphPanel = new Panel(root, "Services and calls");
  const chart = new Chart(graphPanel.body, { className: "map", label: "Graph of services and the calls between them",
    onClick: (params) => { if (params.dataType === "node" && !params.data.virtual) ctx.go("service", params.data.name); } });
  const seconds = ctx.rangeMs / 1000;
  const edgesPanel = new Panel(root, "Calls", { id: "calls" });
  const table = new SortableTable({
    label: "Calls between services", rowKey: (e) => `${e.source}→${e.target}`, sort: { key: "request_count", dir: "desc" },
    columns: [
      { key: "source", label: "Caller", render: (e) => link(e.source) },
      { key: "target", label: "Callee", render: (e) => link(e.target) },
      { key: "request_count", label: "Calls", num: true, render: (e) => `${fmt.count(e.request_count)} · ${fmt.rate(e.request_count / seconds)}` },
      { key: "error_rate", label: "Errors", num: true, render: (e) => h("span", { class: e.error_rate >= 0.05 ? "bad-text" : "" }, fmt.percent(e.error_rate)) },
      { key: "latency_p95_ms", label: "p95", num: true, render: (e) => fmt.ms(e.latency_p95_ms) },
    ],
  });
  edgesPanel.body.append(table.el);
  let virtual = new Set();

  function link(name) {
    return virtual.has(name) ? h("span", { title: "not a traced service" }, name) : h("a", { href: ctx.href("service", name) }, name);
  }

  function draw(data) {
    const depth = layers(data.nodes, data.edges);
    const columns = new Map();
    for (const n of [...data.nodes].sort((a, b) => b.request_count - a.request_count)) {
      const d = depth.get(n.service_name) || 0;
      if (!columns.has(d)) columns.set(d, []);
      columns.get(d).push(n);
    }
    const maxCount = Math.max(1, ...data.nodes.map((n) => n.request_count));
    const nodes = [];
    for (const [d, members] of columns) {
      members.forEach((n, i) => nodes.push({
        name: n.service_name, x: d * 260, y: (i - (members.length - 1) / 2) * 110,
        symbol: n.virtual ? "roundRect" : "circle",
        symbolSize: 18 + 26 * Math.sqrt(n.request_count / maxCount),
        itemStyle: { color: n.virtual ? "#9aa3b2" : colour(n.service_name),
          borderColor: n.error_rate >= 0.05 ? "#c62828" : "#fff", borderWidth: n.error_rate >= 0.05 ? 3 : 1 },
        label: { show: true, position: "bottom", fontSize: 11, lineHeight: 14,
          formatter: `{b|${n.service_name}}\n${fmt.rate(n.request_count / seconds)} · ${fmt.percent(n.error_rate)} · p95 ${fmt.ms(n.latency_p95_ms)}`,
          rich: { b: { fontWeight: "bold", fontSize: 12 } } },
        tooltip: { formatter: `<b>${escape(n.service_name)}</b>${n.virtual ? " (not traced)" : ""}<br>${fmt.count(n.request_count)} requests (${fmt.rate(n.request_count / seconds)})<br>errors ${fmt.percent(n.error_rate)}<br>p95 ${fmt.ms(n.latency_p95_ms)}${n.unpaired_count ? `<br>${fmt.count(n.unpaired_count)} calls to unknown callees` : ""}` },
        virtual: n.virtual,
      }));
    }
    const maxEdge = Math.max(1, ...data.edges.map((e) => e.request_count));
    const links = data.edges.map((e) => ({
      source: e.source, target: e.target,
      lineStyle: { width: 1 + 4 * Math.sqrt(e.request_count / maxEdge), color: e.error_rate >= 0.05 ? "#e57373" : "#9aa8c0" },
      numbers: `${fmt.rate(e.request_count / seconds)} · ${fmt.percent(e.error_rate)} · ${fmt.ms(e.latency_p95_ms)}`,
      tooltip: { formatter: `${escape(e.source)} → ${escape(e.target)}<br>${fmt.count(e.request_count)} calls (${fmt.rate(e.request_count / seconds)})<br>errors ${fmt.percent(e.error_rate)}<br>p95 ${fmt.ms(e.latency_p95_ms)}` },
    }));
    chart.set({
      animation: false,
      tooltip: { confine: true },
      series: [{
        type: "graph", layout: "none", roam: true, data: nodes, links, edgeSymbol: ["none", "arrow"], edgeSymbolSize: 8,
        lineStyle: { curveness: 0.12, opacity: 0.85 },
        // Edge numbers show on hover (and in the tooltip and the table below): always-on edge labels were
        // drawn away from their curves by ECharts 5.6 with fixed positions (layout "none").
        edgeLabel: { show: false, position: "middle", fontSize: 10, color: "#3a4458", backgroundColor: "rgba(255,255,255,0.8)",
          padding: [1, 3], formatter: (p) => p.data.numbers },
        emphasis: { focus: "adjacency", edgeLabel: { show: true, fontSize: 12, fontWeight: "bold" } },
        labelLayout: { hideOverlap: false },
      }],
    });
    chart.el.dataset.nodes = String(nodes.length);
    chart.el.dataset.edges = String(links.length);
  }

  return {
    async refresh() {
      const data = await graphPanel.load(() => api.get("/query/service-map", { from: ctx.from(), environment: ctx.env }), (d) => {
        virtual = new Set(d.nodes.filter((n) => n.virtual).map((n) => n.service_name));
        draw(d);
        table.setRows(d.edges);
        edgesPanel.setStatus(d.edges.length ? "" : "No calls between services in this range.");
        return d.nodes.length === 0;
      }, "No services or calls in this range.");
      if (data) ctx.ready();
      else if (!edgesPanel.hasData) edgesPanel.setStatus(graphPanel.status.textContent, true);
    },
    destroy() { chart.dispose(); },
  };
}

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
