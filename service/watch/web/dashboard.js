// ecomm-cdc dashboard: polls the service's JSON (/api/live every second,
// /api/warehouse every few seconds) and draws with plain SVG. No dependencies.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const MONEY = new Set(["total_revenue", "total_delivered_revenue", "total_high_value_orders",
  "total_low_value_orders", "average_order_value"]);
const WINDOW_S = 300;  // the charts show the last 5 minutes (the first minute, at least)
const MIN_WINDOW_S = 60;
const int = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
const money = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const num = new Intl.NumberFormat("en-US", { maximumFractionDigits: 6 });
const axis = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
// Axis labels of the month chart: compact (120M, 1.5M), so nine digits fit the margins.
const compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });

// service/watch/wire.py's typed values, as JavaScript ones.
function plain(v) {
  if (v === null || typeof v !== "object" || Array.isArray(v)) return v;
  const [tag, raw] = Object.entries(v)[0];
  if (tag === "$decimal" || tag === "$float") return Number(raw);
  if (tag === "$datetime") return raw.replace("T", " ").slice(0, 23);  // as the CLI: to the ms
  return String(raw);
}

function $(id) { return document.getElementById(id); }
function text(id, value) { $(id).textContent = value; }
function el(tag, attrs, parent) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}
function seconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  return (s / 3600).toFixed(1) + " h";
}
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

// A line chart of series sharing one time axis: the last WINDOW_S seconds, or since the
// first sample, but no less than MIN_WINDOW_S.
function lineChart(svg, at, series) {
  const W = svg.viewBox.baseVal.width, H = svg.viewBox.baseVal.height;
  const L = 56, R = 10, T = 10, B = 22;
  svg.replaceChildren();
  const now = at.length ? at[at.length - 1] : Date.now() / 1000;
  const span = Math.min(WINDOW_S, Math.max(MIN_WINDOW_S, at.length ? now - at[0] : 0));
  const t0 = now - span;
  let top = 0;
  for (const s of series) for (let i = 0; i < at.length; i++) {
    if (at[i] >= t0 && s.values[i] !== null) top = Math.max(top, s.values[i]);
  }
  top = niceMax(top);
  const x = (t) => L + (W - L - R) * (t - t0) / span;
  const y = (v) => T + (H - T - B) * (1 - v / top);
  for (const f of [0, 0.5, 1]) {
    el("line", { x1: L, x2: W - R, y1: y(top * f), y2: y(top * f), class: "grid" }, svg);
    el("text", { x: L - 6, y: y(top * f) + 4, "text-anchor": "end" }, svg).textContent =
      axis.format(top * f);
  }
  el("text", { x: L, y: H - 4 }, svg).textContent = span >= 120 ? "−" + Math.round(span / 60) + " min" : "−" + Math.round(span) + " s";
  el("text", { x: W - R, y: H - 4, "text-anchor": "end" }, svg).textContent = "now";
  for (const s of series) {
    const pts = [];
    for (let i = 0; i < at.length; i++) {
      if (at[i] >= t0 && s.values[i] !== null) pts.push(x(at[i]).toFixed(1) + "," + y(s.values[i]).toFixed(1));
    }
    if (pts.length) el("polyline", { points: pts.join(" "), class: "series " + s.name }, svg);
  }
}

function monthChart(svg, months) {
  const W = svg.viewBox.baseVal.width, H = svg.viewBox.baseVal.height;
  const L = 70, R = 56, T = 12, B = 26;
  svg.replaceChildren();
  if (!months.length) {
    el("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, svg).textContent = "no months yet";
    return;
  }
  const rev = niceMax(Math.max(...months.map((m) => m.revenue || 0)));
  const ord = niceMax(Math.max(...months.map((m) => m.orders || 0)));
  const step = (W - L - R) / months.length;
  const yr = (v) => T + (H - T - B) * (1 - v / rev);
  const yo = (v) => T + (H - T - B) * (1 - v / ord);
  for (const f of [0, 0.5, 1]) {
    el("line", { x1: L, x2: W - R, y1: yr(rev * f), y2: yr(rev * f), class: "grid" }, svg);
    el("text", { x: L - 6, y: yr(rev * f) + 4, "text-anchor": "end" }, svg).textContent = compact.format(rev * f);
    el("text", { x: W - R + 6, y: yo(ord * f) + 4 }, svg).textContent = compact.format(ord * f);
  }
  const pts = [];
  const every = Math.ceil(months.length / 12);
  months.forEach((m, i) => {
    const cx = L + step * (i + 0.5);
    const bar = el("rect", { x: cx - step * 0.35, width: step * 0.7, y: yr(m.revenue || 0),
      height: Math.max(0, H - B - yr(m.revenue || 0)), class: "bar" }, svg);
    el("title", {}, bar).textContent = m.month + ": revenue " + money.format(m.revenue || 0) +
      ", " + int.format(m.orders || 0) + " orders";
    pts.push(cx.toFixed(1) + "," + yo(m.orders || 0).toFixed(1));
    if (i % every === 0) el("text", { x: cx, y: H - 8, "text-anchor": "middle" }, svg).textContent = m.month;
  });
  el("polyline", { points: pts.join(" "), class: "orders" }, svg);
  for (const p of pts) {
    const [cx, cy] = p.split(",");
    el("circle", { cx, cy, r: 3, class: "dot" }, svg);
  }
}

function cell(name, value) {
  const td = document.createElement("td");
  if (value === null || value === undefined) { td.textContent = "NULL"; return td; }
  if (typeof value === "number") {
    td.className = "num";
    td.textContent = MONEY.has(name) ? money.format(value)
      : Number.isInteger(value) ? int.format(value) : num.format(value);
  } else {
    td.textContent = String(value);
  }
  return td;
}

function table(node, columns, rows, rowClass) {
  const head = document.createElement("tr");
  for (const c of columns) {
    const th = document.createElement("th");
    th.textContent = c;
    if (rows.length && typeof rows[0][columns.indexOf(c)] === "number") th.className = "num";
    head.appendChild(th);
  }
  node.tHead.replaceChildren(head);
  const body = node.tBodies[0];
  body.replaceChildren(...rows.map((r) => {
    const tr = document.createElement("tr");
    const cls = rowClass ? rowClass(r) : "";
    if (cls) tr.className = cls;
    r.forEach((v, i) => {
      const td = cell(columns[i], v);
      if (columns[i] === "error_message") td.classList.add("error");
      tr.appendChild(td);
    });
    return tr;
  }));
}

function showWarehouse(w) {
  const agg = w.aggregated;
  if (agg) {
    const cols = agg.columns;
    const y = cols.indexOf("order_year"), m = cols.indexOf("order_month");
    const shown = ["month", ...cols.filter((c, i) => i !== y && i !== m)];
    const rows = agg.rows.map((r) => {
      const v = r.map(plain);
      const month = v[y] === null || v[m] === null ? "NULL" : v[y] + "-" + String(v[m]).padStart(2, "0");
      return [month, ...v.filter((_, i) => i !== y && i !== m)];
    });
    table($("months"), shown, rows);
    $("months").tBodies[0].querySelectorAll("tr").forEach((tr, i) => tr.setAttribute("data-month", rows[i][0]));
    const ri = shown.indexOf("total_revenue"), oi = shown.indexOf("total_orders");
    monthChart($("month-chart"), rows.map((r) => ({ month: r[0], revenue: r[ri], orders: r[oi] })));
  }
  const read = w.read_at ? new Date(w.read_at * 1000).toLocaleTimeString() : "not yet";
  text("warehouse-note", (w.error ? "last read failed: " + w.error + " · " : "") +
    "read by the service at " + read + ", after each refresh and at least every " + w.interval_s + " s");
  const tasks = w.tasks;
  if (tasks) {
    const rows = tasks.rows.map((r) => r.map(plain)).reverse();
    const si = tasks.columns.indexOf("state");
    table($("tasks"), tasks.columns, rows, (r) => (r[si] === "SUCCEEDED" ? "" : "failed"));
    const failed = rows.filter((r) => r[si] !== "SUCCEEDED").length;
    text("task-summary", rows.length ? rows.length + " recent runs: " + failed + " failed" : "no runs yet");
    $("task-summary").className = failed ? "tag bad" : "";
  }
}

function showLive(d) {
  text("target", d.target);
  text("uptime", "up " + seconds(d.uptime_s));
  text("events-per-s", d.events_per_s === null ? "–" : int.format(d.events_per_s));
  text("queue-depth", int.format(d.queue_depth));
  text("apply-ms", d.apply_ms === null ? "–" : d.apply_ms.toFixed(1) + " ms");
  text("since-commit", seconds(d.since_commit_s));
  text("since-refresh", seconds(d.since_refresh_s));
  text("applied-total", int.format(d.applied_total));
  showTraffic(d.traffic);
  const s = d.series;
  const applied = s.at.map((_, i) => s.insert[i] + s.update[i] + s.delete[i]);
  lineChart($("rate-chart"), s.at, [
    { name: "target", values: s.target }, { name: "applied", values: applied },
    { name: "insert", values: s.insert }, { name: "update", values: s.update }, { name: "delete", values: s.delete },
  ]);
  lineChart($("queue-chart"), s.at, [{ name: "queue", values: s.queue }]);
  lineChart($("apply-chart"), s.at, [{ name: "apply", values: s.apply_ms }]);
}

// The traffic profile: its target rate now, how far behind the producer is, and the
// simulated clock (service/pipeline/pace.py).
function showTraffic(t) {
  if (!t) { text("traffic", "traffic: –"); return; }
  const scale = t.time_scale === null ? "as fast as possible" : "×" + axis.format(t.time_scale);
  const when = t.simulated_at ? " · simulated " + t.simulated_at.replace("T", " ").slice(0, 16) : "";
  text("traffic", "traffic: " + t.profile + " · " + scale + when);
  $("traffic").className = "tag traffic";
  text("target-per-s", t.target_per_s === null ? "–" : int.format(t.target_per_s) +
    (t.multiplier === 1 ? "" : " (×" + axis.format(t.multiplier) + ")"));
  text("behind", t.target_per_s === null ? "–" : seconds(t.behind_s));
}

function status(ok, label) {
  const node = $("status");
  node.textContent = label;
  node.className = "tag " + (ok ? "ok" : "bad");
}

async function poll(path, show, every) {
  for (;;) {
    try {
      const resp = await fetch(path, { cache: "no-store" });
      if (resp.ok) {
        show(await resp.json());
        status(true, "live");
      } else {
        status(false, "service answered " + resp.status);
      }
    } catch (e) {
      status(false, "service unreachable");
    }
    await new Promise((done) => setTimeout(done, every));
  }
}

poll("/api/live", showLive, 1000);
poll("/api/warehouse", showWarehouse, 3000);
