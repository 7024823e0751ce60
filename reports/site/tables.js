// The page's tables (memory and energy, int8 schemes, runs) and the helpers app.js shares with them.
// Every string from the data is written through textContent or setAttribute, never as markup.
"use strict";

(function () {
  const { fmtTime } = window.InfermatrixChart;

  function el(tag, attrs, text, parent) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? "" : String(v));
    }
    if (text !== null && text !== undefined) e.textContent = String(text);
    if (parent) parent.appendChild(e);
    return e;
  }

  const fmtBytes = (b) => (b === null ? "n/a" : (b / 1048576).toFixed(1) + " MiB");
  // 2 decimals where a speedup is near 1, fewer far from it, 2 significant digits below 0.1
  const fmtX = (s) => (s === null ? "n/a" : (s >= 100 ? s.toFixed(0) : s >= 10 ? s.toFixed(1) : s >= 0.1 ? s.toFixed(2)
    : s.toPrecision(2)) + "×");
  const fmtNum = (v, d) => (v === null || v === undefined ? "n/a" : v.toFixed(d));

  // green faster, red slower than the reference, on a log scale saturating at 4× either way
  function speedColor(s) {
    if (s === null) return null;
    const t = Math.max(-1, Math.min(1, Math.log2(s) / 2));
    const [r, g, b] = t >= 0 ? [26, 152, 80] : [215, 48, 39];
    const a = 0.12 + 0.78 * Math.abs(t);
    return { bg: `rgba(${r},${g},${b},${a.toFixed(3)})`, dark: a > 0.55 };
  }

  function runLink(run, text, parent) {
    return el("a", { href: run.file, class: "run-link", title: run.name }, text, parent);
  }

  const FIELD_NAMES = { load_rss_bytes: "load RSS", run_peak_rss_bytes: "run peak RSS", gpu_peak_bytes: "GPU peak",
    energy_j_per_inference: "energy / inference", avg_power_w: "mean power" };
  const fmtField = (f, v) => (v === null ? "n/a" : f.endsWith("_bytes") ? fmtBytes(v)
    : f === "energy_j_per_inference" ? (v * 1e3).toPrecision(3) + " mJ" : v.toFixed(1) + " W");

  function renderMemory(section, kind) {
    if (!kind.memory.length) return;
    const s = section("memory", "Memory and energy",
      "Each engine's own memory, measured alone (load RSS over the process before it, peak while running), and " +
      "energy where the run recorded it; from each case's newest run.");
    const table = el("table", { class: "data" }, null, el("div", { class: "scroll" }, null, s));
    const head = el("tr", {}, null, el("thead", {}, null, table));
    el("th", {}, "case", head);
    for (const f of kind.memory_fields) el("th", {}, FIELD_NAMES[f] || f, head);
    el("th", {}, "run", head);
    const max = Object.fromEntries(kind.memory_fields.map((f) => [f, Math.max(0, ...kind.memory.map((r) => r[f] || 0))]));
    const body = el("tbody", {}, null, table);
    for (const r of kind.memory) {
      const tr = el("tr", { "data-case": r.case }, null, body);
      el("td", {}, r.case, tr);
      for (const f of kind.memory_fields) {
        const td = el("td", { class: "num bar-cell" }, null, tr);
        if (r[f] !== null && max[f] > 0) el("span", { class: "bar", style: `width:${(100 * r[f] / max[f]).toFixed(1)}%` }, null, td);
        el("span", { class: "bar-text" }, fmtField(f, r[f]), td);
      }
      runLink(kind.runs[r.run], kind.runs[r.run].datetime.slice(0, 10), el("td", {}, null, tr));
    }
  }

  function renderInt8(section, kind) {
    if (!kind.int8.length) return;
    const s = section("int8", "int8 schemes side by side",
      "Every int8 recipe's newest equivalence check against the reference; a scheme that fails is not timed. " +
      "p50 and speedup come from the run that checked it.");
    for (const g of kind.int8) {
      el("h3", {}, g.model, s);
      const table = el("table", { class: "data int8" }, null, el("div", { class: "scroll" }, null, s));
      const head = el("tr", {}, null, el("thead", {}, null, table));
      for (const h of ["engine", "scheme", "built by", "batch", "device", "cosine", "SQNR", "top-1", "verdict", "p50", "speedup", "run"]) {
        el("th", {}, h, head);
      }
      const body = el("tbody", {}, null, table);
      for (const r of g.rows) {
        const tr = el("tr", { "data-case": r.case, class: r.equivalence === "pass" ? "" : "bad" }, null, body);
        for (const v of [r.engine, r.scheme, r.recipe || "n/a"]) el("td", {}, v, tr);
        el("td", { class: "num" }, r.batch_size, tr);
        el("td", {}, r.device, tr);
        el("td", { class: "num" }, fmtNum(r.cosine_min, 5), tr);
        el("td", { class: "num" }, r.sqnr_db_min === null ? "n/a" : r.sqnr_db_min.toFixed(1) + " dB", tr);
        el("td", { class: "num" }, fmtNum(r.top1_min, 3), tr);
        el("td", { class: r.equivalence === "pass" ? "good" : "bad" }, r.equivalence || "n/a", tr);
        el("td", { class: "num" }, fmtTime(r.p50_s), tr);
        const c = speedColor(r.speedup);
        el("td", { class: "num" + (c && c.dark ? " dark" : ""), style: c ? `background:${c.bg}` : null }, fmtX(r.speedup), tr);
        runLink(kind.runs[r.run], kind.runs[r.run].datetime.slice(0, 10), el("td", {}, null, tr));
      }
    }
  }

  function renderRuns(section, kind) {
    const s = section("runs", "Runs", "Every run of this hardware kind, newest first, each a pytest-benchmark JSON file " +
      "(`pytest-benchmark compare` reads it). An incomplete run says what it lacks and is never drawn.");
    const table = el("table", { class: "data", id: "run-table" }, null, el("div", { class: "scroll" }, null, s));
    const head = el("tr", {}, null, el("thead", {}, null, table));
    for (const h of ["started", "commit", "benchmarks", "state", "file"]) el("th", {}, h, head);
    const body = el("tbody", {}, null, table);
    for (const r of [...kind.runs].reverse()) {
      const tr = el("tr", { class: r.complete ? "" : "incomplete" }, null, body);
      el("td", {}, r.datetime, tr);
      el("td", { class: "mono" }, r.commit || "none", tr);
      el("td", { class: "num" }, r.benchmarks, tr);
      const missing = [r.shards_missing.length ? `shards ${r.shards_missing.join(", ")} missing` : "",
        r.cases_missing.length ? `${r.cases_missing.length} case(s) missing` : ""].filter(Boolean).join("; ");
      el("td", { class: r.complete ? "good" : "bad", title: r.cases_missing.join("\n") || null },
        r.complete ? "complete" : "incomplete" + (missing ? ": " + missing : ""), tr);
      runLink(r, r.name, el("td", { class: "mono" }, null, tr));
    }
  }

  window.InfermatrixTables = { el, fmtX, speedColor, runLink, renderMemory, renderInt8, renderRuns };
})();
