/**
 * bench/move-zfs: bench/move on ZFS, in the production guest (scripts/guest/build.sh; ZFS exists
 * nowhere else here): a space holding `BENCH_MOVE_MIB` (default 256: the guest runs under TCG on
 * these machines) of random data moved between two real daemons on two pools, against the same
 * space's raw replication stream piped from one pool into the other (`zfs send -w -R | zfs
 * receive`) in the same run (e2e/src/guest-move-bench.ts). Also the time the space is unavailable
 * (from the lock on the source, after the seed sent while it ran, until unlocked on the target).
 * Goal: ratio plain copy / move >= 0.8.
 *
 * Under TCG (these machines) the move's user-space work (TLS, and SHA-256 of each chunk on both
 * ends) runs emulated while the baseline copies blocks in the kernel, so the ratio here says
 * little about a node on real hardware; the SHA-256 rate it prints shows how far the guest is
 * from one.
 */
import { buildGuest, runInGuest } from '@ocs/e2e/guest';
import { report } from './measure.js';

const GiB = 1024 ** 3;
const DATA_MIB = Number(process.env.BENCH_MOVE_MIB ?? 256);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;

const image = await buildGuest();
const disk = Math.max(1, Math.ceil((DATA_MIB * 3) / 1024)) * GiB;
const boot = await runInGuest(
  image,
  `set -eu\nmodprobe zfs\nnode e2e/dist/guest-move-bench.js /dev/disk/by-id/virtio-a /dev/disk/by-id/virtio-b ${DATA_MIB} ${ROUNDS}\n`,
  {
    disks: [
      { name: 'a', bytes: disk },
      { name: 'b', bytes: disk },
    ],
    timeoutSeconds: 3600,
  },
);
try {
  const line = /MOVE-BENCH (\{.*\})/.exec(boot.log);
  if (boot.code !== 0 || !line)
    throw new Error(`the bench failed in the guest (exit ${boot.code}):\n${boot.log.slice(-6000)}`);
  const r = JSON.parse(line[1]!) as {
    dataMiB: number;
    rounds: number;
    streamBytes: number;
    sha256MiBs: number;
    plain: number[];
    moves: number[];
    unavailable: number[];
  };
  const plain = median(r.plain);
  const move = median(r.moves);
  report('move-zfs', {
    accelerator: boot.accelerator.split(' ')[0],
    'data in the space MiB': r.dataMiB,
    'raw send stream MiB (zfs send -nP)': r.streamBytes / 1024 ** 2,
    rounds: r.rounds,
    'SHA-256 in the guest, MiB/s (the move hashes each chunk twice)': r.sha256MiBs,
    'zfs send -w -R | zfs receive, pool to pool, s (median)': plain,
    'move node to node, s (median)': move,
    'ratio plain copy / move (throughput)': plain / move,
    'unavailable: locked on the source (the seed went before) to unlocked on the target, s (median)': median(
      r.unavailable,
    ),
    'unavailable minus the plain copy, s': median(r.unavailable) - plain,
    goal: 'ratio >= 0.8',
    'goal met': plain / move >= 0.8,
  });
} finally {
  boot.cleanup();
}
