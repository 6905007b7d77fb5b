// Line charts on uPlot (loaded as the global `uPlot` by index.html from node_modules). The
// wrapper sizes each chart to its container and redraws at most once per animation frame.

/**
 * @typedef {object} ChartHandle
 * @property {(data: number[][]) => void} update redraw with these columns (coalesced per frame)
 */

/**
 * Creates a time-series line chart in `container`.
 *
 * @param {HTMLElement} container
 * @param {object} options
 * @param {{label: string, stroke: string}[]} options.series one entry per y column
 * @param {(v: number) => string} options.format y-axis and legend formatting
 * @param {number} [options.height]
 * @returns {ChartHandle}
 */
export function createTimeChart(container, { series, format, height = 220 }) {
  const UPlot = globalThis.uPlot;
  if (typeof UPlot !== 'function') {
    container.classList.add('chart-missing');
    container.textContent =
      'Chart library not loaded: run `npm install` in web/ so node_modules/uplot exists.';
    return { update() {} };
  }
  const empty = [[], ...series.map(() => [])];
  const chart = new UPlot(
    {
      width: Math.max(container.clientWidth, 200),
      height,
      scales: { x: { time: true } },
      series: [
        { label: 'time' },
        ...series.map((s) => ({
          label: s.label,
          stroke: s.stroke,
          width: 2,
          points: { show: false },
          value: (_u, v) => (v === null || v === undefined ? '—' : format(v)),
        })),
      ],
      axes: [
        { stroke: '#51606f', grid: { stroke: '#e6eaef' }, ticks: { stroke: '#d0d7de' } },
        {
          stroke: '#51606f',
          size: 80,
          grid: { stroke: '#e6eaef' },
          ticks: { stroke: '#d0d7de' },
          values: (_u, splits) => splits.map(format),
        },
      ],
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
    },
    empty,
    container,
  );

  new ResizeObserver(() => {
    const width = Math.max(container.clientWidth, 200);
    if (width !== chart.width) chart.setSize({ width, height });
  }).observe(container);

  container.classList.add('chart-empty');
  let pending = null;
  return {
    update(data) {
      if (pending === null) {
        requestAnimationFrame(() => {
          container.classList.toggle('chart-empty', pending[0].length === 0);
          chart.setData(pending);
          pending = null;
        });
      }
      pending = data;
    },
  };
}
