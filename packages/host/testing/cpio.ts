/**
 * A minimal writer for the "newc" cpio format, which is what the Linux kernel unpacks as an
 * initramfs. Used only to build test guests, so no external `cpio` tool (and no download) is
 * needed. Format: a 110-byte ASCII header ("070701" + 13 eight-digit hex fields), the NUL-ended
 * name, padding to 4 bytes, the data, padding to 4 bytes; a "TRAILER!!!" entry ends the archive.
 */

/** One archive member. `mode` includes the file type bits (e.g. 0o100755 for a regular file). */
export interface CpioEntry {
  name: string;
  mode: number;
  data?: Uint8Array;
  /** For character/block device nodes. */
  rdev?: { major: number; minor: number };
}

/** File type bits, for building {@link CpioEntry.mode}. */
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;

const hex8 = (n: number): string => n.toString(16).padStart(8, '0');

function pad4(len: number): Buffer {
  return Buffer.alloc((4 - (len % 4)) % 4);
}

function header(ino: number, entry: CpioEntry, size: number, nameLen: number): string {
  const fields = [
    ino,
    entry.mode,
    0, // uid: root
    0, // gid: root
    (entry.mode & 0o170000) === S_IFDIR ? 2 : 1, // nlink
    0, // mtime: fixed, so archives are reproducible
    size,
    0, // devmajor
    0, // devminor
    entry.rdev?.major ?? 0,
    entry.rdev?.minor ?? 0,
    nameLen,
    0, // check (unused by newc)
  ];
  return '070701' + fields.map(hex8).join('');
}

/** Serialises `entries` (parents before children) into one newc archive. */
export function writeCpio(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let offset = 0;
  const push = (b: Buffer): void => {
    parts.push(b);
    offset += b.length;
  };
  const all: CpioEntry[] = [...entries, { name: 'TRAILER!!!', mode: 0 }];
  all.forEach((entry, i) => {
    const data = entry.data ? Buffer.from(entry.data) : Buffer.alloc(0);
    const name = Buffer.from(entry.name + '\0', 'utf8');
    push(Buffer.from(header(i + 1, entry, data.length, name.length), 'ascii'));
    push(name);
    push(pad4(offset));
    push(data);
    push(pad4(offset));
  });
  return Buffer.concat(parts);
}
