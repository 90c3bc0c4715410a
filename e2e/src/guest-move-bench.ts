/**
 * Run inside the production guest by bench/src/move-zfs.ts, not a test itself: the move bench on
 * ZFS. Two nodes (guest-nodes.ts), each on a pool of its own disk; a space holding `mib` MiB of
 * random data moves between them, round after round, against the baseline the issue names: the
 * same space's raw replication stream piped from one pool into the other (`zfs send -w -R |
 * zfs receive`), in the same run. Also the time the space is unavailable: from the lock on the
 * source (after the seed, which goes while the space runs) until unlocked on the target.
 *
 * argv: disk A, disk B, MiB of data, rounds. Prints `MOVE-BENCH {...}`.
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { moveSpace } from '@ocs/client';
import { generatePrivateKey } from '@ocs/protocol';
import { sh, startGuestNode, type GuestNode } from './guest-nodes.js';

const [diskA, diskB, mibArg, roundsArg] = process.argv.slice(2) as [string, string, string, string];
const MiB = 1024 ** 2;
const DATA_MIB = Number(mibArg);
const ROUNDS = Number(roundsArg);
const seconds = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e9;

// What the move does that the baseline does not, measured alone: SHA-256 in user space (each
// chunk is hashed by the source and by the target; TLS adds its own cipher on both ends). Under
// TCG every such instruction is emulated, while `zfs send | zfs receive` copies blocks in the kernel.
const sha256MiBs = (() => {
  const buf = randomBytes(64 * MiB);
  const t0 = process.hrtime.bigint();
  createHash('sha256').update(buf).digest();
  return 64 / seconds(t0);
})();

const owner = generatePrivateKey();
const storageBytes = Math.ceil((DATA_MIB * 1.1 + 64) / 4) * 4 * MiB;
const node = (name: string, disk: string, n: number) =>
  startGuestNode({
    name,
    disk,
    port: 8451 + n,
    owner,
    roles: ['spaces', 'storage', 'farmer'],
    storageBytes: storageBytes + 64 * MiB,
    ids: {
      uidBase: 400_000 + n * 1000,
      subidBase: 600_000_000 + n * 10_000_000,
      subnetPool: `10.${70 + n}.0.0/16`,
      ports: { first: 32_000 + n * 100, last: 32_099 + n * 100 },
    },
  });
const a = await node('a', diskA, 0);
const b = await node('b', diskB, 1);
const { space, wrappedKey } = await a.client.spaces.reserve({
  resources: { cpuMillicores: 500, memoryBytes: 256 * MiB, storageBytes },
  leaseSeconds: 3600,
});
const id = space.id;
const data = join(a.storageRoot, 'mnt', id, 'data');
const chunk = Math.min(64, DATA_MIB);
for (let i = 0; i < DATA_MIB / chunk; i++) {
  const fd = openSync(join(data, `bench-${i}`), 'w', 0o600);
  writeSync(fd, randomBytes(chunk * MiB));
  fsyncSync(fd);
  closeSync(fd);
}

/** The baseline: the locked space's datasets, raw, from one pool straight into the other. */
const plainCopy = (from: GuestNode, to: GuestNode): { seconds: number; streamBytes: number } => {
  const ds = `${from.pool}/ocs/${id}`;
  sh('zfs', 'snapshot', '-r', `${ds}@bench`);
  // Its size, as `zfs send` estimates it (untimed; counting the bytes in the pipe would slow the baseline).
  const size = /^size\s+(\d+)$/m.exec(sh('zfs', 'send', '-nP', '-w', '-R', `${ds}@bench`))?.[1];
  const t0 = process.hrtime.bigint();
  sh('bash', '-c', `set -o pipefail; zfs send -w -R ${ds}@bench | zfs receive -u ${to.pool}/bench-copy`);
  const s = seconds(t0);
  sh('zfs', 'destroy', '-r', `${to.pool}/bench-copy`);
  sh('zfs', 'destroy', '-r', `${ds}@bench`);
  return { seconds: s, streamBytes: Number(size ?? 0) };
};

const plain: number[] = [];
const moves: number[] = [];
const unavailable: number[] = [];
let streamBytes = 0;
let [from, to] = [a, b];
for (let round = 0; round < ROUNDS; round++) {
  await from.client.spaces.lock(id);
  const p = plainCopy(from, to);
  plain.push(p.seconds);
  streamBytes = p.streamBytes || streamBytes;
  await from.client.spaces.unlock(id, wrappedKey);
  const t0 = process.hrtime.bigint();
  await moveSpace(from.client, to.client, id);
  moves.push(seconds(t0));
  await to.client.spaces.unlock(id, wrappedKey);
  // Unavailable from the move's lock on the source (a seed went before it, while the space ran)
  // until the target unlocked it: both nodes share this guest's clock.
  const locked = (await from.client.audit.list({ limit: 1000 })).entries
    .filter((e) => e.action === 'space.lock' && e.target === id)
    .at(-1);
  // The entry is written as the lock ends; its detail says how long it took.
  const lockedAt = Date.parse(locked!.at) - 1000 * Number((locked!.detail as { seconds?: number }).seconds ?? 0);
  unavailable.push((Date.now() - lockedAt) / 1000);
  [from, to] = [to, from];
}
await from.client.spaces.destroy(id);
for (const n of [a, b]) sh('systemctl', 'stop', n.unit);
console.log(
  `MOVE-BENCH ${JSON.stringify({ dataMiB: DATA_MIB, rounds: ROUNDS, streamBytes, sha256MiBs, plain, moves, unavailable })}`,
);
