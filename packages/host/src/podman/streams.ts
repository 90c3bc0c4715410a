/**
 * Pure helpers for what the engine (Docker API) sends back: multiplexed log frames and JSON progress streams.
 */

/** Bytes of log text returned at most; older text is cut (on a line boundary) and `truncated` set. */
export const MAX_LOG_BYTES = 1024 * 1024;

/**
 * Joins the payloads of Docker's multiplexed stream (8-byte header: stream 0/1/2, 3 zero bytes,
 * big-endian length). Frames stay in the order the engine wrote them, so stdout and stderr come out
 * interleaved as the container wrote them. Input that does not start with a frame header
 * (a TTY container's raw stream) is returned as it is.
 */
export function demuxLogs(buf: Buffer): Buffer {
  const parts: Buffer[] = [];
  let off = 0;
  while (off + 8 <= buf.length) {
    const kind = buf[off];
    if ((kind !== 0 && kind !== 1 && kind !== 2) || buf[off + 1] !== 0 || buf[off + 2] !== 0 || buf[off + 3] !== 0) {
      return off === 0 ? buf : Buffer.concat([...parts, buf.subarray(off)]);
    }
    const size = buf.readUInt32BE(off + 4);
    parts.push(buf.subarray(off + 8, Math.min(buf.length, off + 8 + size)));
    off += 8 + size;
  }
  return Buffer.concat(parts);
}

/**
 * The last `tailLines` lines of `text`, and whether anything older was cut. The caller asks
 * the engine for one line more than `tailLines`, so more lines than asked for means older lines
 * exist. The result is also capped at {@link MAX_LOG_BYTES}, cut at a line boundary.
 */
export function tailText(text: string, tailLines: number): { text: string; truncated: boolean } {
  const lines = text.split('\n');
  const endsWithNewline = lines.length > 0 && lines[lines.length - 1] === '';
  if (endsWithNewline) lines.pop();
  let truncated = false;
  if (lines.length > tailLines) {
    lines.splice(0, lines.length - tailLines);
    truncated = true;
  }
  let out = lines.join('\n') + (endsWithNewline && lines.length > 0 ? '\n' : '');
  if (Buffer.byteLength(out) > MAX_LOG_BYTES) {
    const buf = Buffer.from(out);
    let cut = buf.subarray(buf.length - MAX_LOG_BYTES).toString('utf8');
    const nl = cut.indexOf('\n');
    if (nl !== -1 && nl < cut.length - 1) cut = cut.slice(nl + 1);
    out = cut.replace(/^\uFFFD+/, '');
    truncated = true;
  }
  return { text: out, truncated };
}

/** Progress messages of a streamed Docker response (`docker load`, `docker import`), one JSON object a line. */
export interface ProgressMessage {
  stream?: string;
  status?: string;
  error?: string;
  errorDetail?: { message?: string };
}

/**
 * Reads a JSON-lines progress stream to its end. The Docker API (podman's as dockerd's) reports
 * failures of these calls inside the body of a 200 response, so the messages must be read for
 * `error`.
 */
export async function readProgress(stream: NodeJS.ReadableStream): Promise<ProgressMessage[]> {
  const messages: ProgressMessage[] = [];
  let rest = '';
  const take = (line: string) => {
    const t = line.trim();
    if (t === '') return;
    try {
      messages.push(JSON.parse(t) as ProgressMessage);
    } catch {
      messages.push({ stream: t });
    }
  };
  for await (const chunk of stream as AsyncIterable<Buffer | string>) {
    rest += typeof chunk === 'string' ? chunk : chunk.toString('utf8');
    const lines = rest.split('\n');
    rest = lines.pop() ?? '';
    lines.forEach(take);
  }
  take(rest);
  return messages;
}

/** The first error message in a progress stream, if any. */
export function progressError(messages: ProgressMessage[]): string | undefined {
  for (const m of messages) {
    if (m.error !== undefined || m.errorDetail !== undefined) return m.error ?? m.errorDetail?.message ?? 'error';
  }
  return undefined;
}
