/**
 * Kernel and initramfs are copied, just before each start, from the space's storage into a
 * root-only staging directory, and the domain boots from the copies. libvirt changes the owner
 * of boot files to QEMU's user with chown(2), which follows symlinks; if it did that inside
 * the space's storage, an owner who swapped the file for a link between our check and
 * libvirt's chown would be handed any host file. Copies in a directory only root can write
 * leave nothing to swap. QEMU reads them once at startup, so they are deleted right after.
 */
import { constants } from 'node:fs';
import { chmod, mkdir, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { OcsError } from '@ocs/protocol';
import { openExactFile } from './safe-open.js';

/** Largest boot files copied (a kernel is ~10 MiB; an initramfs rarely above a few hundred). */
export const STAGE_LIMITS = { kernel: 256 * 1024 * 1024, initrd: 2048 * 1024 * 1024 } as const;

/** Where a domain's staged boot files go. */
export function stagedPaths(stagingDir: string, domain: string): { dir: string; kernel: string; initrd: string } {
  const dir = join(stagingDir, domain);
  return { dir, kernel: join(dir, 'kernel'), initrd: join(dir, 'initrd') };
}

async function copyExact(field: 'kernel' | 'initrd', from: string, to: string): Promise<void> {
  const src = await openExactFile(`boot.${field}`, from);
  if (!src) throw new OcsError('conflict', `boot.${field} no longer exists`, { field: `boot.${field}` });
  try {
    const size = (await src.stat()).size;
    if (size > STAGE_LIMITS[field]) {
      throw new OcsError('invalid_request', `boot.${field} is larger than ${STAGE_LIMITS[field]} bytes`, {
        field: `boot.${field}`,
      });
    }
    const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW;
    const dst = await open(to, flags, 0o600);
    try {
      const buf = Buffer.alloc(1024 * 1024);
      for (let pos = 0; ;) {
        const { bytesRead } = await src.read(buf, 0, buf.length, pos);
        if (bytesRead === 0) break;
        await dst.write(buf, 0, bytesRead);
        pos += bytesRead;
      }
    } finally {
      await dst.close();
    }
  } finally {
    await src.close();
  }
}

/** Copies the boot files to their staged paths (a fresh directory, mode 0711 so QEMU's user can reach the files libvirt hands it). */
export async function stageBootFiles(
  stagingDir: string,
  domain: string,
  src: { kernel: string; initrd?: string },
): Promise<void> {
  await mkdir(stagingDir, { recursive: true, mode: 0o711 });
  await chmod(stagingDir, 0o711);
  const p = stagedPaths(stagingDir, domain);
  await rm(p.dir, { recursive: true, force: true });
  await mkdir(p.dir, { mode: 0o711 });
  await copyExact('kernel', src.kernel, p.kernel);
  if (src.initrd !== undefined) await copyExact('initrd', src.initrd, p.initrd);
}

/** Removes a domain's staged boot files, if any. */
export async function unstageBootFiles(stagingDir: string, domain: string): Promise<void> {
  await rm(stagedPaths(stagingDir, domain).dir, { recursive: true, force: true });
}
