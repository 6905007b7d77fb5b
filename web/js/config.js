// Where the page's three endpoints are, from the page's own address plus query parameters:
//   ?bridge=ws://host:3000/   the Redis WebSocket bridge
//   ?topics=ws://host:8080/ws the topic server's WebSocket endpoint; several, comma-separated,
//                             for the nodes of one deployment (the next when one goes away)
//   ?feeder=http://host:3100  the data-feeder control API
//   ?topic=redis/views/usd    the topic selector the topic-server client subscribes to (default:
//                             the demo's view topic carrying just the USD rate)
//   ?debug=1                  expose what the page received as window.dashboardDebug (tests)

/** The topic the topic-server client subscribes to unless ?topic= says otherwise. */
export const DEFAULT_TOPIC = 'redis/views/usd';

/** Ports the tiers listen on by default (the topic server also serves this page). */
export const DEFAULT_PORTS = Object.freeze({ bridge: 3000, feeder: 3100, topics: 8080 });

/**
 * Accepts `text` as a URL with one of the given schemes.
 * @param {string} text
 * @param {string[]} schemes e.g. ['ws:', 'wss:']
 * @returns {string | null} the normalised URL, or null
 */
function urlWithScheme(text, schemes) {
  try {
    const url = new URL(text);
    return schemes.includes(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

/**
 * The dashboard's configuration.
 *
 * @param {{protocol: string, hostname: string, host: string, search: string}} location the
 *   page's location (window.location in the browser)
 * @returns {{bridgeUrl: string, topicsUrl: string, topicsUrls: string[], feederUrl: string,
 *   topic: string, debug: boolean, warnings: string[]}} warnings name each parameter that was
 *   ignored and why; `topicsUrls` lists every topic server (`topicsUrl` joins them for display)
 */
export function resolveConfig(location) {
  // A page opened from disk has no host; assume the services run locally on their defaults.
  const hostname = location.hostname || 'localhost';
  const host = location.host || `localhost:${DEFAULT_PORTS.topics}`;
  const secure = location.protocol === 'https:';
  const defaults = {
    bridgeUrl: `ws://${hostname}:${DEFAULT_PORTS.bridge}/`,
    topicsUrl: `${secure ? 'wss' : 'ws'}://${host}/ws`,
    feederUrl: `http://${hostname}:${DEFAULT_PORTS.feeder}`,
    topic: DEFAULT_TOPIC,
    debug: false,
  };
  const params = new URLSearchParams(location.search);
  const config = { ...defaults, warnings: [] };

  const urlParams = [
    ['bridge', 'bridgeUrl', ['ws:', 'wss:']],
    ['topics', 'topicsUrl', ['ws:', 'wss:']],
    ['feeder', 'feederUrl', ['http:', 'https:']],
  ];
  for (const [param, key, schemes] of urlParams) {
    const given = params.get(param);
    if (given === null || given.trim() === '') continue;
    if (key === 'topicsUrl' && given.includes(',')) {
      const urls = given.split(',').map((u) => u.trim()).filter((u) => u !== '');
      const parsed = urls.map((u) => urlWithScheme(u, schemes));
      if (parsed.length > 0 && parsed.every((u) => u !== null)) {
        config.topicsUrl = parsed.join(',');
      } else {
        config.warnings.push(
          `?${param}=${given} ignored: expected ${schemes.join(' or ')}// URLs; using ${defaults[key]}`,
        );
      }
      continue;
    }
    const url = urlWithScheme(given.trim(), schemes);
    if (url === null) {
      config.warnings.push(
        `?${param}=${given} ignored: expected a ${schemes.join(' or ')}// URL; using ${defaults[key]}`,
      );
    } else {
      config[key] = key === 'feederUrl' ? url.replace(/\/+$/, '') : url;
    }
  }

  config.topicsUrls = config.topicsUrl.split(',');
  config.debug = params.get('debug') === '1';

  const topic = params.get('topic');
  if (topic !== null) {
    if (topic.trim() === '') {
      config.warnings.push(`?topic= is empty; using ${DEFAULT_TOPIC}`);
    } else {
      config.topic = topic.trim();
    }
  }
  return config;
}
