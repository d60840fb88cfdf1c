// Simple horizontal SVG bar charts (no library).
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
