// The trend chart of one case, drawn as plain SVG (no library, nothing fetched): the p50 line, the
// p90..p99 band, the change points the history gate found, and every point a link to its run file.
// Strings reach the page through textContent / setAttribute only, never as markup.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(name, attrs, parent) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (parent) parent.appendChild(el);
  return el;
}

// seconds as the unit a person reads: µs below 1 ms, ms below 1 s
function fmtTime(s) {
  if (s === null || s === undefined) return "n/a";
  if (s < 1e-3) return (s * 1e6).toPrecision(3) + " µs";
  if (s < 1) return (s * 1e3).toPrecision(3) + " ms";
  return s.toPrecision(3) + " s";
}

function shortCommit(c) {
  return c ? c.slice(0, 12) : "unknown";
}

function fmtPct(x) {
  return (x > 0 ? "+" : "") + (x * 100).toFixed(1) + " %";
}

// 4 to 6 round tick values spanning [lo, hi]
function ticks(lo, hi) {
  const span = hi - lo || Math.abs(hi) || 1;
  const raw = span / 5;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => span / s <= 6);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(v);
  return out;
}

// one case's trend into `host` (emptied first); `runs` is the kind's run list, points index it
function drawTrend(host, trend, runs) {
  host.textContent = "";
  const W = 900, H = 300, M = { l: 64, r: 18, t: 22, b: 56 };
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, class: "trend-chart", role: "img" }, host);
  svgEl("title", {}, svg).textContent = `${trend.case}: p50 per run, p90 and p99 band`;
  const pts = trend.points;
  // the scale follows p50, and takes in p90 then p99 while each stays within twice the range so far;
  // a percentile far above (a few preempted rounds on a busy host) is clipped at the top and its
  // reach said in a label, so that it never flattens the p50 line
  const p50s = pts.map((p) => p.p50_s).filter((v) => v !== null);
  if (!p50s.length) {
    svgEl("text", { x: W / 2, y: H / 2, class: "empty", "text-anchor": "middle" }, svg).textContent =
      "no latency recorded for this case";
    return svg;
  }
  let lo = Math.min(...p50s), hi = Math.max(...p50s);
  const clipped = [];
  for (const q of ["p90_s", "p99_s"]) {
    const top = Math.max(-Infinity, ...pts.map((p) => p[q]).filter((v) => v !== null));
    if (top <= hi) continue;
    if (top <= hi * 2 && !clipped.length) hi = top;
    else clipped.push(`${q.slice(0, 3)} reaches ${fmtTime(top)}`);
  }
  const pad = (hi - lo || hi * 0.1) * 0.15;
  lo = Math.max(0, lo - pad);
  hi = hi + pad;
  const clipId = "plot-area-" + Math.random().toString(36).slice(2);
  svgEl("rect", { x: M.l, y: M.t, width: W - M.l - M.r, height: H - M.t - M.b },
    svgEl("clipPath", { id: clipId }, svgEl("defs", {}, svg)));
  if (clipped.length) {
    svgEl("text", { x: W - M.r, y: M.t - 6, "text-anchor": "end", class: "clipped" }, svg).textContent =
      `${clipped.join(", ")} (above the chart)`;
  }
  const x = (i) => M.l + (pts.length === 1 ? (W - M.l - M.r) / 2 : (i * (W - M.l - M.r)) / (pts.length - 1));
  const y = (v) => H - M.b - ((v - lo) * (H - M.t - M.b)) / (hi - lo);

  // y axis: ticks in the unit of the middle value
  const axis = svgEl("g", { class: "axis" }, svg);
  for (const t of ticks(lo, hi)) {
    svgEl("line", { x1: M.l, x2: W - M.r, y1: y(t), y2: y(t), class: "grid" }, axis);
    svgEl("text", { x: M.l - 6, y: y(t) + 4, "text-anchor": "end" }, axis).textContent = fmtTime(t);
  }
  // x axis: the run's commit (or date), thinned so that labels never overlap
  const every = Math.max(1, Math.ceil(pts.length / 12)), last = pts.length - 1;
  pts.forEach((p, i) => {
    if (i !== last && (i % every || last - i < every)) return;
    const run = runs[p.run];
    const anchor = i === last && i > 0 ? "end" : "middle";   // the last label ends at the plot's edge
    const at = i === last && i > 0 ? x(i) + 6 : x(i);
    const label = svgEl("text", { x: at, y: H - M.b + 16, "text-anchor": anchor }, axis);
    label.textContent = run.commit ? run.commit.slice(0, 7) : run.datetime.slice(0, 10);
    svgEl("text", { x: at, y: H - M.b + 30, "text-anchor": anchor, class: "minor" }, axis).textContent =
      run.datetime.slice(5, 10);
  });

  // the band: p50 to p90 (shaded), p90 to p99 (lighter) where the run recorded them; a run with fewer
  // rounds records no p99 (its maximum is no p99), and then that part of the band is left out
  const area = (top, bottom, cls) => {
    const idx = pts.map((p, i) => i).filter((i) => top(pts[i]) !== null && bottom(pts[i]) !== null);
    if (idx.length < 2) return;
    const ring = [...idx.map((i) => `${x(i)},${y(top(pts[i]))}`), ...idx.reverse().map((i) => `${x(i)},${y(bottom(pts[i]))}`)];
    svgEl("polygon", { points: ring.join(" "), class: cls, "clip-path": `url(#${clipId})` }, svg);
  };
  area((p) => p.p99_s, (p) => p.p90_s, "band band99");
  area((p) => p.p90_s, (p) => p.p50_s, "band band90");
  const line90 = pts.map((p, i) => [i, p.p90_s]).filter(([, v]) => v !== null);
  if (line90.length > 1) {
    svgEl("polyline", { points: line90.map(([i, v]) => `${x(i)},${y(v)}`).join(" "), class: "p90",
      "clip-path": `url(#${clipId})` }, svg);
  }

  // change points: a step between run index-1 and index, labelled with its size
  for (const cp of trend.change_points) {
    const cx = (x(cp.index - 1) + x(cp.index)) / 2;
    const g = svgEl("g", { class: "change " + (cp.regression ? "regression" : "improvement") }, svg);
    svgEl("line", { x1: cx, x2: cx, y1: M.t, y2: H - M.b }, g);
    svgEl("text", { x: cx + 4, y: M.t + 12 }, g).textContent =
      `${cp.regression ? "▲" : "▼"} ${fmtPct(cp.change_rel)}`;
    svgEl("title", {}, g).textContent =
      `${cp.regression ? "regressed" : "improved"} at commit ${shortCommit(cp.commit)} by ${fmtPct(cp.change_rel)} ` +
      `(band ±${(cp.band_rel * 100).toFixed(1)} %): ${fmtTime(cp.before_s)} → ${fmtTime(cp.after_s)}`;
  }

  const p50 = pts.map((p, i) => [i, p.p50_s]).filter(([, v]) => v !== null);
  svgEl("polyline", { points: p50.map(([i, v]) => `${x(i)},${y(v)}`).join(" "), class: "p50" }, svg);
  // every point a link to its run file
  pts.forEach((p, i) => {
    if (p.p50_s === null) return;
    const run = runs[p.run];
    const a = svgEl("a", { href: run.file, class: "point-link", "data-run": run.name }, svg);
    svgEl("circle", { cx: x(i), cy: y(p.p50_s), r: 4.5, class: "point" + (p.noisy ? " noisy" : "") }, a);
    svgEl("title", {}, a).textContent =
      `${run.datetime}  commit ${run.commit || "none"}\np50 ${fmtTime(p.p50_s)}  p90 ${fmtTime(p.p90_s)}  ` +
      `p99 ${fmtTime(p.p99_s)}${p.noisy ? "\nmeasured under host interference (not evidence)" : ""}\n${run.name}`;
  });
  svgEl("text", { x: 14, y: (H - M.b + M.t) / 2, class: "ylabel", transform: `rotate(-90 14 ${(H - M.b + M.t) / 2})`,
    "text-anchor": "middle" }, svg).textContent = "latency";
  return svg;
}

window.InfermatrixChart = { drawTrend, fmtTime, fmtPct, shortCommit };
