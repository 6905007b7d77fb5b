// Number and time formatting for the page; fixed to en-US so output does not depend on the
// browser's locale (and tests can assert on it).

const countFormat = new Intl.NumberFormat('en-US');
const UNITS = ['B', 'kB', 'MB', 'GB', 'TB'];

/**
 * A whole count with thousands separators.
 * @param {number} n
 */
export function formatCount(n) {
  return countFormat.format(n);
}

/**
 * A byte count in decimal units ("1.50 kB"); exact below 1000.
 * @param {number | null} n
 */
export function formatBytes(n) {
  if (n === null || !Number.isFinite(n)) return '—';
  let value = n;
  let unit = 0;
  while (Math.abs(value) >= 1000 && unit < UNITS.length - 1) {
    value /= 1000;
    unit += 1;
  }
  if (unit === 0) return `${Math.round(value)} B`;
  return `${value.toFixed(value >= 100 ? 0 : value >= 10 ? 1 : 2)} ${UNITS[unit]}`;
}

/**
 * A percentage with one decimal, or a dash when unknown.
 * @param {number | null} p
 */
export function formatPercent(p) {
  if (p === null || !Number.isFinite(p)) return '—';
  return `${p.toFixed(1)} %`;
}

/**
 * A price with two decimals and separators.
 * @param {number | null} v
 */
export function formatRate(v) {
  if (v === null || !Number.isFinite(v)) return '—';
  return v.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

/**
 * A delay as seconds ("1.5 s").
 * @param {number} ms
 */
export function formatDelay(ms) {
  return `${(ms / 1000).toFixed(1)} s`;
}

/**
 * A timestamp from the feeder (ISO text or epoch milliseconds) as local time of day, or the
 * input as it is when it cannot be read as a time.
 * @param {unknown} t
 */
export function formatTimestamp(t) {
  if (t === null || t === undefined || t === '') return '—';
  const date = typeof t === 'number' ? new Date(t) : new Date(String(t));
  if (Number.isNaN(date.getTime())) return String(t);
  return date.toLocaleTimeString('en-GB', { hour12: false });
}
