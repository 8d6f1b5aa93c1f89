// Plot: a few dozen lines of SVG charting (scales, ticks, axes, bands, legends) for the dashboard; no dependencies.
"use strict";

const Plot = (() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const MARGIN = { left: 60, right: 16, top: 12, bottom: 42 };
  let clipIds = 0;

  function svg(tag, attrs = {}, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value !== undefined && value !== null) node.setAttribute(name, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  // 1234567 -> "1.23M", 0.01234 -> "0.0123": `digits` significant digits, SI suffixes for large values.
  function formatNumber(value, digits = 3) {
    if (value === null || value === undefined || !Number.isFinite(value)) return "–";
    const size = Math.abs(value);
    for (const [limit, suffix] of [[1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
      if (size >= limit) return `${+(value / limit).toPrecision(digits)}${suffix}`;
    }
    return `${+value.toPrecision(digits)}`;
  }

  // 4 significant digits without SI suffixes (1287, 0.2959, 5.364e-9): fitted parameters and metrics to compare.
  function formatPrecise(value, digits = 4) {
    if (value === null || value === undefined || !Number.isFinite(value)) return "–";
    return `${+value.toPrecision(digits)}`;
  }

  // 59952 -> "59,952": parameter counts and other integers exactly, grouped by thousands.
  function formatInteger(value) {
    if (value === null || value === undefined || !Number.isFinite(value)) return "–";
    return Math.round(value).toLocaleString("en-US");
  }

  // Enough significant digits that neighbouring ticks read differently: 3.325 beside 3.33 on a 0.005 step.
  function tickDigits(ticks) {
    if (ticks.length < 2) return 3;
    const step = Math.min(...ticks.slice(1).map((tick, i) => tick - ticks[i]));
    const size = Math.max(...ticks.map(Math.abs));
    return Math.min(12, Math.max(3, Math.ceil(Math.log10(size / step)) + 1));
  }

  function niceStep(span, count) {
    const raw = span / Math.max(count, 1);
    const power = 10 ** Math.floor(Math.log10(raw));
    const multiple = [1, 2, 5, 10].find((m) => m * power >= raw);
    return multiple * power;
  }

  function linearTicks([low, high], count = 6) {
    const step = niceStep(high - low, count);
    const ticks = [];
    for (let tick = Math.ceil(low / step) * step; tick <= high + step * 1e-9; tick += step) ticks.push(+tick.toPrecision(12));
    return ticks;
  }

  function logTicks([low, high]) {
    const first = Math.floor(Math.log10(low)), last = Math.ceil(Math.log10(high));
    const within = (multiples) => {
      const ticks = [];
      for (let decade = first; decade <= last; decade++) {
        for (const m of multiples) {
          const tick = +(m * 10 ** decade).toPrecision(12);
          if (tick >= low && tick <= high) ticks.push(tick);
        }
      }
      return ticks;
    };
    // As many round ticks as read well: every 1..9 within a decade or so, 1-2-5 over a few decades, else decades.
    for (const multiples of [[1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 5], [1]]) {
      const ticks = within(multiples);
      if (ticks.length <= 9 && ticks.length >= 3) return ticks;
    }
    const decades = within([1]);
    return decades.length >= 2 ? decades : linearTicks([low, high], 5);
  }

  function paddedDomain(values, log) {
    const finite = values.filter((v) => Number.isFinite(v) && (!log || v > 0));
    if (!finite.length) return log ? [1, 10] : [0, 1];
    let low = Math.min(...finite), high = Math.max(...finite);
    if (log) {
      const pad = low === high ? 1.5 : (high / low) ** 0.06;
      return [low / pad, high * pad];
    }
    const pad = low === high ? Math.abs(low) * 0.1 || 1 : (high - low) * 0.08;
    return [low - pad, high + pad];
  }

  function scale(domain, [start, end], log) {
    const project = log ? Math.log10 : (v) => v;
    const [a, b] = domain.map(project);
    const map = (value) => start + ((project(value) - a) / (b - a)) * (end - start);
    map.ticks = () => (log ? logTicks(domain) : linearTicks(domain));
    map.domain = domain;
    return map;
  }

  // A chart with axes and grid; draw into `.layer` (clipped to the plot area) using `.x(value)` and `.y(value)`.
  function chart({ width = 640, height = 360, x, y, className = "" }) {
    const root = svg("svg", { class: `plot ${className}`, viewBox: `0 0 ${width} ${height}`, role: "img" });
    const right = width - MARGIN.right, bottom = height - MARGIN.bottom;
    const xScale = scale(x.domain || paddedDomain(x.values, x.log), [MARGIN.left, right], x.log);
    const yScale = scale(y.domain || paddedDomain(y.values, y.log), [bottom, MARGIN.top], y.log);
    const grid = svg("g", { class: "grid" });
    const labels = svg("g", { class: "ticks" });
    const xTicks = xScale.ticks(), yTicks = yScale.ticks();
    for (const tick of xTicks) {
      const at = xScale(tick);
      grid.append(svg("line", { x1: at, x2: at, y1: MARGIN.top, y2: bottom }));
      labels.append(svg("text", { x: at, y: bottom + 16, "text-anchor": "middle" }, formatNumber(tick, tickDigits(xTicks))));
    }
    for (const tick of yTicks) {
      const at = yScale(tick);
      grid.append(svg("line", { x1: MARGIN.left, x2: right, y1: at, y2: at }));
      labels.append(svg("text", { x: MARGIN.left - 6, y: at + 4, "text-anchor": "end" }, formatNumber(tick, tickDigits(yTicks))));
    }
    const clipId = `plot-clip-${++clipIds}`;
    const area = { left: MARGIN.left, right, top: MARGIN.top, bottom };
    const layer = svg("g", { class: "layer", "clip-path": `url(#${clipId})` });
    root.append(
      svg("defs", {}, svg("clipPath", { id: clipId },
        svg("rect", { x: area.left, y: area.top, width: right - area.left, height: bottom - area.top }))),
      grid,
      svg("rect", { class: "frame", x: MARGIN.left, y: MARGIN.top, width: right - MARGIN.left, height: bottom - MARGIN.top }),
      labels,
      svg("text", { class: "axis-label", x: (MARGIN.left + right) / 2, y: height - 6, "text-anchor": "middle" }, x.label),
      svg("text", { class: "axis-label", transform: `translate(14 ${(MARGIN.top + bottom) / 2}) rotate(-90)`, "text-anchor": "middle" }, y.label),
      layer,
    );
    return { root, layer, x: xScale, y: yScale, width, height, area };
  }

  // Values a log axis cannot show (<= 0, null) break the line instead of drawing a spike.
  const drawable = (plot, px, py) => Number.isFinite(plot.x(px)) && Number.isFinite(plot.y(py));

  function polyline(plot, points, attrs) {
    let d = "", pen = "M";
    for (const [px, py] of points) {
      if (px === null || py === null || !drawable(plot, px, py)) { pen = "M"; continue; }
      d += `${pen}${plot.x(px).toFixed(1)},${plot.y(py).toFixed(1)}`;
      pen = "L";
    }
    return svg("path", { d, ...attrs });
  }

  // A filled band between low and high along x: points [[x, low, high], ...]; rows without both ends are skipped.
  function band(plot, points, attrs) {
    const rows = points.filter(([px, low, high]) => low !== null && high !== null && drawable(plot, px, low) && drawable(plot, px, high));
    if (rows.length < 2) return null;
    const upper = rows.map(([px, , high]) => `${plot.x(px).toFixed(1)},${plot.y(high).toFixed(1)}`);
    const lower = rows.slice().reverse().map(([px, low]) => `${plot.x(px).toFixed(1)},${plot.y(low).toFixed(1)}`);
    return svg("path", { d: `M${upper.join("L")}L${lower.join("L")}Z`, ...attrs });
  }

  // An interval whisker from `from` to `to` (data units) along "x" or "y" through `at`; an open end (null) runs to
  // the plot's edge and ends in an arrow. Returns a group, or null when both ends are unknown.
  function whisker(plot, axis, at, from, to, { open = [false, false], color = "#1d2733", className = "whisker" } = {}) {
    const group = svg("g", { class: className });
    const along = axis === "x" ? plot.x : plot.y;
    const across = axis === "x" ? plot.y(at) : plot.x(at);
    const [edgeLow, edgeHigh] = axis === "x" ? [plot.area.left, plot.area.right] : [plot.area.bottom, plot.area.top];
    const ends = [from === null ? (open[0] ? edgeLow : null) : along(from), to === null ? (open[1] ? edgeHigh : null) : along(to)];
    if (ends[0] === null && ends[1] === null) return null;
    const [a, b] = [ends[0] ?? ends[1], ends[1] ?? ends[0]];
    const line = axis === "x" ? { x1: a, x2: b, y1: across, y2: across } : { x1: across, x2: across, y1: a, y2: b };
    group.append(svg("line", { ...line, stroke: color, "stroke-width": 1.5 }));
    ends.forEach((end, i) => {
      if (end === null) return;
      const isOpen = (i === 0 ? from : to) === null;
      if (isOpen) { // an arrow head pointing off the grid
        const sign = (i === 0 ? -1 : 1) * (axis === "x" ? 1 : -1);
        const tip = end, base = end - sign * 7;
        const points = axis === "x" ? [[tip, across], [base, across - 4], [base, across + 4]] : [[across, tip], [across - 4, base], [across + 4, base]];
        group.append(svg("path", { class: "open-end", d: `M${points.map((p) => p.join(",")).join("L")}Z`, fill: color }));
      } else {
        const cap = axis === "x" ? { x1: end, x2: end, y1: across - 4, y2: across + 4 } : { x1: across - 4, x2: across + 4, y1: end, y2: end };
        group.append(svg("line", { ...cap, stroke: color, "stroke-width": 1.5 }));
      }
    });
    return group;
  }

  function diamond(cx, cy, r, attrs) {
    return svg("path", { d: `M${cx},${cy - r}L${cx + r},${cy}L${cx},${cy + r}L${cx - r},${cy}Z`, ...attrs });
  }

  // An HTML legend below a chart (it wraps on narrow screens and never covers the data).
  // entries: { label, color, shape: "line" | "dash" | "dotted" | "point" | "ring" | "diamond" | "square" | "band" }
  function legend(entries, className = "") {
    const box = document.createElement("div");
    box.className = `legend ${className}`.trim();
    for (const { label, color, shape = "line" } of entries) {
      const sample = svg("svg", { class: "swatch", viewBox: "0 0 22 12", width: 22, height: 12 });
      if (shape === "point" || shape === "ring") {
        sample.append(svg("circle", { cx: 11, cy: 6, r: shape === "point" ? 3.5 : 4.5, fill: shape === "point" ? color : "none", stroke: shape === "ring" ? color : "none", "stroke-width": 2 }));
      } else if (shape === "diamond") {
        sample.append(diamond(11, 6, 5, { fill: color, stroke: "#1d2733", "stroke-width": 1 }));
      } else if (shape === "square") {
        sample.append(svg("rect", { x: 8, y: 3, width: 6, height: 6, fill: color }));
      } else if (shape === "band") {
        sample.append(svg("rect", { x: 1, y: 2, width: 20, height: 8, fill: color, "fill-opacity": 0.25 }));
      } else {
        const dash = { dash: "6 3", dotted: "1.5 2.5" }[shape] ?? null;
        sample.append(svg("line", { x1: 1, x2: 21, y1: 6, y2: 6, stroke: color, "stroke-width": 2, "stroke-dasharray": dash, "stroke-linecap": shape === "dotted" ? "round" : null }));
      }
      const item = document.createElement("span");
      item.className = "legend-item";
      item.append(sample, label);
      box.append(item);
    }
    return box;
  }

  return { svg, chart, polyline, band, whisker, diamond, legend, formatNumber, formatPrecise, formatInteger, paddedDomain };
})();
