// Line charts with uPlot (bundled at build time, no CDN).
import uPlot from "uplot";

export function lineChart(el, series, { height = 220, yRange } = {}) {
  const colors = ["#e0a100", "#2e86de", "#2e8b57", "#c0392b"];
  const opts = {
    width: Math.max(300, el.clientWidth),
    height,
    series: [
      { label: series[0] },
      ...series.slice(1).map((label, i) => ({ label, stroke: colors[i], width: 2, points: { size: 5 } })),
    ],
    scales: { x: { time: false }, ...(yRange ? { y: { range: yRange } } : {}) },
    // x is a count (round, step): whole-number ticks only.
    axes: [{ incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000] }, {}],
  };
  const data = series.map(() => []);
  const plot = new uPlot(opts, data, el);
  new ResizeObserver(() => plot.setSize({ width: Math.max(300, el.clientWidth), height })).observe(el);
  return { set: (columns) => plot.setData(columns) };
}
