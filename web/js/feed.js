// Reading the price feed (CoinDesk BPI shape) and the data-feeder's status, without the DOM.

/**
 * Turns a number-ish into a finite number: numbers as they are, strings such as "56,189.3483"
 * (the BPI's formatted `rate`) without their thousands separators.
 * @param {unknown} v
 * @returns {number | null}
 */
function toFiniteNumber(v) {
  if (typeof v === 'number') return Number.isFinite(v) ? v : null;
  if (typeof v === 'string') {
    const text = v.replaceAll(',', '').trim();
    if (text === '') return null;
    const n = Number(text);
    return Number.isFinite(n) ? n : null;
  }
  return null;
}

/**
 * The USD price to chart from whatever a client received.
 *
 * Accepts the whole feed document (`bpi.USD.rate_float`, falling back to the formatted
 * `bpi.USD.rate`), and also the narrower values a view topic may publish later: the `bpi`
 * object, the `USD` object, or the bare number (a DOUBLE topic, or a STRING topic holding
 * number text). JSON text is parsed first, so a raw bridge frame works too.
 *
 * @param {unknown} value
 * @returns {number | null} null when no price can be found
 */
export function extractUsdRate(value) {
  if (typeof value === 'string') {
    const direct = toFiniteNumber(value);
    if (direct !== null) return direct;
    try {
      return extractUsdRate(JSON.parse(value));
    } catch {
      return null;
    }
  }
  if (typeof value === 'number') return toFiniteNumber(value);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return null;
  const usd = value.bpi?.USD ?? value.USD ?? value;
  if (usd === null || typeof usd !== 'object') return null;
  return toFiniteNumber(usd.rate_float) ?? toFiniteNumber(usd.rate);
}

/**
 * The feeder's last payload, pretty-printed for a <pre>. The feeder may report it as JSON text
 * or as an already-parsed object; text that is not JSON is shown as it is.
 *
 * @param {unknown} payload
 * @returns {string}
 */
export function prettyPayload(payload) {
  if (payload === null || payload === undefined) return '(nothing published yet)';
  if (typeof payload === 'string') {
    try {
      return JSON.stringify(JSON.parse(payload), null, 2);
    } catch {
      return payload;
    }
  }
  return JSON.stringify(payload, null, 2);
}

/** Smallest and largest interval the dashboard will ask the feeder for, in milliseconds. */
export const INTERVAL_LIMITS = Object.freeze({ min: 10, max: 3_600_000 });

/**
 * Reads the interval typed into the form.
 *
 * @param {string} text what the user typed
 * @returns {{ok: true, value: number} | {ok: false, error: string}}
 */
export function parseIntervalMs(text) {
  const trimmed = String(text).trim();
  if (!/^\d+$/.test(trimmed)) {
    return { ok: false, error: 'Interval must be a whole number of milliseconds.' };
  }
  const value = Number(trimmed);
  if (value < INTERVAL_LIMITS.min || value > INTERVAL_LIMITS.max) {
    return {
      ok: false,
      error: `Interval must be between ${INTERVAL_LIMITS.min} and ${INTERVAL_LIMITS.max} ms.`,
    };
  }
  return { ok: true, value };
}

/**
 * One status field as display text: strings as they are, numbers and booleans via String,
 * objects (a structured source or sink description) as compact JSON, absent as a dash.
 *
 * @param {unknown} v
 * @returns {string}
 */
export function describeField(v) {
  if (v === null || v === undefined || v === '') return '—';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}
