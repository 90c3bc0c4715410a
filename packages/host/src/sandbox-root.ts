/**
 * What a bubblewrap sandbox needs of the host's root to run the host's binaries: the top-level
 * library and binary directories as they are on the host. On a merged-/usr host (Debian 12)
 * they are links into /usr and stay links; elsewhere they are bound read-only. Read off the
 * host rather than written down, so a sandbox never names a link the host does not have.
 */
import { lstatSync, readlinkSync } from 'node:fs';

/** bwrap arguments that show /bin, /sbin and the /lib* directories as on the host. */
export function rootLinks(): string[] {
  const out: string[] = [];
  for (const d of ['/bin', '/sbin', '/lib', '/lib64', '/lib32', '/libx32']) {
    const st = lstatSync(d, { throwIfNoEntry: false });
    if (!st) continue;
    if (st.isSymbolicLink()) out.push('--symlink', readlinkSync(d), d);
    else out.push('--ro-bind', d, d);
  }
  return out;
}
