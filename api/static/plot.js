// Plot: a few dozen lines of SVG charting (scales, ticks, axes) for the dashboard; no dependencies.
"use strict";

const Plot = (() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const MARGIN = { left: 60, right: 16, top: 12, bottom: 42 };

  function svg(tag, attrs = {}, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value !== undefined && value !== null) node.setAttribute(name, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  // 1234567 -> "1.23M", 0.01234 -> "0.0123": three significant digits, SI suffixes for large values.
  function formatNumber(value) {
    if (value === null || value === undefined || !Number.isFinite(value)) return "–";
    const size = Math.abs(value);
    for (const [limit, suffix] of [[1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
      if (size >= limit) return `${+(value / limit).toPrecision(3)}${suffix}`;
    }
    return `${+value.toPrecision(3)}`;
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
    if (high / low < 10) return linearTicks([low, high], 5); // within a decade, round numbers read better
    const first = Math.floor(Math.log10(low)), last = Math.ceil(Math.log10(high));
    // Few decades on the axis: label 1-2-5 within each decade too, so there are always several ticks.
    const multiples = last - first <= 2 ? [1, 2, 5] : [1];
    const ticks = [];
    for (let decade = first; decade <= last; decade++) {
      for (const m of multiples) {
        const tick = m * 10 ** decade;
        if (tick >= low && tick <= high) ticks.push(tick);
      }
    }
    return ticks;
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
    return map;
  }

  // A chart with axes and grid; draw into `.layer` using `.x(value)` and `.y(value)`.
  function chart({ width = 640, height = 360, x, y, className = "" }) {
    const root = svg("svg", { class: `plot ${className}`, viewBox: `0 0 ${width} ${height}`, role: "img" });
    const right = width - MARGIN.right, bottom = height - MARGIN.bottom;
    const xScale = scale(x.domain || paddedDomain(x.values, x.log), [MARGIN.left, right], x.log);
    const yScale = scale(y.domain || paddedDomain(y.values, y.log), [bottom, MARGIN.top], y.log);
    const grid = svg("g", { class: "grid" });
    const labels = svg("g", { class: "ticks" });
    for (const tick of xScale.ticks()) {
      const at = xScale(tick);
      grid.append(svg("line", { x1: at, x2: at, y1: MARGIN.top, y2: bottom }));
      labels.append(svg("text", { x: at, y: bottom + 16, "text-anchor": "middle" }, formatNumber(tick)));
    }
    for (const tick of yScale.ticks()) {
      const at = yScale(tick);
      grid.append(svg("line", { x1: MARGIN.left, x2: right, y1: at, y2: at }));
      labels.append(svg("text", { x: MARGIN.left - 6, y: at + 4, "text-anchor": "end" }, formatNumber(tick)));
    }
    const layer = svg("g", { class: "layer" });
    root.append(
      grid,
      svg("rect", { class: "frame", x: MARGIN.left, y: MARGIN.top, width: right - MARGIN.left, height: bottom - MARGIN.top }),
      labels,
      svg("text", { class: "axis-label", x: (MARGIN.left + right) / 2, y: height - 6, "text-anchor": "middle" }, x.label),
      svg("text", { class: "axis-label", transform: `translate(14 ${(MARGIN.top + bottom) / 2}) rotate(-90)`, "text-anchor": "middle" }, y.label),
      layer,
    );
    return { root, layer, x: xScale, y: yScale, width, height };
  }

  function polyline(plot, points, attrs) {
    const d = points.map(([px, py], i) => `${i ? "L" : "M"}${plot.x(px).toFixed(1)},${plot.y(py).toFixed(1)}`).join("");
    return svg("path", { d, ...attrs });
  }

  // entries: { label, color, shape: "line" | "dash" | "dot" | "ring" }
  function legend(plot, entries) {
    const group = svg("g", { class: "legend" });
    entries.forEach(({ label, color, shape = "line" }, i) => {
      const top = MARGIN.top + 8 + i * 16, left = plot.width - 170;
      const sample = shape === "dot" || shape === "ring"
        ? svg("circle", { cx: left + 9, cy: top, r: shape === "dot" ? 3.5 : 5, fill: shape === "dot" ? color : "none", stroke: shape === "ring" ? color : "none", "stroke-width": 2 })
        : svg("line", { x1: left, x2: left + 18, y1: top, y2: top, stroke: color, "stroke-width": 2, "stroke-dasharray": shape === "dash" ? "5 3" : null });
      group.append(sample, svg("text", { x: left + 22, y: top + 4 }, label));
    });
    return group;
  }

  return { svg, chart, polyline, legend, formatNumber, paddedDomain };
})();
