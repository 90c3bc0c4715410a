/**
 * A small tar reader and writer: enough to check a `docker save` archive before the engine sees it,
 * and to write a tiny rootfs for the test image. No dependency: the archive's structure is a
 * security boundary here, so the parser is short enough to read in one sitting.
 *
 * The reader deliberately reads the way Go's archive/tar (podman's reader, as dockerd's) does, and
 * refuses whatever could make the two disagree about an entry's name or where the next header starts:
 * V7 and STAR headers, global PAX headers, GNU sparse files, data on header-only entries
 * (directories, links, devices), bad checksums, archives without an end marker.
 */
import { posix } from 'node:path';

export const BLOCK = 512;

export class TarFormatError extends Error {
  constructor(message: string) {
    super(`malformed tar archive: ${message}`);
    this.name = 'TarFormatError';
  }
}

/** One logical entry: its extension headers (PAX `x`, GNU `L`/`K`), its header and its data. */
export interface TarEntry {
  /** Name as the engine will see it: PAX `path` / GNU long name applied, then cleaned (no `./`, no leading `/`). */
  name: string;
  /** Type flag as a character: `0` regular, `1` hard link, `2` symlink, `5` directory. */
  type: string;
  linkname: string;
  size: number;
  /** Offset of the entry's first header block (its extension headers included). */
  start: number;
  /** Offset just after its padded data. */
  end: number;
}

const ZERO_BLOCK = Buffer.alloc(BLOCK);
/** Types Go treats as header-only: their size field is ignored, so a nonzero size would desynchronize the two readers. */
const HEADER_ONLY = new Set(['1', '2', '3', '4', '5', '6']);
const ACCEPTED = new Set(['0', '\0', '7', '1', '2', '5']);
const MAX_META = 64 * 1024;

function cString(buf: Buffer, off: number, len: number): string {
  const slice = buf.subarray(off, off + len);
  const nul = slice.indexOf(0);
  return slice.subarray(0, nul === -1 ? len : nul).toString('utf8');
}

/** Go's parseNumeric: base-256 when the high bit is set, else octal with spaces and NULs trimmed. */
function parseNumeric(buf: Buffer, off: number, len: number, what: string): number {
  const field = buf.subarray(off, off + len);
  if ((field[0] ?? 0) & 0x80) {
    if (field[0] === 0xff) throw new TarFormatError(`negative ${what}`);
    let n = (field[0] ?? 0) & 0x7f;
    for (let i = 1; i < len; i++) {
      n = n * 256 + (field[i] ?? 0);
      if (n > Number.MAX_SAFE_INTEGER) throw new TarFormatError(`${what} too large`);
    }
    return n;
  }
  const text = field.toString('latin1').replace(/^[ \0]+|[ \0]+$/g, '');
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw new TarFormatError(`bad ${what} field`);
  const n = parseInt(text, 8);
  if (!Number.isSafeInteger(n)) throw new TarFormatError(`${what} too large`);
  return n;
}

function checksumOk(h: Buffer): boolean {
  const want = parseNumeric(h, 148, 8, 'checksum');
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : (h[i] ?? 0);
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  return want === unsigned || want === signed;
}

/** PAX records `"<len> <key>=<value>\n"`; refuses what Go would interpret beyond path/linkpath/size. */
function parsePax(data: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  let off = 0;
  while (off < data.length) {
    const sp = data.indexOf(0x20, off);
    if (sp === -1) throw new TarFormatError('bad PAX record');
    const len = Number(data.subarray(off, sp).toString('latin1'));
    if (!Number.isSafeInteger(len) || len <= sp - off || off + len > data.length || data[off + len - 1] !== 0x0a) {
      throw new TarFormatError('bad PAX record length');
    }
    const rec = data.subarray(sp + 1, off + len - 1).toString('utf8');
    const eq = rec.indexOf('=');
    if (eq <= 0) throw new TarFormatError('bad PAX record');
    const key = rec.slice(0, eq);
    if (key.startsWith('GNU.sparse')) throw new TarFormatError('sparse files are not supported');
    out.set(key, rec.slice(eq + 1));
    off += len;
  }
  return out;
}

/** Cleans a name the way the engine's untar does (`filepath.Clean`, joined under the target); refuses escapes. */
export function cleanName(raw: string): string {
  if (raw === '' || raw.includes('\0')) throw new TarFormatError('empty name');
  // Like filepath.Clean: a relative name keeps a leading `..` (the engine then refuses it as a
  // breakout); an absolute one cannot climb above `/` and lands inside the target.
  const cleaned = posix.normalize(raw);
  if (cleaned === '..' || cleaned.startsWith('../')) throw new TarFormatError('name escapes the archive');
  const n = cleaned.replace(/^\/+/, '').replace(/\/+$/, '');
  return n === '' ? '.' : n;
}

type State =
  | { kind: 'header' }
  | { kind: 'data'; left: number; pad: number; capture?: Buffer[]; meta?: 'x' | 'L' | 'K'; entry?: TarEntry }
  | { kind: 'end' };

/**
 * Push parser. Feed it chunks with {@link write}, then call {@link finish}. `wantData(entry)`
 * decides whether an entry's data is kept in memory (up to `maxCapture` bytes) and handed to
 * `onEntry`; everything else is only counted.
 */
export class TarScanner {
  readonly entries: TarEntry[] = [];
  /** Offset of the end-of-archive marker (the first zero block), once seen. */
  endOffset: number | undefined;
  private offset = 0;
  private pending: Buffer[] = [];
  private pendingLen = 0;
  private state: State = { kind: 'header' };
  private zeroBlocks = 0;
  private ext: { start: number; pax?: Map<string, string>; longName?: string; longLink?: string } | undefined;

  constructor(
    private readonly hooks: {
      wantData?: (entry: TarEntry) => boolean;
      onEntry?: (entry: TarEntry, data: Buffer | undefined) => void;
      maxCapture?: number;
    } = {},
  ) {}

  write(chunk: Buffer): void {
    let buf = chunk;
    while (buf.length > 0) {
      const st = this.state;
      if (st.kind === 'end') {
        this.offset += buf.length; // trailing padding or garbage: ignored, as Go's reader does
        return;
      }
      if (st.kind === 'data') {
        const take = Math.min(buf.length, st.left + st.pad);
        const dataPart = Math.min(take, st.left);
        if (st.capture && dataPart > 0) st.capture.push(Buffer.from(buf.subarray(0, dataPart)));
        st.left -= dataPart;
        st.pad -= take - dataPart;
        this.offset += take;
        buf = buf.subarray(take);
        if (st.left === 0 && st.pad === 0) this.finishData(st);
        continue;
      }
      // Header: gather one whole block.
      const need = BLOCK - this.pendingLen;
      const part = buf.subarray(0, need);
      this.pending.push(part);
      this.pendingLen += part.length;
      buf = buf.subarray(part.length);
      if (this.pendingLen < BLOCK) return;
      const block = Buffer.concat(this.pending, BLOCK);
      this.pending = [];
      this.pendingLen = 0;
      this.header(block);
    }
  }

  /** Call at end of input; throws if the archive stopped before its end marker. */
  finish(): void {
    if (this.state.kind !== 'end') throw new TarFormatError('truncated (no end-of-archive marker)');
  }

  private header(block: Buffer): void {
    const at = this.offset;
    this.offset += BLOCK;
    if (block.equals(ZERO_BLOCK)) {
      if (this.ext) throw new TarFormatError('extension header without an entry');
      if (this.zeroBlocks === 0) this.endOffset = at;
      this.zeroBlocks++;
      if (this.zeroBlocks === 2) this.state = { kind: 'end' };
      return;
    }
    if (this.zeroBlocks > 0) throw new TarFormatError('data after a zero block');
    if (!checksumOk(block)) throw new TarFormatError(`bad header checksum at offset ${at}`);
    const magic = block.subarray(257, 265).toString('latin1');
    const star = block.subarray(508, 512).toString('latin1') === 'tar\0';
    let prefix = '';
    if (magic === 'ustar\x0000' && !star) prefix = cString(block, 345, 155);
    else if (magic !== 'ustar  \0') throw new TarFormatError('only USTAR, PAX and GNU headers are accepted');

    let type = String.fromCharCode(block[156] ?? 0);
    let size = parseNumeric(block, 124, 12, 'size');
    const ext = this.ext ?? { start: at };

    if (type === 'x' || type === 'L' || type === 'K') {
      if (size > MAX_META) throw new TarFormatError('extension header too large');
      this.ext = ext;
      this.state = { kind: 'data', left: size, pad: padOf(size), capture: [], meta: type };
      if (size === 0) this.finishData(this.state);
      return;
    }
    if (type === 'g') throw new TarFormatError('global PAX headers are not accepted');
    if (!ACCEPTED.has(type)) throw new TarFormatError(`entry type ${JSON.stringify(type)} is not accepted`);

    const name0 = cString(block, 0, 100);
    let name = ext.longName ?? ext.pax?.get('path') ?? (prefix ? `${prefix}/${name0}` : name0);
    let linkname = ext.longLink ?? ext.pax?.get('linkpath') ?? cString(block, 157, 100);
    const paxSize = ext.pax?.get('size');
    if (paxSize !== undefined) {
      if (!/^[0-9]{1,16}$/.test(paxSize)) throw new TarFormatError('bad PAX size');
      size = Number(paxSize);
    }
    if (type === '\0') type = name.endsWith('/') ? '5' : '0'; // Go: legacy archives mark directories by a trailing slash
    if (HEADER_ONLY.has(type) && size !== 0) throw new TarFormatError('a link or directory entry carries data');
    name = cleanName(name);
    if (type === '1' || type === '2') {
      if (linkname === '') throw new TarFormatError('link without a target');
    } else linkname = '';
    this.ext = undefined;

    const entry: TarEntry = { name, type, linkname, size, start: ext.start, end: this.offset + size + padOf(size) };
    const capture = this.hooks.wantData?.(entry) === true;
    if (capture && size > (this.hooks.maxCapture ?? MAX_META)) throw new TarFormatError(`${name} is too large`);
    this.state = { kind: 'data', left: size, pad: padOf(size), entry, ...(capture ? { capture: [] } : {}) };
    if (size === 0) this.finishData(this.state);
  }

  private finishData(st: Extract<State, { kind: 'data' }>): void {
    this.state = { kind: 'header' };
    const data = st.capture ? Buffer.concat(st.capture) : undefined;
    if (st.meta && data) {
      const ext = this.ext ?? { start: this.offset };
      // Like Go, a later extension header of the same kind replaces an earlier one.
      if (st.meta === 'x') ext.pax = parsePax(data);
      else if (st.meta === 'L') ext.longName = cString(data, 0, data.length);
      else ext.longLink = cString(data, 0, data.length);
      this.ext = ext;
      return;
    }
    if (st.entry) {
      this.entries.push(st.entry);
      this.hooks.onEntry?.(st.entry, data);
    }
  }
}

function padOf(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

function octal(value: number, width: number): string {
  return value.toString(8).padStart(width - 1, '0') + '\0';
}

/** One USTAR header block. Names up to 255 bytes (split into prefix and name at a `/`). */
export function ustarHeader(h: {
  name: string;
  type: '0' | '2' | '5';
  size?: number;
  mode?: number;
  linkname?: string;
  mtime?: number;
}): Buffer {
  const block = Buffer.alloc(BLOCK);
  let name = h.name;
  let prefix = '';
  if (Buffer.byteLength(name) > 100) {
    const cut = name.lastIndexOf('/', 155);
    if (cut <= 0 || Buffer.byteLength(name.slice(cut + 1)) > 100) throw new Error(`tar name too long: ${name}`);
    prefix = name.slice(0, cut);
    name = name.slice(cut + 1);
  }
  block.write(name, 0, 100, 'utf8');
  block.write(octal(h.mode ?? (h.type === '5' ? 0o755 : 0o644), 8), 100, 8, 'latin1');
  block.write(octal(0, 8), 108, 8, 'latin1'); // uid root
  block.write(octal(0, 8), 116, 8, 'latin1'); // gid root
  block.write(octal(h.size ?? 0, 12), 124, 12, 'latin1');
  block.write(octal(h.mtime ?? 0, 12), 136, 12, 'latin1');
  block.write('        ', 148, 8, 'latin1');
  block.write(h.type, 156, 1, 'latin1');
  block.write(h.linkname ?? '', 157, 100, 'utf8');
  block.write('ustar\x0000', 257, 8, 'latin1');
  block.write(prefix, 345, 155, 'utf8');
  let sum = 0;
  for (const b of block) sum += b;
  block.write(octal(sum, 7) + ' ', 148, 8, 'latin1');
  return block;
}

/** A regular file entry: header, data, padding. */
export function ustarFile(name: string, data: Buffer, mode = 0o644, mtime = 0): Buffer {
  return Buffer.concat([
    ustarHeader({ name, type: '0', size: data.length, mode, mtime }),
    data,
    Buffer.alloc(padOf(data.length)),
  ]);
}

/** The end-of-archive marker: two zero blocks. */
export function tarEnd(): Buffer {
  return Buffer.alloc(2 * BLOCK);
}
