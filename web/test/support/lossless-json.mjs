// JSON without losing digits, for tests that compare values holding numbers past 2^53 (or with
// more decimals than a double keeps): numbers stay as their source text, and two numbers are
// equal when they are the same decimal, whatever their formatting (1.50 = 1.5 = 15e-1).

/** A JSON number kept as its text. */
export class LosslessNumber {
  /** @param {string} text */
  constructor(text) {
    this.text = text;
  }
}

/**
 * Parses JSON text, keeping every number as a LosslessNumber. Strings go through JSON.parse, so
 * escapes mean what they mean there.
 * @param {string} text
 */
export function parseLossless(text) {
  let at = 0;
  const fail = (what) => {
    throw new SyntaxError(`${what} at offset ${at} of ${text.slice(0, 80)}`);
  };
  const space = () => {
    while (at < text.length && ' \t\n\r'.includes(text[at])) at += 1;
  };
  const value = () => {
    space();
    const c = text[at];
    if (c === '{') {
      at += 1;
      const out = {};
      space();
      if (text[at] === '}') {
        at += 1;
        return out;
      }
      for (;;) {
        space();
        if (text[at] !== '"') fail('expected a key');
        const key = string();
        space();
        if (text[at] !== ':') fail('expected :');
        at += 1;
        out[key] = value();
        space();
        if (text[at] === ',') at += 1;
        else if (text[at] === '}') {
          at += 1;
          return out;
        } else fail('expected , or }');
      }
    }
    if (c === '[') {
      at += 1;
      const out = [];
      space();
      if (text[at] === ']') {
        at += 1;
        return out;
      }
      for (;;) {
        out.push(value());
        space();
        if (text[at] === ',') at += 1;
        else if (text[at] === ']') {
          at += 1;
          return out;
        } else fail('expected , or ]');
      }
    }
    if (c === '"') return string();
    for (const [word, v] of [['true', true], ['false', false], ['null', null]]) {
      if (text.startsWith(word, at)) {
        at += word.length;
        return v;
      }
    }
    const m = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/.exec(text.slice(at, at + 4096));
    if (!m) fail('expected a value');
    at += m[0].length;
    return new LosslessNumber(m[0]);
  };
  const string = () => {
    const start = at;
    at += 1;
    while (at < text.length && text[at] !== '"') at += text[at] === '\\' ? 2 : 1;
    if (at >= text.length) fail('unterminated string');
    at += 1;
    return JSON.parse(text.slice(start, at));
  };
  const out = value();
  space();
  if (at !== text.length) fail('trailing text');
  return out;
}

/** The exact decimal a number's text stands for, as `sign digits e exponent` with no padding. */
function decimalKey(text) {
  const m = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(text);
  if (!m) throw new SyntaxError(`not a JSON number: ${text}`);
  const [, sign, int, frac = '', exp = '0'] = m;
  let digits = (int + frac).replace(/^0+/, '');
  let exponent = BigInt(exp) - BigInt(frac.length);
  if (digits === '') return '0';
  const trailing = digits.length - digits.replace(/0+$/, '').length;
  digits = digits.slice(0, digits.length - trailing);
  exponent += BigInt(trailing);
  return `${sign}${digits}e${exponent}`;
}

/**
 * Whether two JSON trees hold the same JSON, objects regardless of key order. A number kept as
 * text on both sides must be the same exact decimal (1.50 = 1.5, but 2^53 + 1 is not 2^53); a
 * number that one side holds as a double is compared as a double, the other side parsed the
 * same way: as exact as that side can be, and no more. Returns null when equal, else the path
 * of the first difference.
 * @returns {string | null}
 */
export function jsonDifference(a, b, path = '$') {
  if (a instanceof LosslessNumber || b instanceof LosslessNumber) {
    if (a instanceof LosslessNumber && b instanceof LosslessNumber) {
      return decimalKey(a.text) === decimalKey(b.text) ? null : `${path} (${a.text} vs ${b.text})`;
    }
    const [kept, double] = a instanceof LosslessNumber ? [a, b] : [b, a];
    if (typeof double !== 'number') return `${path} (${kept.text} vs ${JSON.stringify(double)})`;
    return Number(kept.text) === double ? null : `${path} (${kept.text} vs ${double})`;
  }
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return `${path} (array)`;
    for (let i = 0; i < a.length; i += 1) {
      const d = jsonDifference(a[i], b[i], `${path}[${i}]`);
      if (d) return d;
    }
    return null;
  }
  if (a !== null && b !== null && typeof a === 'object' && typeof b === 'object') {
    const keys = Object.keys(a).sort();
    if (keys.join('\0') !== Object.keys(b).sort().join('\0')) {
      return `${path} (keys ${keys.join(',')} vs ${Object.keys(b).sort().join(',')})`;
    }
    for (const k of keys) {
      const d = jsonDifference(a[k], b[k], `${path}.${k}`);
      if (d) return d;
    }
    return null;
  }
  return Object.is(a, b) ? null : `${path} (${JSON.stringify(a)} vs ${JSON.stringify(b)})`;
}

/** JSON text of a lossless tree, numbers written as they were read. */
export function stringifyLossless(v) {
  if (v instanceof LosslessNumber) return v.text;
  if (Array.isArray(v)) return `[${v.map(stringifyLossless).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    return `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}:${stringifyLossless(x)}`).join(',')}}`;
  }
  return JSON.stringify(v);
}
