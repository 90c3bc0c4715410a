/**
 * Text a caller chose (an id from a path, a token's subject), made fit for a log line: control
 * and line-breaking characters are escaped, so a value cannot forge lines in a text export,
 * and the length is bounded. Recording what a caller sent must never fail because of it.
 */

// C0, DEL, C1, and the Unicode line and paragraph separators.
// eslint-disable-next-line no-control-regex -- control characters are what is looked for
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
// Half a surrogate pair is no character: stored as UTF-8 it would come back as U+FFFD, and a
// hash over what was written would no longer match what is read.
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/** 1 to `max` printable UTF-16 units (an empty value becomes `(empty)`). */
export function printable(value: string, max = 256): string {
  let out = value
    .replace(LONE_SURROGATE, '\ufffd')
    .replace(UNPRINTABLE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  if (out.length === 0) return '(empty)';
  if (out.length > max) {
    out = out.slice(0, max - 1);
    // Never end on half a surrogate pair.
    if (/[\ud800-\udbff]$/.test(out)) out = out.slice(0, -1);
    out += '…';
  }
  return out;
}
