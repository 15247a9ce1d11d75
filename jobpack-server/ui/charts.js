// The dashboard's pictures, drawn as SVG by the page itself (no library, no CDN): line charts
// (a job's CPU and memory, the queue over the last hour), stacked bars (jobs ended per minute),
// a workflow's graph laid out in layers, and a timeline (Gantt) of a workflow's or a batch's jobs.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";

// Each status's colour, the same in every picture (and in the tests).
const STATUS_COLOR = {
  waiting: "#9aa4b5", scheduled: "#9aa4b5", queued: "#7d8aa3", packing: "#5c7cc4", packed: "#5c7cc4",
  running: "#e0a800", completed: "#2e7d32", failed: "#c62828", oom_killed: "#c62828",
  limit_exceeded: "#c62828", stopped: "#7e57c2", timed_out: "#7e57c2", skipped: "#b0a8c0",
};

function el(tag, attrs, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text != null) e.textContent = String(text);
  return e;
}

// Empties `svg` and sets its size and its accessible name: a picture (`img`), or a `group` of
// controls (a graph's nodes, a timeline's bars, each a link).
function canvas(svg, w, h, label, role) {
  svg.replaceChildren();
  svg.setAttribute("viewBox", "0 0 " + w + " " + h);
  svg.setAttribute("width", String(w));
  svg.setAttribute("height", String(h));
  svg.setAttribute("role", role || "img");
  svg.setAttribute("aria-label", label);
  svg.append(el("title", {}, label));
  return svg;
}

// A round number at or above `v` (1, 2, 5 x 10^n), for an axis's top.
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function bytes(n) {
  if (n == null) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(n < 10 ? 1 : 0) : String(n)) + " " + units[i];
}

// Lines over time: series = [{name, color, points: [{t: ms, v}]}]; fmt formats a value. Each
// point is also a small circle (class "pt"), so a series of one point shows.
function lineChart(svg, series, opts) {
  const W = 520, H = 170, L = 64, R = 12, T = 14, B = 26;
  canvas(svg, W, H, opts.label);
  const all = series.flatMap((s) => s.points);
  svg.dataset.points = String(all.length);
  const t0 = opts.from != null ? opts.from : Math.min(...all.map((p) => p.t));
  const t1 = opts.to != null ? opts.to : Math.max(...all.map((p) => p.t));
  const span = Math.max(t1 - t0, 1000);
  const top = niceMax(Math.max(opts.min || 0, ...all.map((p) => p.v)));
  const x = (t) => L + (W - L - R) * (t - t0) / span;
  const y = (v) => T + (H - T - B) * (1 - v / top);
  svg.append(el("line", { x1: L, y1: y(0), x2: W - R, y2: y(0), stroke: "#9aa4b5" }));
  svg.append(el("line", { x1: L, y1: T, x2: L, y2: y(0), stroke: "#9aa4b5" }));
  const ticks = opts.fmt(top / 2) === opts.fmt(top) ? [0, top] : [0, top / 2, top];
  for (const v of ticks) {
    svg.append(el("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#3d4555" }, opts.fmt(v)));
    if (v) svg.append(el("line", { x1: L, y1: y(v), x2: W - R, y2: y(v), stroke: "#e3e6ea" }));
  }
  const secs = span / 1000;
  svg.append(el("text", { x: L, y: H - 8, "font-size": 11, fill: "#3d4555" }, opts.startLabel || "0 s"));
  svg.append(el("text", { x: W - R, y: H - 8, "text-anchor": "end", "font-size": 11, fill: "#3d4555" },
    opts.endLabel || (secs < 120 ? secs.toFixed(0) + " s" : (secs / 60).toFixed(0) + " min")));
  if (!all.length) {
    svg.append(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#3d4555" }, opts.empty || "no samples yet"));
    return;
  }
  let legend = L + 8;
  for (const s of series) {
    const pts = s.points.map((p) => x(p.t).toFixed(1) + "," + y(p.v).toFixed(1)).join(" ");
    svg.append(el("polyline", { points: pts, fill: "none", stroke: s.color, "stroke-width": 2, class: "series", "data-name": s.name }));
    for (const p of s.points) {
      const c = el("circle", { cx: x(p.t).toFixed(1), cy: y(p.v).toFixed(1), r: 2.5, fill: s.color, class: "pt" });
      c.append(el("title", {}, s.name + ": " + opts.fmt(p.v)));
      svg.append(c);
    }
    if (series.length > 1) {
      svg.append(el("rect", { x: legend, y: T - 10, width: 10, height: 10, fill: s.color }));
      svg.append(el("text", { x: legend + 14, y: T - 1, "font-size": 11, fill: "#1d2330" }, s.name));
      legend += 24 + 7 * s.name.length;
    }
  }
}

// Bars of counts per minute, stacked by status: minutes = [{at, ended: {status: n}}].
function stackedBars(svg, minutes, label) {
  const W = 520, H = 170, L = 40, R = 12, T = 14, B = 26;
  canvas(svg, W, H, label);
  const totals = minutes.map((m) => Object.values(m.ended).reduce((a, b) => a + b, 0));
  svg.dataset.total = String(totals.reduce((a, b) => a + b, 0));
  const top = niceMax(Math.max(1, ...totals));
  const bw = (W - L - R) / Math.max(minutes.length, 1);
  const y = (v) => T + (H - T - B) * (1 - v / top);
  svg.append(el("line", { x1: L, y1: y(0), x2: W - R, y2: y(0), stroke: "#9aa4b5" }));
  for (const v of [0, top]) {
    svg.append(el("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#3d4555" }, String(v)));
  }
  minutes.forEach((m, i) => {
    let base = 0;
    for (const [status, n] of Object.entries(m.ended)) {
      const r = el("rect", {
        x: (L + i * bw + 1).toFixed(1), y: y(base + n).toFixed(1), width: Math.max(bw - 2, 1).toFixed(1),
        height: (y(base) - y(base + n)).toFixed(1), fill: STATUS_COLOR[status] || "#9aa4b5",
        class: "bar", "data-status": status, "data-count": n,
      });
      r.append(el("title", {}, m.at.slice(11, 16) + " " + n + " " + status));
      svg.append(r);
      base += n;
    }
  });
  if (minutes.length) {
    svg.append(el("text", { x: L, y: H - 8, "font-size": 11, fill: "#3d4555" }, minutes[0].at.slice(11, 16)));
    svg.append(el("text", { x: W - R, y: H - 8, "text-anchor": "end", "font-size": 11, fill: "#3d4555" }, "now"));
  }
}

// A workflow's jobs as a graph: each job a node in the layer after the deepest job it requires,
// coloured by its status; each requirement an edge labelled with the status it asks for.
// jobs = [{name, job_id, status, dependencies: [{job, status}]}]; open(job_id) on a click.
function dag(svg, jobs, open) {
  const byName = new Map(jobs.map((j) => [j.name, j]));
  const layer = new Map();
  const depth = (j, seen) => {
    if (layer.has(j.name)) return layer.get(j.name);
    if (seen.has(j.name)) return 0; // a cycle cannot be submitted; never loop on one
    seen.add(j.name);
    let d = 0;
    for (const dep of j.dependencies) {
      const o = byName.get(dep.job);
      if (o) d = Math.max(d, depth(o, seen) + 1);
    }
    layer.set(j.name, d);
    return d;
  };
  for (const j of jobs) depth(j, new Set());
  const layers = [];
  for (const j of jobs) (layers[layer.get(j.name)] = layers[layer.get(j.name)] || []).push(j);
  const NW = 160, NH = 46, GX = 90, GY = 26, P = 16;
  const rows = Math.max(...layers.map((l) => l.length));
  const W = P * 2 + layers.length * NW + (layers.length - 1) * GX;
  const H = P * 2 + rows * NH + (rows - 1) * GY;
  canvas(svg, W, H, "The workflow's jobs and what each requires", "group");
  const pos = new Map();
  layers.forEach((l, i) => l.forEach((j, k) => {
    const offset = (rows - l.length) * (NH + GY) / 2;
    pos.set(j.name, { x: P + i * (NW + GX), y: P + offset + k * (NH + GY) });
  }));
  for (const j of jobs) {
    for (const dep of j.dependencies) {
      const a = pos.get(dep.job), b = pos.get(j.name);
      if (!a) continue;
      const x1 = a.x + NW, y1 = a.y + NH / 2, x2 = b.x, y2 = b.y + NH / 2, mx = (x1 + x2) / 2;
      svg.append(el("path", {
        d: "M" + x1 + "," + y1 + " C" + mx + "," + y1 + " " + mx + "," + y2 + " " + (x2 - 6) + "," + y2,
        fill: "none", stroke: "#5b6475", "stroke-width": 1.5, class: "edge", "data-from": dep.job, "data-to": j.name,
      }));
      svg.append(el("path", { d: "M" + (x2 - 8) + "," + (y2 - 4) + " L" + x2 + "," + y2 + " L" + (x2 - 8) + "," + (y2 + 4) + "Z", fill: "#5b6475" }));
      svg.append(el("text", { x: mx, y: (y1 + y2) / 2 - 4, "text-anchor": "middle", "font-size": 11, fill: "#1d2330", class: "edge-label" }, dep.status));
    }
  }
  for (const j of jobs) {
    const p = pos.get(j.name);
    const said = j.status + (j.exit_code == null ? "" : " (" + j.exit_code + ")");
    // Named by its text (one text of two lines, a space between, so it reads "build failed (2)").
    const g = el("g", {
      class: "node", transform: "translate(" + p.x + "," + p.y + ")", tabindex: 0, role: "link",
      "data-job": j.name, "data-job-id": j.job_id, "data-status": j.status,
    });
    const fill = STATUS_COLOR[j.status] || "#9aa4b5";
    g.append(el("rect", { width: NW, height: NH, rx: 8, fill, stroke: "#1d2330", "stroke-width": 1 }));
    const ink = ["running", "skipped", "waiting", "scheduled"].includes(j.status) ? "#1d2330" : "#ffffff";
    const t = el("text", { fill: ink });
    t.append(el("tspan", { x: 10, y: 19, "font-size": 13, "font-weight": 700 }, j.name), " ",
      el("tspan", { x: 10, y: 36, "font-size": 11 }, said));
    g.append(t);
    g.addEventListener("click", () => open(j.job_id));
    g.addEventListener("keydown", (e) => { if (e.key === "Enter") open(j.job_id); });
    svg.append(g);
  }
}

// A timeline: one row per job, a light bar while it waited (created -> started) and one in its
// status's colour while it ran (started -> ended, or now). rows = [{label, id, status, created,
// started, finished}] with times in ms.
function gantt(svg, rows, open) {
  const now = Date.now();
  const RH = 22, L = 150, R = 16, T = 8, B = 24, W = 760;
  const H = T + B + Math.max(rows.length, 1) * RH;
  canvas(svg, W, H, "When each job waited and ran", "group");
  if (!rows.length) return;
  const t0 = Math.min(...rows.map((r) => r.created));
  const t1 = Math.max(...rows.map((r) => r.finished || now), t0 + 1000);
  const x = (t) => L + (W - L - R) * (t - t0) / (t1 - t0);
  rows.forEach((r, i) => {
    const y = T + i * RH;
    const g = el("g", { class: "bar", "data-job-id": r.id, "data-status": r.status, tabindex: 0, role: "link",
      "aria-label": r.label + " " + r.status });
    g.append(el("text", { x: L - 8, y: y + 15, "text-anchor": "end", "font-size": 12, fill: "#1d2330" }, r.label));
    const runFrom = r.started || null;
    const end = r.finished || now;
    g.append(el("rect", { x: x(r.created).toFixed(1), y: y + 5, width: Math.max(x(runFrom || end) - x(r.created), 1).toFixed(1),
      height: 12, fill: "#d5dae3", class: "wait" }));
    if (runFrom) {
      g.append(el("rect", { x: x(runFrom).toFixed(1), y: y + 3, width: Math.max(x(end) - x(runFrom), 2).toFixed(1),
        height: 16, rx: 3, fill: STATUS_COLOR[r.status] || "#9aa4b5", class: "run" }));
    }
    g.append(el("title", {}, r.label + ": " + r.status));
    g.addEventListener("click", () => open(r.id));
    g.addEventListener("keydown", (e) => { if (e.key === "Enter") open(r.id); });
    svg.append(g);
  });
  const secs = (t1 - t0) / 1000;
  svg.append(el("text", { x: L, y: H - 6, "font-size": 11, fill: "#3d4555" }, "0 s"));
  svg.append(el("text", { x: W - R, y: H - 6, "text-anchor": "end", "font-size": 11, fill: "#3d4555" },
    secs < 120 ? secs.toFixed(1) + " s" : (secs / 60).toFixed(1) + " min"));
}

window.Charts = { STATUS_COLOR, lineChart, stackedBars, dag, gantt, bytes };
