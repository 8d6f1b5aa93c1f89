// The elmscale dashboard: sweeps list and one sweep's frontier, tradeoffs and trials, kept live by /api/v1/feed.
"use strict";

const API = "api/v1"; // relative, so the page also works behind a reverse proxy under a path prefix
const MAX_TRIAL_PAGES = 50; // charts read at most 50 pages of 1000 trials
const TABLE_ROWS = 200;
const FIT_BOOTSTRAP = 50; // intervals only label the law; a few resamples keep live refreshes cheap
const STATUSES = ["pending", "running", "completed", "failed", "stopped_early"];
const FEED_KINDS = [
  "results", "trials_added", "sweep_created",
  ...["pending", "running", "completed", "failed", "stopped"].map((s) => `sweep_${s}`),
  ...STATUSES.map((s) => `trial_${s}`),
];
const CHART_FIELDS = ["id", "status", "budget", "n_hidden", "d_m", "k_e", "k_c", "params_total", "seed", "metric.best", "metric.final"];
const TABLE_COLUMNS = [
  ["id", "trial"], ["status", "status"], ["budget", "budget"], ["n_hidden", "N"], ["d_m", "d_m"], ["k_e", "k_e"],
  ["k_c", "k_c"], ["params_total", "P"], ["seed", "seed"], ["node", "node"], ["metric.best", "best"], ["metric.final", "final"],
];
const TEXT_FIELDS = new Set(["status", "node"]);
const TRADEOFF_AXES = { d_m: "d_m (memory units per neuron)", n_hidden: "N (neurons)" };
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
const fmt = Plot.formatNumber;

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
    if (counts[status]) bar.append(h("span", { class: status, style: `width:${(100 * counts[status]) / total}%` }));
  }
  return bar;
}

function sweepsTable(sweeps) {
  if (!sweeps.length) return h("p", { class: "muted" }, "No sweeps yet: run `orchestrator submit SPEC`.");
  const rows = sweeps.map((s) => {
    const done = Math.round(s.progress * s.trials_total);
    return h("tr", { "data-sweep": s.name },
      h("td", {}, h("a", { href: `#/sweeps/${encodeURIComponent(s.name)}` }, s.name)),
      h("td", { class: "text" }, s.task),
      h("td", { class: "text" }, `${s.metric} (${s.mode === "min" ? "lower" : "higher"} is better)`),
      h("td", { class: "text" }, h("span", { class: `status ${s.status}` }, s.status)),
      h("td", {}, progressBar(s.trial_counts, s.trials_total), ` ${done}/${s.trials_total}`),
      h("td", {}, fmt(s.best)),
      h("td", {}, s.budgets.map(fmt).join(", ")),
      h("td", {}, new Date(s.created_at).toLocaleString()),
    );
  });
  const head = ["sweep", "task", "metric", "status", "progress", "best", "budgets P", "created"];
  const th = (c) => h("th", { class: ["task", "metric", "status"].includes(c) ? "text" : null }, c);
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
    fact("best", fmt(sweep.best)),
    fact("budgets P", sweep.budgets.map(fmt).join(", ") || "–"),
  );
}

let clipIds = 0;

function frontierChart(sweep, trials, frontier, fit) {
  const points = trials.map((t) => ({ ...t, value: trialValue(t, sweep.metric) })).filter((t) => t.value !== null);
  if (!points.length) return h("p", { class: "muted" }, "No trial has reported the metric yet.");
  const plot = Plot.chart({
    className: "frontier-chart",
    x: { values: points.map((t) => t.params_total), log: true, label: "P (trainable parameters, log scale)" },
    y: { values: points.map((t) => t.value), label: sweep.metric },
  });
  const clipId = `clip-${++clipIds}`;
  plot.root.prepend(Plot.svg("clipPath", { id: clipId }, Plot.svg("rect", { x: 0, y: 0, width: plot.width, height: plot.height - 42 })));
  plot.layer.setAttribute("clip-path", `url(#${clipId})`);
  const legend = [{ label: "trial", color: "#9aa7b5", shape: "dot" }];
  if (fit) {
    const [low, high] = Plot.paddedDomain(points.map((t) => t.params_total), true);
    const sign = fit.mode === "min" ? 1 : -1;
    const curve = Array.from({ length: 80 }, (_, i) => low * (high / low) ** (i / 79))
      .map((p) => [p, fit.E.value + sign * fit.A.value * p ** -fit.alpha.value]);
    plot.layer.append(Plot.polyline(plot, curve, { class: "law-curve" }));
    legend.push({ label: "fitted law", color: "#1f4e79", shape: "dash" });
  }
  const front = frontier.points.map((p) => [p.params_total, p.value]);
  plot.layer.append(Plot.polyline(plot, front, { class: "frontier-line" }));
  legend.push({ label: "Pareto frontier", color: "#e76f51", shape: "dot" });
  for (const t of points) {
    plot.layer.append(Plot.svg("circle", {
      class: "trial-point", r: 3.5, cx: plot.x(t.params_total), cy: plot.y(t.value),
      "data-trial-id": t.id, "data-params": t.params_total, "data-value": t.value,
    }, Plot.svg("title", {}, `${t.id}: P ${fmt(t.params_total)}, N ${t.n_hidden}, d_m ${t.d_m}, seed ${t.seed}: ${fmt(t.value)}`)));
  }
  for (const p of frontier.points) {
    plot.layer.append(Plot.svg("circle", {
      class: "frontier-point", r: 5, cx: plot.x(p.params_total), cy: plot.y(p.value),
      "data-params": p.params_total, "data-value": p.value,
    }, Plot.svg("title", {}, `frontier: P ${fmt(p.params_total)}, N ${fmt(p.n_hidden)}, d_m ${fmt(p.d_m)}: ${fmt(p.value)}` +
      (p.n_seeds > 1 ? ` (mean of ${p.n_seeds} seeds)` : ""))));
  }
  plot.root.append(Plot.legend(plot, legend));
  return plot.root;
}

function lawText(sweep, fit, fitError) {
  if (!fit) return h("p", { class: "muted law" }, `Scaling law: not fitted yet${fitError ? ` (${fitError})` : ""}.`);
  const estimate = (label, e) => `${label} = ${fmt(e.value)}` + (e.ci_low !== null ? ` [${fmt(e.ci_low)}, ${fmt(e.ci_high)}]` : "");
  return h("p", { class: "law" },
    `${fit.law}: `, [estimate("E", fit.E), estimate("A", fit.A), estimate("alpha", fit.alpha)].join(", "),
    `; R² ${fmt(fit.r_squared)} (95% intervals, ${fit.n_bootstrap_ok} resamples)`);
}

function tradeoffChart(sweep, trials, optimum, axis) {
  const points = trials.map((t) => ({ ...t, value: trialValue(t, sweep.metric) }))
    .filter((t) => t.value !== null && t.budget !== null && t[axis] > 0);
  if (!points.length) return h("p", { class: "muted" }, "No finished trial with a budget yet.");
  const plot = Plot.chart({
    className: "tradeoff-chart",
    x: { values: points.map((t) => t[axis]), log: true, label: `${TRADEOFF_AXES[axis]}, log scale` },
    y: { values: points.map((t) => t.value), label: sweep.metric },
  });
  const budgets = [...new Set(points.map((t) => t.budget))].sort((a, b) => a - b);
  const legend = [];
  budgets.forEach((budget, i) => {
    const color = PALETTE[i % PALETTE.length];
    const atBudget = points.filter((t) => t.budget === budget);
    const byX = new Map();
    for (const t of atBudget) byX.set(t[axis], [...(byX.get(t[axis]) ?? []), t.value]);
    const means = [...byX].sort((a, b) => a[0] - b[0]).map(([x, vs]) => [x, vs.reduce((s, v) => s + v, 0) / vs.length]);
    plot.layer.append(Plot.polyline(plot, means, { class: "tradeoff-line", stroke: color, "data-budget": budget }));
    for (const t of atBudget) {
      plot.layer.append(Plot.svg("circle", {
        class: "tradeoff-point", r: 3, cx: plot.x(t[axis]), cy: plot.y(t.value), fill: color, "fill-opacity": 0.55,
        "data-trial-id": t.id, "data-budget": budget,
      }, Plot.svg("title", {}, `P ≈ ${fmt(budget)}: N ${t.n_hidden}, d_m ${t.d_m}, seed ${t.seed}: ${fmt(t.value)}`)));
    }
    legend.push({ label: `budget ${fmt(budget)}`, color });
  });
  for (const { budget, best } of optimum.budgets) {
    if (!(best[axis] > 0)) continue;
    plot.layer.append(Plot.svg("circle", {
      class: "optimum-marker", r: 7, cx: plot.x(best[axis]), cy: plot.y(best.value), "data-budget": budget,
    }, Plot.svg("title", {}, `best at budget ${fmt(budget)}: N ${fmt(best.n_hidden)}, d_m ${fmt(best.d_m)}: ${fmt(best.value)}`)));
  }
  legend.push({ label: "best at budget", color: "#1d2733", shape: "ring" });
  plot.root.append(Plot.legend(plot, legend.slice(-12)));
  return plot.root;
}

function trialsTable(sweep, rows, sort, onSort) {
  const cell = (row, field) => {
    const key = field.startsWith("metric.") ? sweep.metric + field.slice(6) : field;
    const value = row[key];
    if (field === "status") return h("span", { class: `status ${value}` }, value);
    return typeof value === "number" ? fmt(value) : value ?? "–";
  };
  const head = TABLE_COLUMNS.map(([field, label]) => {
    const sorted = sort.replace(/^-/, "") === field;
    const classes = ["sortable", TEXT_FIELDS.has(field) && "text", sorted && "sorted", sorted && sort.startsWith("-") && "desc"]
      .filter(Boolean).join(" ");
    return h("th", { class: classes, title: `sort by ${field}`, onclick: () => onSort(sorted && !sort.startsWith("-") ? `-${field}` : field) }, label);
  });
  const body = rows.map((row) => h("tr", { "data-trial-id": row.id }, TABLE_COLUMNS.map(([field]) => h("td", { class: TEXT_FIELDS.has(field) ? "text" : null }, cell(row, field)))));
  return h("table", { id: "trials" }, h("thead", {}, h("tr", {}, head)), h("tbody", {}, body));
}

function filterForm(sweep, onChange) {
  const input = (name, label, placeholder) =>
    h("label", {}, label, h("input", { name, placeholder, title: "a value, a set a,b,c or a range a..b" }));
  const select = (name, label, options) =>
    h("label", {}, label, h("select", { name }, h("option", { value: "" }, "any"), options.map((o) => h("option", { value: o }, o))));
  const form = h("form", { class: "filters", onsubmit: (e) => e.preventDefault() },
    select("status", "status", STATUSES),
    select("budget", "budget", sweep.budgets),
    input("d_m", "d_m", "e.g. 2,4 or 2..8"),
    input("n_hidden", "N", "e.g. 64..256"),
    input("seed", "seed", "e.g. 0"),
    input("metric.best", `best ${sweep.metric}`, "e.g. ..1.5"),
  );
  form.addEventListener("change", () => onChange(Object.fromEntries(new FormData(form))));
  return form;
}

function sweepPage(name) {
  const parts = {
    facts: h("div", {}), frontier: h("div", {}), law: h("div", {}), tradeoff: h("div", {}),
    table: h("div", { class: "table-scroll" }), tableNote: h("p", { class: "muted" }), error: h("p", { class: "error" }),
  };
  let sweep = null, filters = {}, sort = "id", axis = "d_m", lastCharts = null;
  const axisSelect = h("select", { name: "axis", onchange: (e) => { axis = e.target.value; drawTradeoff(); } },
    Object.keys(TRADEOFF_AXES).map((a) => h("option", { value: a }, a === "n_hidden" ? "N" : a)));
  const tableCard = h("div", { class: "card" }, h("h2", {}, "Trials"));
  view.replaceChildren(
    h("p", {}, h("a", { href: "#/" }, "← all sweeps")),
    h("h1", {}, name), parts.error, parts.facts,
    h("div", { class: "grid" },
      h("div", { class: "card", id: "frontier" }, h("h2", {}, "Pareto frontier"), parts.frontier, parts.law),
      h("div", { class: "card", id: "tradeoff" },
        h("span", { class: "chart-controls" }, "x axis ", axisSelect), h("h2", {}, "Tradeoff at each budget"), parts.tradeoff)),
    tableCard,
  );

  function drawTradeoff() {
    if (lastCharts) parts.tradeoff.replaceChildren(tradeoffChart(sweep, lastCharts.trials, lastCharts.optimum, axis));
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

  async function refresh() {
    try {
      const first = sweep === null;
      sweep = await getJSON(sweepPath(name));
      if (first) tableCard.append(filterForm(sweep, (f) => { filters = f; refreshTable(); }), parts.tableNote, parts.table);
      const [trials, frontier, optimum, fit] = await Promise.all([
        allTrials(name, { fields: CHART_FIELDS.join(",") }),
        getJSON(`${sweepPath(name)}/frontier`),
        getJSON(`${sweepPath(name)}/optimum`),
        getJSON(`${sweepPath(name)}/fit` + query({ n_bootstrap: FIT_BOOTSTRAP })).catch((error) => {
          if (error.status === 422) return error; // not enough frontier points yet: no law to draw
          throw error;
        }),
        refreshTable(),
      ]);
      const law = fit instanceof ApiError ? null : fit;
      lastCharts = { trials, optimum };
      parts.facts.replaceChildren(sweepFacts(sweep));
      parts.frontier.replaceChildren(frontierChart(sweep, trials, frontier, law));
      parts.law.replaceChildren(lawText(sweep, law, law ? null : fit.message));
      drawTradeoff();
      parts.error.textContent = "";
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
