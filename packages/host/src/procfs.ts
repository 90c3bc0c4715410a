/**
 * `/proc` with `hidepid=invisible`: a tenant's command lines are its containers' argv and
 * QEMU's `-append`, and on a stock mount every local user reads them (`ps -eo args`). With
 * `hidepid=invisible` (2) a user sees only its own processes; `gid=` names the one group that
 * still sees all (the daemon's). `ptraceable` (4) is stricter still and accepted as it is.
 * Since Linux 5.8 these options belong to one mount of procfs, so the host's `/proc` in the
 * daemon's mount namespace is the one that counts for local accounts.
 */
import { readFile } from 'node:fs/promises';
import { run } from './exec.js';

export interface ProcMount {
  /** `off`, `noaccess`, `invisible` or `ptraceable` (the kernel prints names since 5.8). */
  hidepid: string;
  gid: number | undefined;
}

const NAMES: Record<string, string> = { '0': 'off', '1': 'noaccess', '2': 'invisible', '4': 'ptraceable' };

/** The options of the procfs mounted at `/proc`, from `/proc/self/mountinfo` text; undefined when none is. */
export function parseProcMount(mountinfo: string): ProcMount | undefined {
  let found: ProcMount | undefined;
  for (const line of mountinfo.split('\n')) {
    // id parent major:minor root mountpoint options [optional fields] - fstype source super-options
    const [left, right] = line.split(' - ');
    if (right === undefined) continue;
    const mountPoint = left!.split(' ')[4];
    const [fstype, , superOptions = ''] = right.split(' ');
    if (mountPoint !== '/proc' || fstype !== 'proc') continue;
    const opts = new Map(superOptions.split(',').map((o) => o.split('=') as [string, string | undefined]));
    const raw = opts.get('hidepid') ?? 'off';
    const gid = opts.get('gid');
    // The last mount at /proc is the one a path lookup reaches.
    found = { hidepid: NAMES[raw] ?? raw, gid: gid === undefined ? undefined : Number(gid) };
  }
  return found;
}

/** True when other users' processes are hidden from a local account (`invisible` or `ptraceable`). */
export function hidesProcesses(m: ProcMount | undefined): boolean {
  return m !== undefined && (m.hidepid === 'invisible' || m.hidepid === 'ptraceable');
}

export async function readProcMount(): Promise<ProcMount | undefined> {
  return parseProcMount(await readFile('/proc/self/mountinfo', 'utf8'));
}

/**
 * Makes `/proc` hide other users' processes: already so, nothing is changed (an operator's own
 * `gid=` stays); otherwise it is remounted with `hidepid=invisible,gid=<gid>`. Returns what was done.
 */
export async function hideProcesses(gid: number): Promise<{ changed: boolean; mount: ProcMount }> {
  const before = await readProcMount();
  if (before && hidesProcesses(before)) return { changed: false, mount: before };
  await run('mount', ['-o', `remount,hidepid=invisible,gid=${gid}`, '/proc']);
  const after = await readProcMount();
  if (!after || !hidesProcesses(after))
    throw new Error('/proc was remounted with hidepid=invisible, but does not show it');
  return { changed: true, mount: after };
}
