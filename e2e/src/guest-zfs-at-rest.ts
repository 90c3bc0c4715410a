/**
 * Run inside the production guest by zfs-cgroup2-systemd.guest.test.ts, not a test itself: a pool on the guest's
 * second disk, a space with a volume through the zfs driver, a marker written into each and into
 * an unencrypted dataset of the same pool (the control: proof that plaintext there is seen),
 * then lock, a mount attempt without the key, and an export, so the host reads the disk cold.
 * argv: the disk, then the three markers. Prints one JSON line, `AT-REST {...}`.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, fsyncSync, mkdtempSync, openSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { ZfsStorageDriver } from '@ocs/host';

const [disk, spaceMarker, volumeMarker, controlMarker] = process.argv.slice(2) as [string, string, string, string];
const pool = `ocsrest${randomBytes(3).toString('hex')}`;
const zfs = (...args: string[]) => execFileSync('zfs', args, { encoding: 'utf8' });
/** 64 KiB of the marker, synced: a plaintext copy on disk would hold it whole. */
const write = (path: string, m: string) => {
  const fd = openSync(path, 'w');
  writeSync(fd, m.repeat(Math.ceil(65536 / m.length)));
  fsyncSync(fd);
  closeSync(fd);
};

execFileSync('zpool', ['create', '-f', '-O', 'mountpoint=none', pool, disk]);
const root = mkdtempSync('/tmp/ocs-rest-');
const d = new ZfsStorageDriver({ pool, root: join(root, 'storage') });
const key = new Uint8Array(randomBytes(32));
const volKey = new Uint8Array(randomBytes(32));
const info = await d.create('sp-rest', 64 * 1024 * 1024, key);
write(join(info.mountpoint, 'marker'), spaceMarker);
const vol = await d.createVolume('sp-rest', 'v1', 8 * 1024 * 1024, volKey);
write(join(vol.path, 'marker'), volumeMarker);
zfs('create', '-o', `mountpoint=${join(root, 'plain')}`, `${pool}/plain`);
write(join(root, 'plain', 'marker'), controlMarker);

await d.lock('sp-rest');
const ds = `${pool}/ocs/sp-rest`;
const keystatus = zfs('get', '-H', '-o', 'value', 'keystatus', ds).trim();
let mountWithoutKey = 'mounted';
try {
  zfs('mount', ds);
} catch (err) {
  mountWithoutKey = String((err as { stderr?: string }).stderr ?? err).trim();
}
execFileSync('zpool', ['export', pool]);
console.log(`AT-REST ${JSON.stringify({ pool, keystatus, mountWithoutKey })}`);
