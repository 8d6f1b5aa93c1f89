// The elmscale dashboard: sweeps list and one sweep's frontier, tradeoffs, located optima, fitted laws, trials and
// their learning curves, kept live by /api/v1/feed.
"use strict";

const API = "api/v1"; // relative, so the page also works behind a reverse proxy under a path prefix
const MAX_TRIAL_PAGES = 50; // charts read at most 50 pages of 1000 trials
const TABLE_ROWS = 200;
const LAW_BOOTSTRAP = 50; // resamples of the laws' and located optima's intervals: a few keep live refreshes cheap
const STATUSES = ["pending", "running", "completed", "failed", "stopped_early"];
const FEED_KINDS = [
  "results", "trials_added", "trials_ingested", "sweep_created", "prediction_recorded",
  ...["pending", "running", "completed", "failed", "stopped"].map((s) => `sweep_${s}`),
  ...STATUSES.map((s) => `trial_${s}`),
];
const CHART_FIELDS = ["id", "status", "budget", "n_hidden", "d_m", "k_e", "k_c", "params_total", "seed", "metric.best", "metric.final"];
const TABLE_COLUMNS = [
  ["id", "trial"], ["status", "status"], ["budget", "budget"], ["n_hidden", "N"], ["d_m", "d_m"], ["k_e", "k_e"],
  ["k_c", "k_c"], ["params_total", "P"], ["seed", "seed"], ["node", "node"], ["metric.best", "best"], ["metric.final", "final"], ["error", "error"],
];
const TEXT_FIELDS = new Set(["status", "node", "error"]);
const UNSORTABLE_FIELDS = new Set(["error"]); // as the API's trials query
const TRADEOFF_AXES = { d_m: "d_m (memory units per neuron)", n_hidden: "N (neurons)" };
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
const fmt4 = (value) => Plot.formatPrecise(value, 4); // metrics: enough digits to compare
const fmtInt = (value) => Plot.formatInteger(value); // budgets, parameter counts, N: exact

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value);
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
}

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function getJSON(path) {
  const response = await fetch(API + path, { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail ?? response.statusText);
    throw new ApiError(response.status, detail);
  }
  return body;
}

const query = (params) => "?" + new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v != null));
const sweepPath = (name) => `/sweeps/${encodeURIComponent(name)}`;

async function allTrials(name, params) {
  const rows = [];
  let cursor = null;
  for (let page = 0; page < MAX_TRIAL_PAGES; page++) {
    const answer = await getJSON(`${sweepPath(name)}/trials` + query({ ...params, limit: 1000, cursor }));
    rows.push(...answer.rows);
    cursor = answer.next_cursor;
    if (!cursor) break;
  }
  return rows;
}

// A trial's value of the sweep's metric, as the API's frontier uses it: its final (test) value, else its best.
const trialValue = (row, metric) => row[`${metric}.final`] ?? row[`${metric}.best`] ?? null;

// --- live feed ---------------------------------------------------------------------------------------------------

let page = null; // the view on screen: { sweep: name|null, refresh: async () => void }
let refreshTimer = null, refreshing = false, refreshAgain = false;

function scheduleRefresh() {
  if (refreshTimer === null) refreshTimer = setTimeout(runRefresh, 250);
}

async function runRefresh() {
  refreshTimer = null;
  if (refreshing) { refreshAgain = true; return; }
  refreshing = true;
  try {
    await page?.refresh();
  } finally {
    refreshing = false;
    if (refreshAgain) { refreshAgain = false; scheduleRefresh(); }
  }
}

function onFeedEvent(message) {
  let event = {};
  try { event = JSON.parse(message.data); } catch { /* a comment or keep-alive carries no JSON */ }
  if (page && (page.sweep === null || event.sweep === page.sweep)) scheduleRefresh();
}

// One stream for the page's lifetime; EventSource reconnects by itself and resumes with Last-Event-ID.
function connectFeed() {
  const live = document.getElementById("live");
  const feed = new EventSource(`${API}/feed`);
  feed.onopen = () => { live.textContent = "live"; live.classList.add("open"); };
  feed.onerror = () => { live.textContent = "reconnecting…"; live.classList.remove("open"); };
  feed.onmessage = onFeedEvent;
  for (const kind of FEED_KINDS) feed.addEventListener(kind, onFeedEvent);
}

// --- sweeps list ----------------------------------------------------------------------------------------------

function progressBar(counts, total) {
  const bar = h("span", { class: "progress", title: STATUSES.map((s) => `${s}: ${counts[s] ?? 0}`).join(", ") });
  for (const status of ["completed", "stopped_early", "failed", "running"]) {
    if (!counts[status]) continue;
    const segment = h("span", { class: status });
    segment.style.width = `${(100 * counts[status]) / total}%`; // through CSSOM: the CSP refuses style attributes
    bar.append(segment);
  }
  return bar;
}

function sweepsTable(sweeps) {
  if (!sweeps.length) return h("p", { class: "muted" }, "No sweeps yet: run `orchestrator submit SPEC`.");
  const head = ["sweep", "task", "metric", "status", "progress", "best", "budgets P", "created"];
  const textColumns = ["task", "metric", "status"];
  // data-label: on a narrow screen each sweep becomes a block of labelled lines (dashboard.css)
  const td = (label, ...content) => h("td", { class: textColumns.includes(label) ? "text" : null, "data-label": label }, ...content);
  const rows = sweeps.map((s) => {
    const done = Math.round(s.progress * s.trials_total);
    return h("tr", { "data-sweep": s.name },
      td("sweep", h("a", { href: `#/sweeps/${encodeURIComponent(s.name)}` }, s.name)),
      td("task", s.task),
      td("metric", `${s.metric} (${s.mode === "min" ? "lower" : "higher"} is better)`),
      td("status", h("span", { class: `status ${s.status}` }, s.status)),
      td("progress", progressBar(s.trial_counts, s.trials_total), ` ${done}/${s.trials_total}`),
      td("best", fmt4(s.best)),
      td("budgets P", s.budgets.map(fmtInt).join(", ")),
      td("created", new Date(s.created_at).toLocaleString()),
    );
  });
  const th = (c) => h("th", { class: textColumns.includes(c) ? "text" : null }, c);
  return h("table", { id: "sweeps" }, h("thead", {}, h("tr", {}, head.map(th))), h("tbody", {}, rows));
}

function sweepsPage() {
  const body = h("div", { class: "card" }, h("p", { class: "muted" }, "loading…"));
  view.replaceChildren(h("h1", {}, "Sweeps"), body);
  return {
    sweep: null,
    refresh: async () => {
      try {
        body.replaceChildren(sweepsTable(await getJSON("/sweeps")));
      } catch (error) {
        body.replaceChildren(h("p", { class: "error" }, `cannot list sweeps: ${error.message}`));
      }
    },
  };
}

// --- one sweep ----------------------------------------------------------------------------------------------------

function sweepFacts(sweep) {
  const done = Math.round(sweep.progress * sweep.trials_total);
  const fact = (label, ...value) => h("span", {}, h("b", {}, `${label} `), ...value);
  return h("div", { class: "facts" },
    fact("status", h("span", { class: `status ${sweep.status}` }, sweep.status)),
    fact("task", sweep.task),
    fact("metric", `${sweep.metric} (${sweep.mode === "min" ? "lower" : "higher"} is better)`),
    fact("trials", progressBar(sweep.trial_counts, sweep.trials_total), ` ${done}/${sweep.trials_total} finished`,
      sweep.trial_counts.running ? `, ${sweep.trial_counts.running} running` : "",
      sweep.trial_counts.failed ? `, ${sweep.trial_counts.failed} failed` : ""),
    fact(`best ${sweep.metric}`, fmt4(sweep.best)),
    fact("budgets P", sweep.budgets.map(fmtInt).join(", ") || "–"),
  );
}

// --- charts of one sweep ------------------------------------------------------------------------------------------

const LAW_TITLES = {
  frontier: "Frontier law", allocation: "Allocation laws N*, k_e*, d_m*(P)", surface: "Surface model", tradeoff: "Tradeoff model",
};
const ACROSS_AXES = [["d_m", "d_m* (memory units per neuron)"], ["n_hidden", "N* (neurons)"]];
const ACROSS_NAMES = { d_m: "d_m*", n_hidden: "N*" };
// At a fixed budget, d_m and k_e grow together while N shrinks: which way an edge of the d_m grid opens on another axis.
const GROWS_WITH = { d_m: { d_m: 1, k_e: 1, n_hidden: -1 }, k_e: { d_m: 1, k_e: 1, n_hidden: -1 }, n_hidden: { d_m: -1, k_e: -1, n_hidden: 1 } };
const INK = "#1d2733", GREY = "#9aa7b5", PREDICTED = "#6a3d9a";

function budgetColors(budgets) {
  const sorted = [...new Set(budgets.map(Number))].sort((a, b) => a - b);
  const colors = new Map(sorted.map((budget, i) => [budget, PALETTE[i % PALETTE.length]]));
  return (budget) => colors.get(Number(budget)) ?? INK;
}

const chartBox = (...children) => h("div", { class: "chart" }, ...children);

function estimateText(e, digits = 4) {
  if (!e) return "–";
  const value = Plot.formatPrecise(e.value, digits);
  if (e.ci_low === null && e.ci_high === null) return value;
  return `${value} [${e.ci_low === null ? "open" : Plot.formatPrecise(e.ci_low, digits)}, ${e.ci_high === null ? "open" : Plot.formatPrecise(e.ci_high, digits)}]`;
}

// R² and Pearson r near 1: enough decimals to tell 0.9990 from 0.9999.
function qualityText(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "–";
  const gap = 1 - Math.abs(value);
  const decimals = gap > 0 ? Math.min(8, Math.max(4, Math.ceil(-Math.log10(gap)) + 2)) : 4;
  return value.toFixed(decimals);
}

const qualityLabel = (key) => {
  const [column, measure] = key.includes(".") ? key.split(".") : [null, key];
  const name = { r_squared: "R²", pearson_r: "Pearson r" }[measure] ?? measure;
  return column ? `${name} (${column})` : name;
};

// The interval ends of a located estimate on `axis`: [low, high] with the grid's open side null and marked open;
// an unknown end (no interval) falls back to the value, so no whisker is drawn on that side.
function intervalEnds(located, axis) {
  const e = located[axis];
  const direction = located.edge ? (GROWS_WITH[located.axis]?.[axis] ?? 0) * (located.edge === "high" ? 1 : -1) : 0;
  const open = [direction < 0 && e.ci_low === null, direction > 0 && e.ci_high === null];
  return { low: e.ci_low ?? (open[0] ? null : e.value), high: e.ci_high ?? (open[1] ? null : e.value), open };
}

function locatedTitle(located, budget) {
  const parts = [`located optimum at budget ${fmtInt(budget)} (${located.method}${located.edge ? `, ${located.edge} edge` : ""})`,
    `d_m ${estimateText(located.d_m)}`, `N ${estimateText(located.n_hidden)}`, `${estimateText(located.metric)}`];
  if (located.note) parts.push(located.note);
  return parts.join("\n");
}

function frontierChart(sweep, trials, frontier, optimum, law) {
  const points = trials.map((t) => ({ ...t, value: trialValue(t, sweep.metric) })).filter((t) => t.value !== null);
  if (!points.length) return h("p", { class: "muted" }, "No trial has reported the metric yet.");
  const perBudget = frontier.kind === "per_budget";
  const located = perBudget ? optimum.budgets.map((b) => b.located).filter((l) => l && l.metric.value !== null) : [];
  const curve = law?.curves.find((c) => c.x === "budget" || c.x === "params_total");
  const plot = Plot.chart({
    className: "frontier-chart",
    x: { values: points.map((t) => t.params_total), log: true,
      label: "P (trainable parameters, log scale)" },
    y: { values: [...points.map((t) => t.value), ...located.map((l) => l.metric.value)], label: sweep.metric },
  });
  const legend = [{ label: "trial", color: GREY, shape: "point" }];
  if (curve) {
    const band = Plot.band(plot, curve.points.map(([x, , low, high]) => [x, low, high]), { class: "frontier-band" });
    if (band) plot.layer.append(band);
  }
  for (const t of points) {
    plot.layer.append(Plot.svg("circle", {
      class: "trial-point", r: 3.5, cx: plot.x(t.params_total), cy: plot.y(t.value),
      "data-trial-id": t.id, "data-params": t.params_total, "data-value": t.value,
    }, Plot.svg("title", {}, `${t.id}: P ${fmtInt(t.params_total)}, N ${t.n_hidden}, d_m ${t.d_m}, seed ${t.seed}: ${fmt4(t.value)}`)));
  }
  if (curve) {
    plot.layer.append(Plot.polyline(plot, curve.points, { class: "law-curve", "data-law": "frontier" }));
    legend.push({ label: `frontier law (against ${curve.x === "budget" ? "the budget" : "P"}), 95 % band`, color: "#1f4e79", shape: "dash" });
  }
  const front = frontier.points.map((p) => [p.params_total, p.value]);
  plot.layer.append(Plot.polyline(plot, front, { class: "frontier-line" }));
  legend.push({ label: perBudget ? "per-budget optimum (best seed-averaged allocation)" : "Pareto frontier", color: "#e76f51", shape: "point" });
  for (const p of frontier.points) {
    plot.layer.append(Plot.svg("circle", {
      class: "frontier-point", r: 5, cx: plot.x(p.params_total), cy: plot.y(p.value),
      "data-params": p.params_total, "data-value": p.value, "data-budget": p.budget,
    }, Plot.svg("title", {}, `${perBudget ? `best at budget ${fmtInt(p.budget)}` : "frontier"}: P ${fmtInt(p.params_total)}, ` +
      `N ${fmtInt(p.n_hidden)}, d_m ${fmtInt(p.d_m)}: ${fmt4(p.value)}` + (p.n_seeds > 1 ? ` (mean of ${p.n_seeds} seeds)` : ""))));
  }
  for (const l of located) {
    const whisker = Plot.whisker(plot, "y", l.budget, l.metric.ci_low ?? l.metric.value, l.metric.ci_high ?? l.metric.value,
      { color: INK, className: "frontier-located-whisker" });
    if (whisker) plot.layer.append(whisker);
    plot.layer.append(Plot.diamond(plot.x(l.budget), plot.y(l.metric.value), 6.5, {
      class: "frontier-located", "data-budget": l.budget, "data-value": l.metric.value,
    }));
    plot.layer.lastChild.append(Plot.svg("title", {}, locatedTitle(l, l.budget)));
  }
  if (located.length) legend.push({ label: "located optimum (the law's data), 95 %", color: "none", shape: "diamond" });
  return chartBox(plot.root, Plot.legend(legend));
}

function frontierLawText(laws, law) {
  if (laws === null) return h("p", { class: "muted law" }, "Fitting the laws…");
  if (laws.error) return h("p", { class: "muted law refusal" }, `Laws not fitted: ${laws.error}`);
  if (!law) {
    const reason = laws.refused.frontier;
    return h("p", { class: "muted law refusal", "data-law": "frontier" }, `Frontier law not fitted${reason ? `: ${reason}` : ""}.`);
  }
  const p = law.parameters;
  return h("p", { class: "law" }, `${law.formula}: `,
    ["E", "A", "alpha"].filter((n) => p[n]).map((n) => `${n} = ${estimateText(p[n])}`).join(", "),
    `; R² ${qualityText(law.quality.r_squared)} (fitted on ${law.fitted_on}; 95 % intervals, ${law.n_bootstrap_ok} resamples)`);
}

function drawLocated(plot, located, axis, color) {
  const e = located[axis], metric = located.metric;
  const { low, high, open } = intervalEnds(located, axis);
  const [mLow, mHigh] = [metric.ci_low ?? metric.value, metric.ci_high ?? metric.value];
  const group = Plot.svg("g", { class: "located", "data-budget": located.budget });
  const x0 = low === null ? plot.area.left : plot.x(low), x1 = high === null ? plot.area.right : plot.x(high);
  if (x1 - x0 > 0.5 || plot.y(mLow) - plot.y(mHigh) > 0.5) {
    group.append(Plot.svg("rect", {
      class: "located-band", x: Math.min(x0, x1), width: Math.max(Math.abs(x1 - x0), 1),
      y: plot.y(mHigh), height: Math.max(plot.y(mLow) - plot.y(mHigh), 1), fill: color,
    }));
  }
  for (const whisker of [
    Plot.whisker(plot, "x", metric.value, low, high, { open, color, className: "located-whisker" }),
    Plot.whisker(plot, "y", e.value, mLow, mHigh, { color, className: "located-whisker" }),
  ]) if (whisker) group.append(whisker);
  const marker = Plot.diamond(plot.x(e.value), plot.y(metric.value), 6, {
    class: "located-optimum", fill: color, "data-budget": located.budget, [`data-${axis.replace("_", "-")}`]: e.value,
    "data-metric": metric.value, "data-method": located.method, "data-edge": located.edge ?? "",
  });
  marker.append(Plot.svg("title", {}, locatedTitle(located, located.budget)));
  group.append(marker);
  return group;
}

function tradeoffChart(sweep, trials, optimum, laws, axis, colorOf) {
  const points = trials.map((t) => ({ ...t, value: trialValue(t, sweep.metric) }))
    .filter((t) => t.value !== null && t.budget !== null && t[axis] > 0);
  if (!points.length) return h("p", { class: "muted" }, "No finished trial with a budget yet.");
  const located = optimum.budgets.map((b) => b.located).filter((l) => l && l[axis]?.value > 0 && l.metric.value !== null);
  const plot = Plot.chart({
    className: "tradeoff-chart",
    x: { values: [...points.map((t) => t[axis]), ...located.map((l) => l[axis].value)], log: true, label: `${TRADEOFF_AXES[axis]}, log scale` },
    y: { values: [...points.map((t) => t.value), ...located.map((l) => l.metric.value)], label: sweep.metric },
  });
  const byName = Object.fromEntries((laws?.laws ?? []).map((l) => [l.law, l]));
  const models = [["surface", "surface-curve", "dash"], ["tradeoff", "tradeoff-model-curve", "dotted"]]
    .filter(([name]) => byName[name]);
  const budgets = [...new Set(points.map((t) => t.budget))].sort((a, b) => a - b);
  const legend = [];
  for (const budget of budgets) {
    const color = colorOf(budget);
    const atBudget = points.filter((t) => t.budget === budget);
    const byX = new Map();
    for (const t of atBudget) byX.set(t[axis], [...(byX.get(t[axis]) ?? []), t.value]);
    const means = [...byX].sort((a, b) => a[0] - b[0]).map(([x, vs]) => [x, vs.reduce((s, v) => s + v, 0) / vs.length]);
    plot.layer.append(Plot.polyline(plot, means, { class: "tradeoff-line", stroke: color, "data-budget": budget }));
    for (const t of atBudget) {
      plot.layer.append(Plot.svg("circle", {
        class: "tradeoff-point", r: 3, cx: plot.x(t[axis]), cy: plot.y(t.value), fill: color, "fill-opacity": 0.55,
        "data-trial-id": t.id, "data-budget": budget,
      }, Plot.svg("title", {}, `P ≈ ${fmtInt(budget)}: N ${t.n_hidden}, d_m ${t.d_m}, seed ${t.seed}: ${fmt4(t.value)}`)));
    }
    if (axis === "d_m") {
      for (const [name, className] of models) {
        const curve = byName[name].curves.find((c) => c.x === "d_m" && Number(c.budget) === Number(budget));
        if (!curve) continue;
        const path = Plot.polyline(plot, curve.points, { class: `model-curve ${className}`, stroke: color, "data-budget": budget });
        path.append(Plot.svg("title", {}, `${LAW_TITLES[name]} at budget ${fmtInt(budget)}`));
        plot.layer.append(path);
      }
    }
    legend.push({ label: `budget ${fmtInt(budget)}`, color });
  }
  for (const { budget, best } of optimum.budgets) {
    if (!(best[axis] > 0)) continue;
    plot.layer.append(Plot.svg("circle", {
      class: "optimum-marker", r: 7, cx: plot.x(best[axis]), cy: plot.y(best.value), "data-budget": budget,
    }, Plot.svg("title", {}, `best grid allocation at budget ${fmtInt(budget)}: N ${fmtInt(best.n_hidden)}, d_m ${fmtInt(best.d_m)}: ${fmt4(best.value)}`)));
  }
  for (const l of located) plot.layer.append(drawLocated(plot, l, axis, colorOf(l.budget)));
  legend.push({ label: "best grid allocation", color: INK, shape: "ring" });
  if (located.length) legend.push({ label: "located optimum, 95 % interval", color: "#fff", shape: "diamond" });
  if (axis === "d_m") {
    for (const [name, , shape] of models) legend.push({ label: `${name} model`, color: INK, shape });
  }
  const notes = optimum.budgets.filter((b) => b.located?.note)
    .map((b) => h("li", { "data-budget": b.budget, "data-edge": b.located.edge ?? "" }, `budget ${fmtInt(b.budget)}: ${b.located.note}`));
  const caption = [];
  if (axis !== "d_m" && models.length) caption.push(h("p", { class: "muted" }, "The model curves follow d_m: choose the d_m axis to see them."));
  if (notes.length) caption.push(h("ul", { class: "optimum-notes muted" }, notes));
  return chartBox(plot.root, Plot.legend(legend), ...caption);
}

// The observed optimum's `column` at a scored prediction's budget (null until it is scored).
const observedValue = (prediction, column) => {
  const observed = prediction.score?.observed;
  return observed ? (column === "d_m" ? observed.d_m.value : observed[column]) : null;
};

function acrossBudgetsChart(optimum, law, refused, column, label, colorOf, predictions) {
  const located = optimum.budgets.filter((b) => b.located?.[column]?.value > 0);
  const curve = law?.curves.find((c) => c.y === column);
  if (!located.length && !curve && !predictions.length) return h("p", { class: "muted" }, "No optimum located yet.");
  const lows = located.map((b) => b.located[column].ci_low), highs = located.map((b) => b.located[column].ci_high);
  const curveXs = curve ? curve.points.map((p) => p[0]) : [], curveYs = curve ? curve.points.flatMap((p) => [p[1], p[2], p[3]]) : [];
  const predictedYs = predictions.flatMap((p) => [p.predicted[column].ci_low, p.predicted[column].ci_high, observedValue(p, column)]);
  const plot = Plot.chart({
    width: 560, height: 320, className: `across-chart across-${column.replace("_", "-")}`,
    x: { values: [...located.map((b) => b.budget), ...curveXs, ...predictions.map((p) => p.budget)], log: true, label: "budget P, log scale" },
    y: { values: [...located.map((b) => b.located[column].value), ...lows, ...highs, ...curveYs, ...predictedYs], log: true, label: `${label}, log scale` },
  });
  const legend = [];
  if (curve) {
    const band = Plot.band(plot, curve.points.map(([x, , low, high]) => [x, low, high]), { class: "allocation-band" });
    if (band) plot.layer.append(band);
    plot.layer.append(Plot.polyline(plot, curve.points, { class: "allocation-law-curve", "data-column": column }));
    const exponent = law.parameters[`${column}.exponent`];
    legend.push({ label: `${ACROSS_NAMES[column]} ∝ P^${estimateText(exponent)}, R² ${qualityText(law.quality[`${column}.r_squared`])}`,
      color: "#1f4e79", shape: "dash" });
  }
  for (const { budget, best } of optimum.budgets) {
    if (!(best[column] > 0)) continue;
    plot.layer.append(Plot.svg("rect", {
      class: "grid-best-point", x: plot.x(budget) - 3, y: plot.y(best[column]) - 3, width: 6, height: 6, "data-budget": budget,
    }, Plot.svg("title", {}, `best grid allocation at budget ${fmtInt(budget)}: ${column} ${fmtInt(best[column])}`)));
  }
  for (const { budget, located: l } of located) {
    const { low, high, open } = intervalEnds(l, column);
    const color = colorOf(budget);
    const whisker = Plot.whisker(plot, "y", budget, low, high, { open, color, className: "located-whisker" });
    if (whisker) plot.layer.append(whisker);
    plot.layer.append(Plot.svg("circle", {
      class: `located-point${l.edge ? " at-edge" : ""}`, r: 5, cx: plot.x(budget), cy: plot.y(l[column].value),
      fill: l.edge ? "#fff" : color, stroke: color, "data-budget": budget, "data-value": l[column].value,
    }, Plot.svg("title", {}, locatedTitle(l, budget))));
  }
  legend.push({ label: "located optimum, 95 % interval", color: INK, shape: "point" });
  if (located.some((b) => b.located.edge)) legend.push({ label: "at the grid's edge (left out of the law)", color: INK, shape: "ring" });
  legend.push({ label: "best grid allocation", color: GREY, shape: "square" });
  legend.push(...drawPredictions(plot, predictions, column));
  const caption = !law && refused ? h("p", { class: "muted refusal", "data-law": "allocation" }, `Allocation law not fitted: ${refused}`) : null;
  return chartBox(plot.root, Plot.legend(legend), caption);
}

// Recorded predictions: the predicted interval as a band at its budget, the optimum observed there (once scored) as a
// point, filled where it fell inside. Returns their legend entries.
function drawPredictions(plot, predictions, column) {
  for (const p of predictions) {
    const { value, ci_low: low, ci_high: high } = p.predicted[column];
    const x = plot.x(p.budget), top = plot.y(high), bottom = plot.y(low);
    const title = `prediction ${p.id} (${p.predicted.law} law, from ${p.sweep}) at budget ${fmtInt(p.budget)}: `
      + `${ACROSS_NAMES[column]} ${estimateText({ value, ci_low: low, ci_high: high }, 3)}`;
    plot.layer.append(Plot.svg("rect", {
      class: "prediction-band", x: x - 7, y: top, width: 14, height: Math.max(bottom - top, 1),
      "data-prediction": p.id, "data-budget": p.budget, "data-low": low, "data-high": high,
    }, Plot.svg("title", {}, title)));
    plot.layer.append(Plot.svg("line", { class: "prediction-value", x1: x - 7, x2: x + 7, y1: plot.y(value), y2: plot.y(value) }));
    const observed = observedValue(p, column);
    if (observed === null || !(observed > 0)) continue;
    const inside = low <= observed && observed <= high;
    plot.layer.append(Plot.svg("circle", {
      class: `prediction-observed${inside ? " inside" : ""}`, r: 4.5, cx: x, cy: plot.y(observed),
      "data-prediction": p.id, "data-budget": p.budget, "data-value": observed, "data-inside": inside,
    }, Plot.svg("title", {}, `observed optimum at budget ${fmtInt(p.budget)} (${p.score.sweeps.join(", ")}): `
      + `${ACROSS_NAMES[column]} ${Plot.formatPrecise(observed, 3)}, ${inside ? "inside" : "outside"} the predicted interval`)));
  }
  if (!predictions.length) return [];
  const entries = [{ label: "recorded prediction at a new budget, 95 %", color: PREDICTED, shape: "band" }];
  if (predictions.some((p) => p.score)) entries.push({ label: "optimum observed there (filled: inside)", color: PREDICTED, shape: "point" });
  return entries;
}

function acrossBudgets(optimum, laws, colorOf, predictions) {
  const law = (laws?.laws ?? []).find((l) => l.law === "allocation");
  const refused = laws?.refused?.allocation ?? null;
  return h("div", { class: "pair" }, ACROSS_AXES.map(([column, label], i) =>
    h("div", { class: "across", "data-column": column }, h("h3", {}, label),
      acrossBudgetsChart(optimum, law, i === 0 ? refused : null, column, label, colorOf, predictions))));
}

function lawBlock(law) {
  const undetermined = new Set(law.undetermined);
  const rows = Object.entries(law.parameters).map(([name, e]) => h("tr", { class: undetermined.has(name) ? "undetermined" : null },
    h("td", { class: "text" }, name),
    h("td", {}, Plot.formatPrecise(e.value)),
    h("td", {}, e.ci_low === null && e.ci_high === null ? "–"
      : `[${e.ci_low === null ? "open" : Plot.formatPrecise(e.ci_low)}, ${e.ci_high === null ? "open" : Plot.formatPrecise(e.ci_high)}]`),
    h("td", { class: "text" }, undetermined.has(name) ? "undetermined" : ""),
  ));
  const quality = Object.entries(law.quality).map(([key, value]) => `${qualityLabel(key)} ${qualityText(value)}`).join(", ");
  return h("div", { class: "law-block", "data-law": law.law },
    h("h3", {}, LAW_TITLES[law.law] ?? law.law),
    h("p", {}, h("code", { class: "formula" }, law.formula)),
    h("p", { class: "muted" }, `fitted on ${law.fitted_on}: ${law.n_trials} trials, ${law.n_bootstrap_ok}/${law.n_bootstrap} resamples`),
    h("div", { class: "table-wrap" }, h("table", { class: "parameters" },
      h("thead", {}, h("tr", {}, h("th", { class: "text" }, "parameter"), h("th", {}, "value"), h("th", {}, "95 % interval"), h("th", {}))),
      h("tbody", {}, rows))),
    h("p", { class: "quality" }, quality),
    law.undetermined.length ? h("p", { class: "muted" }, `undetermined by these data: ${law.undetermined.join(", ")}`) : null,
    law.notes.length ? h("ul", { class: "notes muted" }, law.notes.map((n) => h("li", {}, n))) : null,
  );
}

function lawsPanel(laws) {
  if (laws === null) return h("p", { class: "muted" }, "Fitting the laws…");
  if (laws.error) return h("p", { class: "muted refusal" }, `Laws not fitted: ${laws.error}`);
  const blocks = laws.laws.map((law) => [law.law, lawBlock(law)]);
  for (const [name, reason] of Object.entries(laws.refused)) {
    blocks.push([name, h("div", { class: "law-block law-refused", "data-law": name },
      h("h3", {}, LAW_TITLES[name] ?? name), h("p", { class: "muted refusal" }, `not fitted: ${reason}`))]);
  }
  if (!blocks.length) return h("p", { class: "muted" }, "No law yet.");
  const order = Object.keys(LAW_TITLES), rank = (name) => (order.includes(name) ? order.indexOf(name) : order.length);
  return h("div", { class: "laws-grid" }, blocks.sort((a, b) => rank(a[0]) - rank(b[0])).map(([, block]) => block));
}

function trialsTable(sweep, rows, sort, onSort) {
  const cell = (row, field) => {
    const key = field.startsWith("metric.") ? sweep.metric + field.slice(6) : field;
    const value = row[key];
    if (field === "status") return h("span", { class: `status ${value}` }, value);
    if (field === "error") return value ? h("span", { class: "error-text", title: value }, value) : "";
    if (typeof value !== "number") return value ?? "–";
    if (field.startsWith("metric.")) return fmt4(value);
    return Number.isInteger(value) ? fmtInt(value) : Plot.formatPrecise(value);
  };
  const head = TABLE_COLUMNS.map(([field, label]) => {
    const title = field.startsWith("metric.") ? `${label} ${sweep.metric}` : label;
    if (UNSORTABLE_FIELDS.has(field)) return h("th", { class: TEXT_FIELDS.has(field) ? "text" : null }, title);
    const sorted = sort.replace(/^-/, "") === field;
    const classes = ["sortable", TEXT_FIELDS.has(field) && "text", sorted && "sorted", sorted && sort.startsWith("-") && "desc"]
      .filter(Boolean).join(" ");
    return h("th", { class: classes, title: `sort by ${field}`, onclick: () => onSort(sorted && !sort.startsWith("-") ? `-${field}` : field) }, title);
  });
  const body = rows.map((row) => h("tr", { "data-trial-id": row.id, title: "show this trial's learning curves" }, TABLE_COLUMNS.map(([field]) => h("td", { class: TEXT_FIELDS.has(field) ? "text" : null }, cell(row, field)))));
  return h("table", { id: "trials" }, h("thead", {}, h("tr", {}, head)), h("tbody", {}, body));
}

function filterForm(sweep, onChange) {
  const input = (name, label, placeholder) =>
    h("label", {}, label, h("input", { name, placeholder, title: "a value, a set a,b,c or a range a..b" }));
  const select = (name, label, options, optionLabel = String) =>
    h("label", {}, label, h("select", { name }, h("option", { value: "" }, "any"), options.map((o) => h("option", { value: o }, optionLabel(o)))));
  const form = h("form", { class: "filters", onsubmit: (e) => e.preventDefault() },
    select("status", "status", STATUSES),
    select("budget", "budget", sweep.budgets, fmtInt),
    input("d_m", "d_m", "e.g. 2,4 or 2..8"),
    input("n_hidden", "N", "e.g. 64..256"),
    input("seed", "seed", "e.g. 0"),
    input("metric.best", `best ${sweep.metric}`, "e.g. ..1.5"),
  );
  form.addEventListener("change", () => onChange(Object.fromEntries(new FormData(form))));
  return form;
}

// --- learning curves ----------------------------------------------------------------------------------------------

const MAX_BUDGET_CURVES = 24; // series requests per refresh of a budget's curves
const SERIES_POINTS = 500;
const CURVE_FAMILY = /^(train|valid|test)_(.+)$/; // train_bpc, valid_bpc and test_bpc share a chart
const SEED_DASHES = [null, "6 3", "2 3", "8 3 2 3"];

// The metric the curves show first: the validation counterpart of the sweep's (test) metric, when declared.
function defaultCurveMetric(sweepMetric, names) {
  const family = sweepMetric.match(CURVE_FAMILY);
  const valid = family ? `valid_${family[2]}` : null;
  if (names.includes(valid)) return valid;
  return sweepMetric;
}

function curveFamily(metric, names) {
  const family = metric.match(CURVE_FAMILY);
  return family ? ["train", "valid", "test"].map((split) => `${split}_${family[2]}`).filter((n) => names.includes(n)) : [metric];
}

const clickedTrial = (event) => event.target.closest("[data-trial-id]")?.getAttribute("data-trial-id") ?? null;

async function fetchCurve(trialId, metric) {
  const answer = await getJSON(`/trials/${encodeURIComponent(trialId)}/series` + query({ metric, max_points: SERIES_POINTS }));
  return answer.points.filter((p) => p.value !== null).map((p) => [p.step, p.value]);
}

// curves: [{ points: [[step, value]], label, color, trialId, metric, dash, bold }]; a one-point series (a final test
// value) is drawn as a point.
function curvesChart(curves, yLabel, className) {
  const drawn = curves.filter((c) => c.points.length);
  if (!drawn.length) return h("p", { class: "muted" }, `No ${yLabel} reported yet.`);
  const all = drawn.flatMap((c) => c.points);
  const plot = Plot.chart({
    width: 560, height: 300, className: `curves-chart ${className}`,
    x: { values: all.map(([step]) => step), label: "step" }, y: { values: all.map(([, value]) => value), label: yLabel },
  });
  for (const c of drawn) {
    const data = { "data-trial-id": c.trialId, "data-metric": c.metric };
    const shape = c.points.length === 1
      ? Plot.svg("circle", { class: "curve-point", r: 4, cx: plot.x(c.points[0][0]), cy: plot.y(c.points[0][1]), fill: c.color, ...data })
      : Plot.polyline(plot, c.points, { class: `curve${c.bold ? " selected" : ""}`, stroke: c.color, "stroke-dasharray": c.dash, ...data });
    shape.append(Plot.svg("title", {}, `${c.label}: ${c.metric} ${fmt4(c.points.at(-1)[1])} at step ${fmtInt(c.points.at(-1)[0])}`));
    plot.layer.append(shape);
  }
  const legend = drawn.map((c) => ({ label: c.label, color: c.color, shape: c.points.length === 1 ? "point" : c.dash ? "dash" : "line" }));
  return chartBox(plot.root, Plot.legend(legend));
}

function trialFacts(trial) {
  const fact = (label, value) => h("span", {}, h("b", {}, `${label} `), value);
  return h("div", { class: "facts" },
    fact("status", h("span", { class: `status ${trial.status}` }, trial.status)),
    fact("budget", fmtInt(trial.budget)), fact("N", fmtInt(trial.n_hidden)), fact("d_m", fmtInt(trial.d_m)),
    fact("k_e", fmtInt(trial.k_e)), fact("k_c", fmtInt(trial.k_c)), fact("P", fmtInt(trial.params_total)),
    fact("seed", fmtInt(trial.seed)), fact("attempts", fmtInt(trial.attempts)), fact("node", trial.node ?? "–"));
}

const allocationLabel = (t, seeds) => `d_m ${fmtInt(t.d_m)}, N ${fmtInt(t.n_hidden)}` +
  (seeds > 1 ? `, seed ${t.seed}` : "") + (t.status === "completed" ? "" : ` (${t.status})`);

// One trial's curves (train, validation and test of the chosen metric) beside every allocation's curve at its budget.
// A trial is chosen by clicking it anywhere on the page; the card follows the live refreshes of the sweep page.
function curvesCard() {
  // budgetOf: the trial whose budget the budget view last moved to; the budget select wins until another is chosen
  const state = { sweep: null, trials: [], trialId: null, budget: null, budgetOf: null, metric: null };
  let drawing = 0; // a newer draw supersedes one still waiting for its series
  const metricSelect = h("select", { name: "curve-metric", onchange: (e) => { state.metric = e.target.value; draw(); } });
  const budgetSelect = h("select", { name: "curve-budget", onchange: (e) => { state.budget = Number(e.target.value); draw(); } });
  const trialPart = h("div", { class: "trial-panel" });
  const budgetPart = h("div", { class: "budget-panel" });
  const card = h("div", { class: "card", id: "curves", onclick: (e) => { const id = clickedTrial(e); if (id) show(id); } },
    h("span", { class: "chart-controls" }, "metric ", metricSelect, " budget ", budgetSelect),
    h("h2", {}, "Learning curves"), h("div", { class: "pair" }, trialPart, budgetPart));

  const setOptions = (select, values, chosen, label = String) => {
    select.replaceChildren(...values.map((v) => h("option", { value: v, selected: String(v) === String(chosen) }, label(v))));
  };

  async function trialPanel(trial, names) {
    if (!trial) return [h("p", { class: "muted" }, "Click a trial in the table or a chart to see its learning curves.")];
    const family = curveFamily(state.metric, names);
    const curves = await Promise.all(family.map(async (metric, i) => ({
      points: await fetchCurve(trial.id, metric), label: metric, metric, trialId: trial.id,
      color: PALETTE[i % PALETTE.length],
    })));
    const base = state.metric.match(CURVE_FAMILY)?.[2] ?? state.metric;
    return [h("h3", {}, `Trial ${trial.id}`), trialFacts(trial),
      trial.error ? h("p", { class: "error trial-error" }, trial.error) : null,
      curvesChart(curves, base, "trial-curves")];
  }

  async function budgetPanel() {
    const atBudget = state.trials.filter((t) => Number(t.budget) === state.budget && t.status !== "pending")
      .sort((a, b) => a.d_m - b.d_m || a.n_hidden - b.n_hidden || a.seed - b.seed);
    if (!atBudget.length) return [h("p", { class: "muted" }, "No trial has started at this budget yet.")];
    const shown = atBudget.slice(0, MAX_BUDGET_CURVES);
    const allocations = [...new Set(shown.map((t) => t.d_m))], seeds = [...new Set(shown.map((t) => t.seed))].sort((a, b) => a - b);
    const curves = await Promise.all(shown.map(async (t) => ({
      points: await fetchCurve(t.id, state.metric), label: allocationLabel(t, seeds.length), metric: state.metric,
      trialId: t.id, color: PALETTE[allocations.indexOf(t.d_m) % PALETTE.length],
      dash: SEED_DASHES[seeds.indexOf(t.seed) % SEED_DASHES.length], bold: t.id === state.trialId,
    })));
    const note = atBudget.length > shown.length ? h("p", { class: "muted" }, `the first ${shown.length} of ${atBudget.length} trials`) : null;
    return [h("h3", {}, `Every allocation at budget ${fmtInt(state.budget)}`), curvesChart(curves, state.metric, "budget-curves"), note];
  }

  async function draw() {
    const mine = ++drawing;
    if (state.sweep === null) return; // the page's first refresh draws
    try {
      const trial = state.trialId ? await getJSON(`/trials/${encodeURIComponent(state.trialId)}`) : null;
      if (trial && state.budgetOf !== trial.id) Object.assign(state, { budget: trial.budget ?? state.budget, budgetOf: trial.id });
      const names = [...new Set([state.sweep.metric, ...Object.keys(state.sweep.metric_modes)])].sort();
      if (!names.includes(state.metric)) state.metric = defaultCurveMetric(state.sweep.metric, names);
      setOptions(metricSelect, names, state.metric);
      setOptions(budgetSelect, state.sweep.budgets, state.budget, fmtInt);
      const [trialContent, budgetContent] = await Promise.all([
        trialPanel(trial, names),
        state.budget === null ? [h("p", { class: "muted" }, "The sweep's trials have no budget.")] : budgetPanel(),
      ]);
      if (mine !== drawing) return;
      trialPart.replaceChildren(...trialContent.filter(Boolean));
      budgetPart.replaceChildren(...budgetContent.filter(Boolean));
    } catch (error) {
      if (mine === drawing) trialPart.replaceChildren(h("p", { class: "error" }, `cannot draw the curves: ${error.message}`));
    }
  }

  function show(trialId) {
    state.trialId = trialId;
    card.scrollIntoView({ block: "nearest" });
    return draw();
  }

  return {
    card,
    show,
    refresh: (sweep, trials) => {
      Object.assign(state, { sweep, trials });
      if (state.budget === null && sweep.budgets.length) state.budget = sweep.budgets[0];
      return draw();
    },
  };
}

function sweepPage(name) {
  const parts = {
    facts: h("div", {}), frontier: h("div", {}), law: h("div", {}), tradeoff: h("div", {}), across: h("div", {}), laws: h("div", {}),
    table: h("div", { class: "table-scroll" }), tableNote: h("p", { class: "muted" }), error: h("p", { class: "error" }),
  };
  let sweep = null, filters = {}, sort = "id", axis = "d_m", lastCharts = null;
  const axisSelect = h("select", { name: "axis", onchange: (e) => { axis = e.target.value; drawTradeoff(); } },
    Object.keys(TRADEOFF_AXES).map((a) => h("option", { value: a }, a === "n_hidden" ? "N" : a)));
  const curves = curvesCard();
  const pickTrial = (event) => { const id = clickedTrial(event); if (id) curves.show(id); };
  const tableCard = h("div", { class: "card", onclick: pickTrial }, h("h2", {}, "Trials"));
  view.replaceChildren(
    h("p", {}, h("a", { href: "#/" }, "← all sweeps")),
    h("h1", {}, name), parts.error, parts.facts,
    h("div", { class: "grid", onclick: pickTrial },
      h("div", { class: "card", id: "frontier" }, h("h2", {}, "Frontier"), parts.frontier, parts.law),
      h("div", { class: "card", id: "tradeoff" },
        h("span", { class: "chart-controls" }, "x axis ", axisSelect), h("h2", {}, "Tradeoff at each budget"), parts.tradeoff),
      h("div", { class: "card wide", id: "across-budgets" }, h("h2", {}, "Optimum across budgets"), parts.across),
      h("div", { class: "card wide", id: "laws" }, h("h2", {}, "Fitted laws"), parts.laws)),
    tableCard, curves.card,
  );

  const colorOf = () => budgetColors([...(sweep?.budgets ?? []), ...(lastCharts?.optimum.budgets.map((b) => b.budget) ?? [])]);

  function drawTradeoff() {
    if (lastCharts) parts.tradeoff.replaceChildren(tradeoffChart(sweep, lastCharts.trials, lastCharts.optimum, lastCharts.laws, axis, colorOf()));
  }

  function draw() {
    const { trials, frontier, optimum, laws, predictions } = lastCharts;
    const frontierLaw = (laws?.laws ?? []).find((l) => l.law === "frontier");
    parts.frontier.replaceChildren(frontierChart(sweep, trials, frontier, optimum, frontierLaw));
    parts.law.replaceChildren(frontierLawText(laws, frontierLaw));
    drawTradeoff();
    parts.across.replaceChildren(acrossBudgets(optimum, laws, colorOf(), predictions));
    parts.laws.replaceChildren(lawsPanel(laws));
  }

  async function refreshTable() {
    try {
      const answer = await getJSON(`${sweepPath(name)}/trials` +
        query({ ...filters, sort, limit: TABLE_ROWS, fields: TABLE_COLUMNS.map(([f]) => f).join(",") }));
      parts.table.replaceChildren(trialsTable(sweep, answer.rows, sort, (next) => { sort = next; refreshTable(); }));
      parts.tableNote.textContent = answer.next_cursor ? `first ${TABLE_ROWS} rows shown: narrow the filters to see others`
        : `${answer.rows.length} trials`;
      parts.tableNote.classList.remove("error");
    } catch (error) {
      parts.tableNote.textContent = error.message;
      parts.tableNote.classList.add("error");
    }
  }

  // The laws take seconds to fit: the charts are drawn as soon as the data are in (with the laws of the last
  // refresh), and again once the laws arrive. A law the data cannot determine is listed with the reason, not an error.
  const fetchLaws = () => getJSON(`${sweepPath(name)}/laws` + query({ n_bootstrap: LAW_BOOTSTRAP }))
    .catch((error) => ({ laws: [], refused: {}, error: error.status === 422 ? error.message : `cannot fit: ${error.message}` }));

  async function refresh() {
    try {
      const first = sweep === null;
      sweep = await getJSON(sweepPath(name));
      if (first) tableCard.append(filterForm(sweep, (f) => { filters = f; refreshTable(); }), parts.tableNote, parts.table);
      const laws = fetchLaws();
      const [trials, frontier, optimum, predictions] = await Promise.all([
        allTrials(name, { fields: CHART_FIELDS.join(",") }),
        getJSON(`${sweepPath(name)}/frontier`),
        getJSON(`${sweepPath(name)}/optimum` + query({ n_bootstrap: LAW_BOOTSTRAP })),
        getJSON("/predictions" + query({ sweep: name })),
        refreshTable(),
      ]);
      lastCharts = { trials, frontier, optimum, predictions, laws: lastCharts?.laws ?? null };
      parts.facts.replaceChildren(sweepFacts(sweep));
      draw();
      const curvesDrawn = curves.refresh(sweep, trials);
      parts.error.textContent = "";
      lastCharts.laws = await laws;
      draw();
      await curvesDrawn;
    } catch (error) {
      parts.error.textContent = error.status === 404 ? `No sweep named ${name}.` : `Cannot load ${name}: ${error.message}`;
    }
  }

  return { sweep: name, refresh };
}

// --- routing --------------------------------------------------------------------------------------------------------

const view = document.getElementById("view");

function route() {
  const match = location.hash.match(/^#\/sweeps\/(.+)$/);
  page = match ? sweepPage(decodeURIComponent(match[1])) : sweepsPage();
  document.title = match ? `${decodeURIComponent(match[1])} · elmscale` : "elmscale";
  scheduleRefresh();
}

window.addEventListener("hashchange", route);
route();
connectFeed();
