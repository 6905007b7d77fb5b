// Chart data that never grows without bound: a page left open for days keeps only the latest
// points, so memory and redraw time stay flat.

/** How many points each chart keeps by default. */
export const DEFAULT_WINDOW = 300;

/**
 * Drops the oldest entries of every column so that none is longer than `capacity`.
 * The columns are parallel arrays (x values, then one array per series), as uPlot expects.
 *
 * @param {unknown[][]} columns modified in place
 * @param {number} capacity
 * @returns {number} how many entries were dropped from each column
 */
export function trimToWindow(columns, capacity) {
  const excess = columns.length > 0 ? columns[0].length - capacity : 0;
  if (excess <= 0) return 0;
  for (const column of columns) column.splice(0, excess);
  return excess;
}

/** Parallel columns [x, y1, y2, …] holding at most `capacity` points. */
export class BoundedSeries {
  /**
   * @param {number} seriesCount number of y columns
   * @param {number} [capacity] points kept
   */
  constructor(seriesCount, capacity = DEFAULT_WINDOW) {
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new RangeError(`window must be a positive whole number, got ${capacity}`);
    }
    this.capacity = capacity;
    this.columns = Array.from({ length: seriesCount + 1 }, () => []);
  }

  /**
   * Appends one point, dropping the oldest when the window is full.
   * @param {number} x
   * @param {...(number | null)} ys one value per series (null leaves a gap)
   */
  push(x, ...ys) {
    if (ys.length !== this.columns.length - 1) {
      throw new RangeError(`expected ${this.columns.length - 1} values, got ${ys.length}`);
    }
    this.columns[0].push(x);
    ys.forEach((y, i) => this.columns[i + 1].push(y));
    trimToWindow(this.columns, this.capacity);
  }

  /** Number of points held. */
  get length() {
    return this.columns[0].length;
  }

  /** The columns, in the shape uPlot's setData takes. */
  data() {
    return this.columns;
  }

  /** Forgets every point. */
  clear() {
    for (const column of this.columns) column.length = 0;
  }
}
