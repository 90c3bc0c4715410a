/**
 * The uids and gids a node hands its spaces must be nobody else's. Space processes run as
 * `uidBase + slot`, QEMU as `uidBase + uidCount + slot`, containers as subordinate ids from
 * `subidBase`. A local account whose uid, gid or delegation (/etc/subuid, /etc/subgid, which
 * `newuidmap` honours) lies in one of those ranges becomes a space: its broker socket, its
 * files, its VM disks. shadow's `useradd` hands out delegations from 100000 in steps of 65536,
 * so accounts two to four of a stock Debian land on the default space uids.
 *
 * So the daemon refuses to start while any range it uses overlaps an account or a delegation
 * (naming the entry), and records its own ranges as root's delegations, which `useradd` then
 * never hands out again (podman and Incus do the same for root). Root's own entries are not a
 * risk: root needs no delegation to become any uid.
 */
import { readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';

export interface IdRange {
  /** What the daemon uses the range for, as an operator would read it. */
  what: string;
  first: number;
  count: number;
  /** Which kind of id: both for the daemon's ranges (a space's uid is also its gid). */
  kinds: readonly ('uid' | 'gid')[];
}

export interface IdFiles {
  passwd: string;
  group: string;
  subuid: string;
  subgid: string;
}

export const HOST_ID_FILES: IdFiles = {
  passwd: '/etc/passwd',
  group: '/etc/group',
  subuid: '/etc/subuid',
  subgid: '/etc/subgid',
};

/** The ranges a node with these settings uses (config.ts checks they do not overlap each other). */
export function daemonIdRanges(o: { uidBase: number; uidCount: number; subidBase: number }): IdRange[] {
  const both = ['uid', 'gid'] as const;
  return [
    { what: 'space uids (spaces.uidBase, uidCount)', first: o.uidBase, count: o.uidCount, kinds: both },
    { what: 'QEMU uids (spaces.uidBase + uidCount)', first: o.uidBase + o.uidCount, count: o.uidCount, kinds: both },
    {
      what: "containers' subordinate ids (workloads.containers.subidBase)",
      first: o.subidBase,
      count: o.uidCount * 65_536,
      kinds: both,
    },
  ];
}

/** One id or range another party holds, with where it was read. */
interface Holder {
  kind: 'uid' | 'gid';
  first: number;
  count: number;
  where: string;
}

function lines(path: string): [number, string][] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    // No /etc/subuid on a machine without shadow's tools: no delegations to collide with.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  return text
    .split('\n')
    .map((l, i): [number, string] => [i + 1, l.trim()])
    .filter(([, l]) => l !== '' && !l.startsWith('#'));
}

/** Accounts (name:x:ID:...) and delegations (owner:first:count) of the host, root's left out. */
function holders(files: IdFiles): Holder[] {
  const out: Holder[] = [];
  for (const [kind, path] of [
    ['uid', files.passwd],
    ['gid', files.group],
  ] as const) {
    for (const [n, l] of lines(path)) {
      const f = l.split(':');
      const id = Number(f[2]);
      if (f.length >= 3 && Number.isInteger(id) && id !== 0)
        out.push({ kind, first: id, count: 1, where: `${path} line ${n} (${f[0]}, ${kind} ${id})` });
    }
  }
  for (const [kind, path] of [
    ['uid', files.subuid],
    ['gid', files.subgid],
  ] as const) {
    for (const [n, l] of lines(path)) {
      const [owner, first, count] = l.split(':');
      if (owner === 'root' || owner === '0') continue;
      const f = Number(first);
      const c = Number(count);
      if (!Number.isInteger(f) || !Number.isInteger(c) || c <= 0) continue;
      out.push({ kind, first: f, count: c, where: `${path} line ${n} (${owner}:${f}:${c})` });
    }
  }
  return out;
}

/** Every overlap of the daemon's ranges with the host's accounts and delegations, as sentences. */
export function idOverlaps(ranges: readonly IdRange[], files: IdFiles): string[] {
  const found: string[] = [];
  const all = holders(files);
  for (const r of ranges) {
    for (const h of all) {
      if (!r.kinds.includes(h.kind)) continue;
      if (h.first < r.first + r.count && r.first < h.first + h.count)
        found.push(`${h.where} overlaps the ${r.what} ${r.first}-${r.first + r.count - 1}`);
    }
  }
  return found;
}

/** Throws naming every overlapping entry; the daemon does not start. */
export function checkIdRanges(ranges: readonly IdRange[], files: IdFiles): void {
  const found = idOverlaps(ranges, files);
  if (found.length > 0)
    throw new Error(
      `ids the node hands its spaces belong to others, who could become a space's uid: ${found.join('; ')}. ` +
        'Move the node (spaces.uidBase, workloads.containers.subidBase) or the accounts and delegations',
    );
}

/**
 * The same check while the daemon runs: an account or delegation added later (a `useradd` on a
 * node whose ranges were recorded is skipped, but an edit by hand is not). `check` reads the
 * files again and says whether the overlaps changed since the last call; `current` is what it
 * found last (the daemon's log and the `ocs_id_overlaps` gauge show it).
 */
export class IdRangeWatch {
  current: string[] = [];

  constructor(
    private readonly ranges: readonly IdRange[],
    private readonly files: IdFiles,
  ) {}

  check(): { overlaps: string[]; changed: boolean } {
    const overlaps = idOverlaps(this.ranges, this.files);
    const changed = overlaps.join('\n') !== this.current.join('\n');
    this.current = overlaps;
    return { overlaps, changed };
  }
}

/**
 * Records each range as root's delegation in /etc/subuid and /etc/subgid where it is not yet,
 * so `useradd` never hands it to an account. Written whole to a new file and renamed into place,
 * with the file's mode; returns the lines added.
 */
export function reserveIdRanges(ranges: readonly IdRange[], files: IdFiles): string[] {
  const added: string[] = [];
  for (const path of [files.subuid, files.subgid]) {
    let text = '';
    let mode = 0o644;
    try {
      text = readFileSync(path, 'utf8');
      mode = statSync(path).mode & 0o777;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const have = new Set(text.split('\n').map((l) => l.trim()));
    const missing = ranges.map((r) => `root:${r.first}:${r.count}`).filter((l) => !have.has(l));
    if (missing.length === 0) continue;
    const next = `${text}${text === '' || text.endsWith('\n') ? '' : '\n'}${missing.join('\n')}\n`;
    writeFileSync(`${path}.ocs-new`, next, { mode });
    renameSync(`${path}.ocs-new`, path);
    added.push(...missing.map((l) => `${path}: ${l}`));
  }
  return added;
}
