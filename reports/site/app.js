// The published history page: reads the data index.html embeds (JSON, see render.py) and draws one
// hardware kind at a time, so that two kinds are never on one chart. Every string from the data is
// written through textContent or setAttribute, never as markup. The state (kind, case) is kept in the
// URL's #fragment, so a link can name a case.
"use strict";

(function () {
  const { drawTrend, fmtTime, fmtPct, shortCommit } = window.InfermatrixChart;
  const { el, fmtX, speedColor, runLink, renderMemory, renderInt8, renderRuns } = window.InfermatrixTables;
  const DATA = JSON.parse(document.getElementById("infermatrix-data").textContent);
  const app = document.getElementById("app");
  const state = { kind: null, case: null, filter: "", engine: "", precision: "" };
  let trendHost = null;   // the trend section, refilled when another case is picked

  function section(id, title, note) {
    const s = el("section", { id, class: "panel" }, null, app);
    el("h2", {}, title, s);
    if (note) el("p", { class: "note" }, note, s);
    return s;
  }

  function readHash() {
    const h = new URLSearchParams(location.hash.slice(1));
    state.kind = h.get("kind");
    state.case = h.get("case");
  }

  function writeHash() {
    const h = new URLSearchParams();
    if (state.kind) h.set("kind", state.kind);
    if (state.case) h.set("case", state.case);
    history.replaceState(null, "", "#" + h.toString());
  }

  function renderNav() {
    const nav = document.getElementById("kinds");
    nav.textContent = "";
    for (const k of DATA.kinds) {
      const b = el("button", { type: "button", class: "kind-tab", "aria-pressed": k.id === state.kind, "data-kind": k.id },
        k.label, nav);
      el("span", { class: "kind-id" }, k.id, b);
      b.addEventListener("click", () => { state.kind = k.id; state.case = null; render(); window.scrollTo(0, 0); });
    }
  }

  function renderSummary(kind) {
    const s = section("summary", kind.label);
    const complete = kind.runs.filter((r) => r.complete);
    const newest = complete[complete.length - 1];
    const facts = el("dl", { class: "facts" }, null, s);
    const fact = (k, v) => { el("dt", {}, k, facts); return el("dd", {}, v, facts); };
    fact("hardware kind", kind.id);
    fact("runs", `${complete.length} complete` + (kind.runs.length > complete.length
      ? `, ${kind.runs.length - complete.length} incomplete (listed below, never drawn)` : ""));
    const dd = fact("newest complete run", newest ? "" : "none");
    if (newest) runLink(newest, `${newest.datetime} · ${newest.commit || "no commit"}`, dd);
    const regressed = kind.trends.filter((t) => t.change_points.length && t.change_points[t.change_points.length - 1].regression);
    fact("cases whose newest change point is a regression", String(regressed.length)).className = regressed.length ? "bad" : "";
  }

  function renderHeatmap(kind) {
    const hm = kind.heatmap;
    const s = section("matrix", "Speedup over each case's reference",
      "Each cell: the case's newest p50 against its own reference (the engine and precision its record names) " +
      "measured in the same run. ✓ equivalent to the reference, ✗ failed its equivalence check (not timed), " +
      "~ measured under host interference. Click a cell for its trend.");
    const bar = el("div", { class: "filters" }, null, s);
    const text = el("input", { type: "search", id: "filter", placeholder: "filter by model, engine, precision, bsN…",
      "aria-label": "filter the matrix" }, null, bar);
    const pick = (id, label, values) => {
      const sel = el("select", { id, "aria-label": label }, null, bar);
      el("option", { value: "" }, `every ${label}`, sel);
      for (const v of values) el("option", { value: v }, v, sel);
      return sel;
    };
    const engineSel = pick("filter-engine", "engine", [...new Set(hm.columns.map((c) => c.engine))]);
    const precSel = pick("filter-precision", "precision", [...new Set(hm.columns.map((c) => c.precision))]);
    const count = el("span", { class: "count", id: "filter-count" }, null, bar);
    if (!hm.cells.length) { el("p", { class: "empty" }, "No complete run holds a latency case yet.", s); return; }

    const table = el("table", { id: "heatmap", class: "heatmap" }, null, el("div", { class: "scroll" }, null, s));
    const head = el("tr", {}, null, el("thead", {}, null, table));
    el("th", { class: "corner" }, "model · batch · device", head);
    const colHeads = hm.columns.map((c) => {
      const th = el("th", { class: "col", "data-col": c.label }, c.engine, head);
      el("div", { class: "prec" }, c.precision, th);
      return th;
    });
    const body = el("tbody", {}, null, table);
    const grid = hm.rows.map((r) => {
      const tr = el("tr", { "data-row": r.label }, null, body);
      el("th", { class: "row" }, r.label, tr);
      return { tr, tds: hm.columns.map(() => el("td", { class: "empty-cell" }, "", tr)) };
    });
    const cells = hm.cells.map((c) => {
      const td = grid[c.row].tds[c.col];
      const color = speedColor(c.speedup);
      td.className = "cell" + (c.equivalence && c.equivalence !== "pass" ? " failed" : "") + (color && color.dark ? " dark" : "") +
        (c.case === state.case ? " selected" : "");
      td.setAttribute("data-case", c.case);
      if (color) td.style.background = color.bg;
      td.textContent = c.speedup !== null ? fmtX(c.speedup) : (c.equivalence && c.equivalence !== "pass" ? c.equivalence : "n/a");
      el("span", { class: "mark" }, (c.equivalence === "pass" ? " ✓" : c.equivalence ? " ✗" : "") + (c.noisy ? " ~" : ""), td);
      td.title = `${c.case}\np50 ${fmtTime(c.p50_s)}; reference ${c.baseline || "none recorded"} ${fmtTime(c.baseline_p50_s)}` +
        `\nequivalence: ${c.equivalence || "not recorded"}${c.noisy ? "\nhost interference: " + c.noisy : ""}` +
        `\nrun ${kind.runs[c.run].name}`;
      td.addEventListener("click", () => selectCase(kind, c.case));
      const hay = [c.case, c.model, c.engine, c.precision, "bs" + c.batch_size, c.device].join(" ").toLowerCase();
      return { c, td, hay };
    });

    function apply() {
      const words = text.value.toLowerCase().split(/\s+/).filter(Boolean);
      const match = (x) => words.every((w) => x.hay.includes(w)) && (!engineSel.value || x.c.engine === engineSel.value) &&
        (!precSel.value || x.c.precision === precSel.value);
      const rowOn = hm.rows.map(() => false), colOn = hm.columns.map(() => false);
      let shown = 0;
      for (const x of cells) {
        const on = match(x);
        x.td.classList.toggle("dim", !on);
        if (on) { rowOn[x.c.row] = true; colOn[x.c.col] = true; shown += 1; }
      }
      grid.forEach((g, i) => { g.tr.hidden = !rowOn[i]; g.tds.forEach((td, j) => { td.hidden = !colOn[j]; }); });
      colHeads.forEach((th, j) => { th.hidden = !colOn[j]; });
      count.textContent = `${shown} of ${cells.length} cases`;
    }
    text.value = state.filter;
    engineSel.value = state.engine;
    precSel.value = state.precision;
    for (const input of [text, engineSel, precSel]) {
      input.addEventListener("input", () => {
        [state.filter, state.engine, state.precision] = [text.value, engineSel.value, precSel.value];
        apply();
      });
    }
    apply();
    const legend = el("div", { class: "legend" }, null, s);
    for (const v of [0.25, 0.5, 1, 2, 4]) {
      const c = speedColor(v);
      el("span", { class: "swatch" + (c.dark ? " dark" : ""), style: `background:${c.bg}` }, fmtX(v), legend);
    }
    el("span", { class: "legend-note" }, "slower ← reference → faster", legend);
  }

  function selectCase(kind, name) {
    state.case = name;
    writeHash();
    for (const td of document.querySelectorAll("#heatmap td.cell")) {
      td.classList.toggle("selected", td.getAttribute("data-case") === name);
    }
    fillTrend(kind);
    trendHost.scrollIntoView({ block: "nearest" });
  }

  function renderTrend(kind) {
    trendHost = el("section", { id: "trend", class: "panel" }, null, app);
    fillTrend(kind);
  }

  function fillTrend(kind) {
    const s = trendHost;
    s.textContent = "";
    el("h2", {}, "Trend over commits", s);
    el("p", { class: "note" },
      "p50 per complete run (line), p50 to p90 shaded and p90 to p99 lighter (where recorded), change points from the history gate (dashed: " +
      "red a regression, green an improvement). Every point links to its run file; hollow points were measured " +
      "under host interference and are no evidence.", s);
    if (!kind.trends.length) { el("p", { class: "empty" }, "No complete run yet.", s); return; }
    const pick = el("select", { id: "case-select", "aria-label": "case" }, null, el("div", { class: "filters" }, null, s));
    for (const t of kind.trends) el("option", { value: t.case, selected: t.case === state.case }, t.case, pick);
    pick.addEventListener("change", () => selectCase(kind, pick.value));
    const trend = kind.trends.find((t) => t.case === state.case) || kind.trends[0];
    pick.value = trend.case;
    el("h3", { id: "trend-title" }, trend.case, s);
    el("p", { class: "note", id: "trend-count" }, `${trend.points.length} run(s)` +
      (trend.band_rel !== null ? `; one run's noise band ±${(trend.band_rel * 100).toFixed(1)} %` : "; too few clean runs for a noise band"), s);
    drawTrend(el("div", { id: "trend-chart" }, null, s), trend, kind.runs);
    const list = el("ul", { class: "changes" }, null, s);
    for (const cp of trend.change_points) {
      el("li", { class: cp.regression ? "bad" : "good" },
        `${cp.regression ? "regressed" : "improved"} at commit ${shortCommit(cp.commit)} by ${fmtPct(cp.change_rel)} ` +
        `(band ±${(cp.band_rel * 100).toFixed(1)} %): ${fmtTime(cp.before_s)} → ${fmtTime(cp.after_s)}`, list);
    }
  }

  function renderChanges(kind) {
    const rows = kind.trends.flatMap((t) => t.change_points.map((cp) => ({ t, cp })));
    if (!rows.length) return;
    const s = section("changes", "Change points", "Every step the history gate found, newest first.");
    const table = el("table", { class: "data" }, null, s);
    const head = el("tr", {}, null, el("thead", {}, null, table));
    for (const h of ["case", "commit", "change", "band", "before", "after"]) el("th", {}, h, head);
    const body = el("tbody", {}, null, table);
    rows.sort((a, b) => b.t.points[b.cp.index].run - a.t.points[a.cp.index].run);
    for (const { t, cp } of rows) {
      const tr = el("tr", { class: cp.regression ? "bad" : "good" }, null, body);
      const a = el("a", { href: "#" }, t.case, el("td", {}, null, tr));
      a.addEventListener("click", (e) => { e.preventDefault(); selectCase(kind, t.case); });
      runLink(kind.runs[t.points[cp.index].run], shortCommit(cp.commit), el("td", { class: "mono" }, null, tr));
      el("td", { class: "num" }, fmtPct(cp.change_rel), tr);
      el("td", { class: "num" }, "±" + (cp.band_rel * 100).toFixed(1) + " %", tr);
      el("td", { class: "num" }, fmtTime(cp.before_s), tr);
      el("td", { class: "num" }, fmtTime(cp.after_s), tr);
    }
  }

  function render() {
    if (!DATA.kinds.some((k) => k.id === state.kind)) state.kind = DATA.kinds.length ? DATA.kinds[0].id : null;
    const kind = DATA.kinds.find((k) => k.id === state.kind);
    if (kind && !kind.trends.some((t) => t.case === state.case)) {
      const stepped = kind.trends.find((t) => t.change_points.length);
      state.case = (stepped || kind.trends[0] || { case: null }).case;
    }
    writeHash();
    renderNav();
    app.textContent = "";
    if (!kind) { el("p", { class: "empty" }, "This history holds no hardware kind.", app); return; }
    for (const part of [renderSummary, renderHeatmap, renderTrend, renderChanges]) part(kind);
    for (const part of [renderMemory, renderInt8, renderRuns]) part(section, kind);
  }

  document.getElementById("generated").textContent =
    `${DATA.kinds.length} hardware kind(s) · published ${DATA.generated} · one kind at a time: runs of two kinds are never compared`;
  readHash();
  render();
  window.addEventListener("hashchange", () => { readHash(); render(); });
})();
