// ECharts (npm `echarts`, copied to /ui/vendor by `make ui`) behind a few helpers.
import * as fmt from "./format.js";

let loading = null;

// The library (1 MB, 330 kB gzipped) loads only on pages with charts, alongside their first data.
export function load() {
  if (typeof window.echarts !== "undefined") return Promise.resolve(true);
  loading ??= new Promise((resolve) => {
    const script = document.createElement("script");
    script.src = "/ui/vendor/echarts.min.js";
    script.onload = () => resolve(typeof window.echarts !== "undefined");
    script.onerror = () => { loading = null; script.remove(); resolve(false); };
    document.head.append(script);
  });
  return loading;
}

const MISSING = "The chart library is missing: build the UI with `make ui` (needs Node/npm).";

export class Chart {
  constructor(parent, { className = "chart", label, onClick } = {}) {
    load();
    this.onClick = onClick;
    this.version = 0;
    this.el = document.createElement("div");
    this.el.className = className;
    this.el.setAttribute("role", "img");
    if (label) this.el.setAttribute("aria-label", label);
    parent.append(this.el);
    this.chart = null;
    this.onResize = () => this.chart?.resize();
    window.addEventListener("resize", this.onResize);
  }

  async set(option) {
    const version = ++this.version;
    if (!(await load())) {
      this.el.textContent = MISSING;
      return;
    }
    if (version !== this.version || this.disposed) return; // a newer option came meanwhile
    if (!this.chart) {
      this.chart = window.echarts.init(this.el, null, { renderer: "canvas" });
      if (this.onClick) this.chart.on("click", this.onClick);
    }
    this.chart.setOption(option, { notMerge: true });
  }

  dispose() {
    this.disposed = true;
    window.removeEventListener("resize", this.onResize);
    this.chart?.dispose();
    this.chart = null;
  }
}

// A time-series option: series = [{name, points: [[ms, value]], colour}], `format` for the axis and tooltip.
export function timeSeries(series, format, { area = false } = {}) {
  return {
    animation: false,
    grid: { left: 56, right: 12, top: 28, bottom: 28 },
    legend: { top: 0, right: 0, textStyle: { fontSize: 12 } },
    tooltip: {
      trigger: "axis",
      valueFormatter: (v) => format(v),
    },
    xAxis: { type: "time", axisLabel: { hideOverlap: true } },
    yAxis: { type: "value", min: 0, axisLabel: { formatter: (v) => format(v) }, splitNumber: 4 },
    series: series.map((s) => ({
      name: s.name, type: "line", showSymbol: false, data: s.points, color: s.colour,
      lineStyle: { width: 1.6 }, areaStyle: area ? { opacity: 0.12 } : undefined,
    })),
  };
}

export { fmt };
