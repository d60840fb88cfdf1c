// Simple SVG charts (no library): horizontal bars, and a line for values over time.
import { svg } from "./dom.js";

// rows: [{label, value, text?, cls?}]; max: scale (default: the largest value).
export function barChart(title, rows, { max, width = 520, rowHeight = 26, labelWidth = 150, format = String } = {}) {
  const top = 8;
  const height = top + rows.length * rowHeight + 4;
  const scale = max ?? Math.max(...rows.map((r) => r.value), 1e-12);
  const barMax = width - labelWidth - 90;
  const el = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": title,
    preserveAspectRatio: "xMinYMin meet" });
  el.append(svg("title", {}, title));
  rows.forEach((r, i) => {
    const y = top + i * rowHeight;
    const w = Math.max(1, (Math.max(0, r.value) / scale) * barMax);
    el.append(
      svg("text", { x: labelWidth - 8, y: y + rowHeight / 2 + 4, "text-anchor": "end", class: "chart-label" },
        r.label.length > 22 ? `…${r.label.slice(-21)}` : r.label),
      svg("rect", { x: labelWidth, y: y + 4, width: w, height: rowHeight - 8, rx: 3, class: `bar ${r.cls || ""}` }),
      svg("text", { x: labelWidth + w + 6, y: y + rowHeight / 2 + 4, class: "chart-value" }, r.text ?? format(r.value)),
    );
  });
  return el;
}

// A line chart of points [{label, value}] in order (e.g. training loss per epoch); y from the data's range.
export function lineChart(title, points, { width = 520, height = 200, format = String } = {}) {
  const pad = { left: 64, right: 12, top: 10, bottom: 26 };
  const values = points.map((p) => p.value);
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (hi - lo < 1e-12) { lo -= 0.5 * Math.abs(lo || 1); hi += 0.5 * Math.abs(hi || 1); }
  const w = width - pad.left - pad.right;
  const hgt = height - pad.top - pad.bottom;
  const x = (i) => pad.left + (points.length > 1 ? (i / (points.length - 1)) * w : w / 2);
  const y = (v) => pad.top + (1 - (v - lo) / (hi - lo)) * hgt;
  const el = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart line-chart", role: "img", "aria-label": title,
    preserveAspectRatio: "xMinYMin meet" });
  el.append(svg("title", {}, title));
  yGrid(el, [hi, (hi + lo) / 2, lo], y, pad, width, format);
  el.append(svg("polyline", { points: points.map((p, i) => `${x(i)},${y(p.value)}`).join(" "), class: "line" }));
  const every = Math.ceil(points.length / 10);
  const last = points.length - 1;
  points.forEach((p, i) => {
    el.append(svg("circle", { cx: x(i), cy: y(p.value), r: 3, class: "dot" }, svg("title", {}, `${p.label}: ${format(p.value)}`)));
    if (i === last || (i % every === 0 && last - i >= every / 2)) {
      el.append(svg("text", { x: x(i), y: height - 8, "text-anchor": "middle", class: "chart-label" }, p.label));
    }
  });
  return el;
}

// Points {x, y, label, cls}: x and y on linear axes; e.g. a goal search's candidates (ratio vs quality).
export function scatterChart(title, points, { width = 520, height = 240, xLabel = "", yLabel = "", format = String } = {}) {
  const pad = { left: 64, right: 16, top: 26, bottom: 34 };
  const span = (vals) => {
    let lo = Math.min(...vals);
    let hi = Math.max(...vals);
    if (hi - lo < 1e-12) { lo -= 0.5 * Math.abs(lo || 1); hi += 0.5 * Math.abs(hi || 1); }
    return [lo, hi];
  };
  const [x0, x1] = span(points.map((p) => p.x));
  const [y0, y1] = span(points.map((p) => p.y));
  const x = (v) => pad.left + ((v - x0) / (x1 - x0)) * (width - pad.left - pad.right);
  const y = (v) => pad.top + (1 - (v - y0) / (y1 - y0)) * (height - pad.top - pad.bottom);
  const el = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart scatter-chart", role: "img", "aria-label": title,
    preserveAspectRatio: "xMinYMin meet" });
  el.append(svg("title", {}, title));
  yGrid(el, [y0, (y0 + y1) / 2, y1], y, pad, width, format);
  for (const v of [x0, (x0 + x1) / 2, x1]) {
    el.append(svg("text", { x: x(v), y: height - 18, "text-anchor": "middle", class: "chart-label" }, `${v.toFixed(1)}×`));
  }
  el.append(svg("text", { x: (pad.left + width) / 2, y: height - 4, "text-anchor": "middle", class: "chart-label" }, xLabel),
    svg("text", { x: 4, y: 12, class: "chart-label" }, yLabel));
  for (const p of points) {
    el.append(svg("circle", { cx: x(p.x), cy: y(p.y), r: p.cls === "chosen" ? 6 : 4, class: `dot ${p.cls || ""}` },
      svg("title", {}, `${p.label}: ${p.x.toFixed(2)}×, ${format(p.y)}`)));
  }
  return el;
}

// Horizontal grid lines with their value labels at the left edge.
function yGrid(el, values, y, pad, width, format) {
  for (const v of values) {
    el.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v), class: "grid-line" }),
      svg("text", { x: pad.left - 6, y: y(v) + 4, "text-anchor": "end", class: "chart-label" }, format(v)));
  }
}
