/**
 * A filesystem image that came from outside (a restored space archive) is input to the kernel's
 * ext4 code: mounting a crafted image is a known way into a kernel. So before it is ever
 * attached, it is read by e2fsck (`-fn`: a full check, opening nothing for writing) and its
 * superblock by dumpe2fs, and both run in a bubblewrap sandbox: no network or other namespace
 * of the host, no capabilities, a read-only /usr, the image alone (read-only), under a limit
 * of memory and time. A parser bug those tools may have is then theirs to lose, not the host's.
 *
 * What is accepted: ext4 with the `encrypt` feature (what fscrypt spaces are made of), whose
 * size is at most the image's, that e2fsck finds clean.
 */
import { CommandError, type Runner } from '../exec.js';
import { OcsError } from '@ocs/protocol';
import { rootLinks } from '../sandbox-root.js';

export interface ImageCheckOptions {
  /** Address space of each tool. Default 2 GiB: e2fsck's bitmaps for a few TiB fit. */
  memoryBytes?: number;
  /** Default 10 minutes: a full check reads every inode table. */
  timeoutMs?: number;
}

const SANDBOX_IMAGE = '/image';

/** bubblewrap around one tool that reads `image`: the tool sees only /usr and the image. */
export function sandboxedArgs(image: string, tool: string[], memoryBytes: number): { cmd: string; args: string[] } {
  return {
    cmd: 'prlimit',
    args: [
      `--as=${memoryBytes}`,
      '--nofile=64',
      '--',
      'bwrap',
      '--unshare-all',
      '--die-with-parent',
      '--new-session',
      '--cap-drop',
      'ALL',
      '--ro-bind',
      '/usr',
      '/usr',
      ...rootLinks(),
      '--proc',
      '/proc',
      '--dev',
      '/dev',
      '--tmpfs',
      '/tmp',
      '--ro-bind',
      image,
      SANDBOX_IMAGE,
      '--',
      ...tool,
    ],
  };
}

/**
 * Refuses (`archive_filesystem_invalid`) an image that is not a clean encrypted ext4 of at
 * most its own size. Runs nothing outside the sandbox on the image's contents.
 */
export async function checkExt4Image(run: Runner, image: string, opts: ImageCheckOptions = {}): Promise<void> {
  const memory = opts.memoryBytes ?? 2 * 1024 ** 3;
  const timeoutMs = opts.timeoutMs ?? 600_000;
  const invalid = (why: string) =>
    new OcsError('archive_filesystem_invalid', `the archive's filesystem image does not pass the node's check: ${why}`);

  const dump = sandboxedArgs(image, ['/usr/sbin/dumpe2fs', '-h', SANDBOX_IMAGE], memory);
  let header: string;
  try {
    header = (await run(dump.cmd, dump.args, { timeoutMs })).stdout;
  } catch (err) {
    throw refusedBy(err, invalid('it has no readable ext4 superblock'));
  }
  const features = /^Filesystem features:\s+(.*)$/m.exec(header)?.[1]?.split(/\s+/) ?? [];
  if (!features.includes('encrypt')) throw invalid('it is not an encrypted ext4 filesystem');
  const fsck = sandboxedArgs(image, ['/usr/sbin/e2fsck', '-f', '-n', SANDBOX_IMAGE], memory);
  try {
    await run(fsck.cmd, fsck.args, { timeoutMs });
  } catch (err) {
    // With -n every error is left uncorrected (4), or the check could not go on (8).
    throw refusedBy(err, invalid('e2fsck finds errors in it'));
  }
}

/**
 * A tool that ran and failed on the image refused it, also when it was killed (a crash, the
 * memory limit, the deadline: what a crafted image would cause). Only a tool that could not be
 * started at all is the host's failure.
 */
function refusedBy(err: unknown, refusal: OcsError): unknown {
  if (!(err instanceof CommandError)) return err;
  if (err.exitCode === null && err.signal === null && !err.timedOut) return err;
  return refusal;
}
