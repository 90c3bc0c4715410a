/**
 * Reading the tail of a VM's serial console log for its owner. The file lies in the space's
 * storage and the broker reads it as root, so it is opened with {@link openExactFile}: a log
 * swapped for a link to a host file is refused, not read out.
 */
import { OcsError } from '@ocs/protocol';
import { openExactFile } from './safe-open.js';
import type { ConsoleTail } from './types.js';

/** Largest tail one call returns. */
export const MAX_TAIL_BYTES = 1024 * 1024;

export function checkTailBytes(tailBytes: unknown): asserts tailBytes is number {
  if (
    typeof tailBytes !== 'number' ||
    !Number.isSafeInteger(tailBytes) ||
    tailBytes < 1 ||
    tailBytes > MAX_TAIL_BYTES
  ) {
    throw new OcsError('invalid_request', `tailBytes must be an integer from 1 to ${MAX_TAIL_BYTES}`, {
      field: 'tailBytes',
    });
  }
}

/** The last `tailBytes` bytes of `path` as UTF-8 (a character cut at the start becomes U+FFFD); empty when there is no log yet. */
export async function readTail(path: string, tailBytes: number): Promise<ConsoleTail> {
  checkTailBytes(tailBytes);
  const fh = await openExactFile('consoleLogPath', path);
  if (!fh) return { text: '', truncated: false };
  try {
    const size = (await fh.stat()).size;
    const start = Math.max(0, size - tailBytes);
    const buf = Buffer.alloc(size - start);
    let got = 0;
    while (got < buf.length) {
      const { bytesRead } = await fh.read(buf, got, buf.length - got, start + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return { text: buf.subarray(0, got).toString('utf8'), truncated: start > 0 };
  } finally {
    await fh.close();
  }
}
