/**
 * Log demultiplexing and tailing, without dockerd.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { MAX_LOG_BYTES, demuxLogs, progressError, readProgress, tailText } from './streams.js';

function frame(kind: 1 | 2, text: string): Buffer {
  const payload = Buffer.from(text);
  const h = Buffer.alloc(8);
  h[0] = kind;
  h.writeUInt32BE(payload.length, 4);
  return Buffer.concat([h, payload]);
}

test('frames of stdout and stderr are joined in order; raw (TTY) text passes through', () => {
  const buf = Buffer.concat([frame(1, 'out1\n'), frame(2, 'err1\n'), frame(1, 'out2\n')]);
  assert.equal(demuxLogs(buf).toString(), 'out1\nerr1\nout2\n');
  assert.equal(demuxLogs(Buffer.from('plain text\n')).toString(), 'plain text\n');
  assert.equal(demuxLogs(Buffer.alloc(0)).toString(), '');
  // A frame split across a multibyte character is decoded only after joining.
  const euro = Buffer.from('€\n');
  assert.equal(
    demuxLogs(
      Buffer.concat([
        frame(1, ''),
        Buffer.from([1, 0, 0, 0, 0, 0, 0, 1]),
        euro.subarray(0, 1),
        Buffer.from([1, 0, 0, 0, 0, 0, 0, 3]),
        euro.subarray(1),
      ]),
    ).toString(),
    '€\n',
  );
});

test('tailText keeps the last lines and says whether older ones exist', () => {
  assert.deepEqual(tailText('a\nb\nc\n', 2), { text: 'b\nc\n', truncated: true });
  assert.deepEqual(tailText('a\nb\n', 2), { text: 'a\nb\n', truncated: false });
  assert.deepEqual(tailText('a\nb', 5), { text: 'a\nb', truncated: false });
  assert.deepEqual(tailText('', 5), { text: '', truncated: false });
  const big = `${'x'.repeat(1000)}\n`.repeat(2000);
  const t = tailText(big, 100_000);
  assert.equal(t.truncated, true);
  assert.ok(Buffer.byteLength(t.text) <= MAX_LOG_BYTES);
  assert.ok(t.text.startsWith('x') && t.text.split('\n')[0]?.length === 1000, 'cut at a line boundary');
});

test('progress streams: errors inside a 200 body are found', async () => {
  const ok = await readProgress(Readable.from(['{"stream":"Loaded image: a:b\\n"}\r\n{"stat', 'us":"done"}\n']));
  assert.deepEqual(ok, [{ stream: 'Loaded image: a:b\n' }, { status: 'done' }]);
  assert.equal(progressError(ok), undefined);
  const bad = await readProgress(Readable.from(['{"errorDetail":{"message":"boom"},"error":"boom"}']));
  assert.equal(progressError(bad), 'boom');
});
