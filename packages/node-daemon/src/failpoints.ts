/**
 * Named points where a test can make the daemon die as `kill -9` would, to prove what a crash
 * there leaves behind (a move's states, e2e/src/move-crash.test.ts), or cut a stream as a
 * dropped connection would (`cutOnce`). Off unless the daemon was
 * started with `OCS_FAILPOINTS` naming the point (comma-separated); only whoever starts the
 * daemon (root) sets its environment. The pattern is FreeBSD's fail points and TiKV's fail-rs:
 * the point is in the code path itself, so the crash happens exactly between the two steps it
 * names, not at a moment a test guesses from outside.
 */
const armed = new Set(
  (process.env.OCS_FAILPOINTS ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean),
);

/** Every point a test may name, each between two steps of a move. */
export const FAILPOINTS = [
  /** Source: the running space locked for the move; `moving` not yet written. */
  'move.locked',
  /** Source: `moving` written, nothing sent. */
  'move.moving',
  /** Source: the move stopped before its commit, `locked` again; the target not yet told. */
  'move.aborted',
  /** Source: the target holds it prepared; `committing` not yet written. */
  'move.sent',
  /** Source: `committing` written; the commit not yet asked. */
  'move.committing',
  /** Source: the target answered the commit; nothing here torn down. */
  'move.committed',
  /** Source: torn down; the tombstone not yet written. */
  'move.torn-down',
  /** Target: the import opened, nothing received. */
  'import.opened',
  /** Target: the archive arriving (its second chunk in hand, the first written). */
  'import.receiving',
  /** Target: the whole image written and checked; `prepared` not yet written. */
  'import.checked',
  /** Target: `prepared` written; the source not yet answered. */
  'import.prepared',
  /** Target: the commit written; the source not yet answered. */
  'import.committed',
  /** Source of a drain's export: `moving` written, the archive file not yet written. */
  'export.moving',
  /** Source of a drain's export: the archive file whole; the space not yet torn down. */
  'export.written',
  /**
   * Source (not a crash: a cut): the first stream of a move's seed that is more than one chunk
   * breaks off before its second, once per process, as a dropped connection would.
   */
  'move.seed-cut',
  /** Source (a cut): the first increment after a seed breaks off before its first chunk, once per process. */
  'move.increment-cut',
] as const;
export type Failpoint = (typeof FAILPOINTS)[number];

/** Dies here, at once and without cleaning up, if the daemon was started with this point armed. */
export function failpoint(name: Failpoint): void {
  if (armed.has(name)) process.kill(process.pid, 'SIGKILL');
}

const cut = new Set<Failpoint>();

/** Whether the daemon was started with this point armed. */
export function isArmed(name: Failpoint): boolean {
  return armed.has(name);
}

/** True once, the first time it is asked, if the daemon was started with this point armed. */
export function cutOnce(name: Failpoint): boolean {
  if (!armed.has(name) || cut.has(name)) return false;
  cut.add(name);
  return true;
}
