// Traffic accounting for the two clients, kept as plain immutable records so the numbers the
// page shows can be checked by tests without a browser.

/**
 * What one client has received since the counters were last reset.
 * @typedef {object} Tally
 * @property {number} frames   WebSocket frames received
 * @property {number} messages messages inside them (a topic-server frame may carry several)
 * @property {number} updates  messages that delivered a value for the chart (for the topic
 *   server: `value` messages plus deltas that applied)
 * @property {number} deltas   of those updates, how many arrived as deltas
 * @property {number} bytes    payload bytes of all frames (UTF-8 bytes for text frames)
 */

/** @returns {Tally} a tally with nothing counted */
export function emptyTally() {
  return { frames: 0, messages: 0, updates: 0, deltas: 0, bytes: 0 };
}

/**
 * Counts one received frame.
 *
 * @param {Tally} tally
 * @param {{bytes: number, messages?: number, updates?: number, deltas?: number}} frame
 * @returns {Tally} a new tally; the old one is unchanged
 */
export function addFrame(tally, { bytes, messages = 1, updates = 0, deltas = 0 }) {
  const counts = [['bytes', bytes], ['messages', messages], ['updates', updates], ['deltas', deltas]];
  for (const [name, n] of counts) {
    if (!Number.isInteger(n) || n < 0) throw new RangeError(`${name} must be a count, got ${n}`);
  }
  if (deltas > updates) throw new RangeError(`deltas (${deltas}) cannot exceed updates (${updates})`);
  return {
    frames: tally.frames + 1,
    messages: tally.messages + messages,
    updates: tally.updates + updates,
    deltas: tally.deltas + deltas,
    bytes: tally.bytes + bytes,
  };
}

/**
 * Average bytes received per value update: the whole cost of the connection (handshakes and
 * control messages included) divided by the updates it delivered.
 *
 * @param {Tally} tally
 * @returns {number | null} null before the first update
 */
export function bytesPerUpdate(tally) {
  return tally.updates > 0 ? tally.bytes / tally.updates : null;
}

/**
 * How much less the topic-server client received than the Redis client, in percent of the
 * Redis client's bytes: (redis - topic) / redis * 100. Negative when the topic client used
 * more.
 *
 * @param {number} redisBytes
 * @param {number} topicBytes
 * @returns {number | null} null while the Redis client has received nothing
 */
export function savingPercent(redisBytes, topicBytes) {
  if (!(redisBytes > 0)) return null;
  return ((redisBytes - topicBytes) / redisBytes) * 100;
}
