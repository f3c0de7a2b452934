// Small DOM helpers: element builder, panels with loading/empty/error states in words, sortable tables.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "style" && typeof value === "object") Object.assign(el.style, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

// A panel: heading, optional tools, a body, and a status line ("Loading…", "No …", an error) in words.
export class Panel {
  constructor(parent, title, { tools = [], id } = {}) {
    this.heading = h("h2", { text: title });
    this.tools = h("div", { class: "tools" }, tools);
    this.status = h("p", { class: "note", role: "status" }, "Loading…");
    this.body = h("div", { class: "panel-body" });
    this.el = h("section", { class: "panel", id, "aria-label": title },
      h("div", { class: "panel-head" }, this.heading, this.tools), this.status, this.body);
    this.hasData = false;
    parent.append(this.el);
  }

  // Run one load: render on success, else keep what is shown and say what went wrong.
  async load(fetcher, render, emptyText) {
    try {
      const data = await fetcher();
      const empty = render(data); // true: empty (say emptyText); a string: say that; else nothing to say
      this.hasData = true;
      this.setStatus(empty === true ? emptyText : typeof empty === "string" ? empty : "");
      return data;
    } catch (err) {
      if (err.name === "AbortError") return undefined;
      const suffix = this.hasData ? " Showing the last answer." : "";
      this.setStatus(`${err.message || "Something went wrong."}${suffix}`, true);
      return undefined;
    }
  }

  setStatus(text, isError = false) {
    this.status.textContent = text;
    this.status.hidden = !text;
    this.status.className = isError ? "note error" : "note";
  }
}

// A table whose column headers sort it (click or Enter/Space), and whose rows open on Enter or click
// (arrow keys move between rows).
export class SortableTable {
  constructor({ columns, sort, onOpen, label, rowKey }) {
    this.columns = columns;
    this.sort = sort || { key: columns[0].key, dir: "desc" };
    this.onOpen = onOpen;
    this.rowKey = rowKey;
    this.rows = [];
    this.el = h("div", { class: "scroll" });
    this.table = h("table", { "aria-label": label });
    this.el.append(this.table);
  }

  setRows(rows) {
    this.rows = rows;
    this.render();
  }

  sorted() {
    const column = this.columns.find((c) => c.key === this.sort.key) || this.columns[0];
    const value = column.sortValue || ((row) => row[column.key]);
    const factor = this.sort.dir === "asc" ? 1 : -1;
    return [...this.rows].sort((a, b) => {
      const x = value(a), y = value(b);
      if (typeof x === "string" || typeof y === "string") return factor * String(x).localeCompare(String(y));
      return factor * ((x ?? -Infinity) - (y ?? -Infinity));
    });
  }

  render() {
    const focusedKey = this.table.contains(document.activeElement) ? document.activeElement.dataset.key : null;
    const head = h("tr", {}, this.columns.map((c) => {
      const active = this.sort.key === c.key;
      const ariaSort = active ? (this.sort.dir === "asc" ? "ascending" : "descending") : "none";
      const arrow = active ? (this.sort.dir === "asc" ? " ▲" : " ▼") : "";
      return h("th", { class: [c.num ? "num" : "", c.className || ""].join(" "), "aria-sort": ariaSort, scope: "col" },
        c.sortable === false ? c.label
          : h("button", { type: "button", onclick: () => this.toggle(c.key), "data-key": c.key }, c.label + arrow));
    }));
    const body = h("tbody", {}, this.sorted().map((row, i) => {
      const key = this.rowKey ? this.rowKey(row) : String(i);
      const tr = h("tr", this.onOpen ? { tabindex: "0", "data-key": key } : { "data-key": key },
        this.columns.map((c) => h("td", { class: [c.num ? "num" : "", c.className || ""].join(" ") },
          c.render ? c.render(row) : row[c.key])));
      if (this.onOpen) {
        tr.addEventListener("click", (event) => { if (!event.target.closest("a,button")) this.onOpen(row); });
        tr.addEventListener("keydown", (event) => this.key(event, tr, row));
      }
      return tr;
    }));
    replace(this.table, h("thead", {}, head), body);
    if (focusedKey !== null) this.table.querySelector(`[data-key="${CSS.escape(focusedKey)}"]`)?.focus();
  }

  key(event, tr, row) {
    if (event.target !== tr) return;
    if (event.key === "Enter") this.onOpen(row);
    else if (event.key === "ArrowDown") { tr.nextElementSibling?.focus(); event.preventDefault(); }
    else if (event.key === "ArrowUp") { tr.previousElementSibling?.focus(); event.preventDefault(); }
  }

  toggle(key) {
    const column = this.columns.find((c) => c.key === key);
    this.sort = this.sort.key === key ? { key, dir: this.sort.dir === "asc" ? "desc" : "asc" }
      : { key, dir: column.num ? "desc" : "asc" };
    this.render();
  }
}

// Deterministic service colours (same service, same colour on every page).
const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7", "#9c755f",
  "#bab0ac", "#1f77b4", "#8c564b", "#17becf"];

export function colour(name) {
  let hash = 0;
  for (const ch of String(name)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return PALETTE[hash % PALETTE.length];
}

// An inline SVG trend line (no library: one per table row).
export function sparkline(values, { width = 110, height = 24, stroke = "#2458d3" } = {}) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("class", "spark");
  svg.setAttribute("role", "img");
  const max = Math.max(...values, 0);
  svg.setAttribute("aria-label", `trend, peak ${Math.round(max)}`);
  if (values.length < 2) return svg;
  const points = values.map((v, i) => `${(i / (values.length - 1)) * (width - 2) + 1},${
    height - 2 - (max ? (v / max) * (height - 4) : 0)}`);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points.join(" "));
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", stroke);
  line.setAttribute("stroke-width", "1.5");
  svg.append(line);
  return svg;
}
