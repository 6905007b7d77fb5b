// A bounded log of what the page received, for tests and troubleshooting: with `?debug=1` the
// page exposes one as `window.dashboardDebug`, so a browser test can compare, value by value,
// what each client received with what the feed published (the charts keep only their window,
// and only numbers). Off by default: a dashboard left open for days keeps nothing extra.

/** Entries kept per log; the oldest go first. */
export const DEBUG_LOG_LIMIT = 100_000;

export class DebugRecorder {
  /** @param {number} [limit] entries kept per log */
  constructor(limit = DEBUG_LOG_LIMIT) {
    this.limit = limit;
    /** @type {Record<string, unknown[]>} */
    this.logs = {};
    /** How many entries each log dropped to stay within the limit. */
    this.dropped = {};
  }

  /**
   * Appends `entry` to the log `name`.
   * @param {string} name
   * @param {unknown} entry
   */
  record(name, entry) {
    const log = (this.logs[name] ??= []);
    log.push(entry);
    if (log.length > this.limit) {
      log.shift();
      this.dropped[name] = (this.dropped[name] ?? 0) + 1;
    }
  }

  /**
   * A copy of one log (structured-cloneable, so a test driver can read it out of the page).
   * @param {string} name
   */
  read(name) {
    return [...(this.logs[name] ?? [])];
  }
}
