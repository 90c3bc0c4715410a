/**
 * A space's files are owned by the ids its node gave it: its own uid, QEMU's uid, its
 * containers' subordinate ids. A space restored on another node (or forked on the same one)
 * gets ids of its own there, so every owner in the restored tree is moved from the old range to
 * the same place in the new one. Ids outside the old ranges (root's, for the node's own
 * directories) stay as they are.
 */
import { chmod, lchown, lstat, opendir } from 'node:fs/promises';
import { join } from 'node:path';

/** Ids `from … from+count-1` become `to … to+count-1`. */
export interface IdShift {
  from: number;
  to: number;
  count: number;
}

/** What a walk did: entries looked at, and how many got a new owner. */
export interface RemapResult {
  seen: number;
  changed: number;
}

/** Where `id` goes: its place in a new range, or undefined to leave it. */
export function shiftedId(id: number, shifts: readonly IdShift[]): number | undefined {
  // An id already in a new range was moved by an earlier, interrupted walk (or never needed to
  // be): moving it again would move it twice.
  if (shifts.some((s) => id >= s.to && id < s.to + s.count)) return undefined;
  const s = shifts.find((x) => id >= x.from && id < x.from + x.count);
  return s === undefined ? undefined : s.to + (id - s.from);
}

/**
 * Two shifts (or one with itself) where an id one moves from is an id one moves to: the walk
 * cannot tell a file of the old range from one it already moved (it skips ids in a new range,
 * so that a walk run again after a crash moves nothing twice), and would leave it or move it
 * twice. Nodes whose ranges overlap that way must not exchange spaces. Undefined when none do.
 */
export function overlappingShifts(shifts: readonly IdShift[]): [IdShift, IdShift] | undefined {
  const moving = shifts.filter((s) => s.from !== s.to && s.count > 0);
  for (const a of moving) for (const b of moving) if (a.from < b.to + b.count && b.to < a.from + a.count) return [a, b];
  return undefined;
}

/**
 * Walks `root` depth first, never following a link and never leaving `root`'s filesystem (or
 * those of `mounts`), and gives each entry whose uid or gid lies in a shift's `from` range its
 * new id (lchown: a link's own owner, not its target's). Safe to run again after a crash halfway. Shifts of identical
 * ranges are no-ops and may be passed.
 */
export async function remapOwnership(
  root: string,
  shifts: readonly IdShift[],
  /** Filesystems mounted below `root` that are the space's too (ZFS: its data and volume datasets): walked as well. */
  o: { mounts?: readonly string[] } = {},
): Promise<RemapResult> {
  const moving = shifts.filter((s) => s.from !== s.to && s.count > 0);
  const result: RemapResult = { seen: 0, changed: 0 };
  if (moving.length === 0) return result;
  const top = await lstat(root);
  const devices = new Set([top.dev]);
  for (const m of o.mounts ?? []) devices.add((await lstat(m)).dev);
  const visit = async (path: string, st: Awaited<ReturnType<typeof lstat>>): Promise<void> => {
    result.seen++;
    const uid = shiftedId(Number(st.uid), moving);
    const gid = shiftedId(Number(st.gid), moving);
    if (uid !== undefined || gid !== undefined) {
      await lchown(path, uid ?? Number(st.uid), gid ?? Number(st.gid));
      // The kernel clears set-id bits when a file's owner changes; the file keeps them here (its
      // owner only moved to the same place in the new range, and the space's mounts are nosuid).
      if (!st.isSymbolicLink() && (Number(st.mode) & 0o6000) !== 0) await chmod(path, Number(st.mode) & 0o7777);
      result.changed++;
    }
    if (!st.isDirectory()) return;
    const dir = await opendir(path);
    for await (const e of dir) {
      const child = join(path, e.name);
      const cst = await lstat(child);
      if (!devices.has(cst.dev)) continue;
      await visit(child, cst);
    }
  };
  await visit(root, top);
  return result;
}
