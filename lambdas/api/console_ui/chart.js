// The summary chart: sync requests (area) and blocks (bars) over time, drawn as inline
// SVG from the summary's series. No library: a few dozen elements redrawn per refresh.

import { s } from "./dom.js";
import { clockTime, count, parseTime } from "./format.js";

const HEIGHT = 150;
const PAD = { top: 10, right: 12, bottom: 22, left: 40 };

/** Round up to a "nice" axis maximum (1, 2, 5 x 10^n). */
export function niceMax(value) {
  if (value <= 0) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) {
    if (value <= step * magnitude) return step * magnitude;
  }
  return 10 * magnitude;
}

/**
 * @param {HTMLElement} container
 * @param {{t: string, requests: number, blocks: number}[]} series
 */
export function drawChart(container, series) {
  const points = (series || [])
    .map((p) => ({ t: parseTime(p.t), requests: Number(p.requests) || 0, blocks: Number(p.blocks) || 0 }))
    .filter((p) => p.t)
    .sort((a, b) => a.t - b.t);
  const width = Math.max(240, Math.floor(container.clientWidth || 480));
  const totalRequests = points.reduce((sum, p) => sum + p.requests, 0);
  const totalBlocks = points.reduce((sum, p) => sum + p.blocks, 0);
  const label = points.length
    ? `Between ${clockTime(points[0].t)} and ${clockTime(points.at(-1).t)}: ` +
      `${count(totalRequests)} sync requests, ${count(totalBlocks)} blocked.`
    : "No sync requests recorded yet.";

  const svg = s("svg", {
    width,
    height: HEIGHT,
    viewBox: `0 0 ${width} ${HEIGHT}`,
    role: "img",
    "aria-label": label,
    class: "chart-svg",
  });
  container.replaceChildren(svg);
  if (!points.length) {
    svg.append(s("text", { x: width / 2, y: HEIGHT / 2, class: "chart-empty", "text-anchor": "middle" }, label));
    return;
  }

  const plotW = width - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const maxY = niceMax(Math.max(...points.map((p) => Math.max(p.requests, p.blocks))));
  const slot = plotW / points.length;
  const x = (i) => PAD.left + slot * (i + 0.5);
  const y = (v) => PAD.top + plotH - (v / maxY) * plotH;

  // Grid and y labels at 0, 1/2, max.
  for (const fraction of [0, 0.5, 1]) {
    const value = maxY * fraction;
    const gy = y(value);
    svg.append(s("line", { x1: PAD.left, x2: width - PAD.right, y1: gy, y2: gy, class: "chart-grid" }));
    svg.append(s("text", { x: PAD.left - 6, y: gy + 4, "text-anchor": "end", class: "chart-axis" },
      count(Math.round(value))));
  }

  // Requests: an area under a line.
  const line = points.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p.requests).toFixed(1)}`).join("");
  const area = `${line}L${x(points.length - 1).toFixed(1)},${y(0)}L${x(0).toFixed(1)},${y(0)}Z`;
  svg.append(s("path", { d: area, class: "chart-area" }));
  svg.append(s("path", { d: line, class: "chart-line" }));

  // Blocks: bars.
  const barW = Math.max(2, Math.min(14, slot * 0.5));
  points.forEach((p, i) => {
    if (!p.blocks) return;
    const top = y(p.blocks);
    svg.append(s("rect", { x: x(i) - barW / 2, y: top, width: barW, height: y(0) - top, class: "chart-bar" }));
  });

  // X labels: first, middle, last.
  const labelled = new Set([0, Math.floor((points.length - 1) / 2), points.length - 1]);
  for (const i of labelled) {
    const anchor = i === 0 ? "start" : i === points.length - 1 ? "end" : "middle";
    const tx = i === 0 ? PAD.left : i === points.length - 1 ? width - PAD.right : x(i);
    svg.append(s("text", { x: tx, y: HEIGHT - 6, "text-anchor": anchor, class: "chart-axis" },
      clockTime(points[i].t)));
  }

  // Hover targets with a native tooltip per time bucket.
  points.forEach((p, i) => {
    svg.append(s("rect", { x: PAD.left + slot * i, y: PAD.top, width: slot, height: plotH, class: "chart-hit" },
      s("title", {}, `${clockTime(p.t)}: ${count(p.requests)} requests, ${count(p.blocks)} blocked`)));
  });
}
