/**
 * bench/reserve: reserve → the new space's own process answering a signed request, p50/p99 over
 * 50 spaces, and destroy time. Baseline (same run): the irreducible host work of a space done
 * directly through the drivers (cgroups + encrypted storage create, and their teardown).
 * Goal: reserve→answer p50 under 500 ms on a 2-core machine.
 */
import { randomBytes } from 'node:crypto';
import { generatePrivateKey, type CreateSpaceResponse } from '@ocs/protocol';
import { startTestNode, MiB } from '@ocs/e2e/harness';
import { percentile, report } from './measure.js';

const N = Number(process.env.BENCH_SPACES ?? 50);
const resources = { cpuMillicores: 100, memoryBytes: 128 * MiB, storageBytes: 32 * MiB };
const t = await startTestNode({
  total: { cpuMillicores: 1_000_000, memoryBytes: 1024 * 1024 * MiB, storageBytes: 1024 * 1024 * MiB },
});
const ms = (a: bigint, b: bigint) => Number(b - a) / 1e6;
try {
  // Baseline: the drivers alone.
  const base: number[] = [];
  const baseDestroy: number[] = [];
  for (let i = 0; i < N; i++) {
    const id = `bench${randomBytes(6).toString('hex')}`;
    const path = `${t.config.cgroups.parent}/${id}.space`;
    const limits = { cpuMillicores: 100, memoryBytes: 128 * MiB };
    const t0 = process.hrtime.bigint();
    await t.cgroups.create(path, limits);
    await t.cgroups.create(`${path}/api.slice`, limits);
    await t.cgroups.create(`${path}/workloads.slice`, limits);
    await t.storage.create(id, 32 * MiB, new Uint8Array(randomBytes(32)));
    const t1 = process.hrtime.bigint();
    await t.storage.destroy(id);
    await t.cgroups.destroy(path);
    base.push(ms(t0, t1));
    baseDestroy.push(ms(t1, process.hrtime.bigint()));
  }

  const reserveOnly: number[] = [];
  const toAnswer: number[] = [];
  const destroy: number[] = [];
  for (let i = 0; i < N; i++) {
    const owner = generatePrivateKey();
    const c = t.client({ roles: ['spaces', 'monitor'], owner });
    const t0 = process.hrtime.bigint();
    const { space } = (
      await c.call<CreateSpaceResponse>('POST', '/v1/spaces', {
        ownerKey: owner.publicKey.toBase64url(),
        resources,
        leaseSeconds: 600,
      })
    ).body;
    const t1 = process.hrtime.bigint();
    await c.call('GET', `${space.apiBase}/status`);
    const t2 = process.hrtime.bigint();
    await c.call('DELETE', `/v1/spaces/${space.id}`);
    const t3 = process.hrtime.bigint();
    reserveOnly.push(ms(t0, t1));
    toAnswer.push(ms(t0, t2));
    destroy.push(ms(t2, t3));
  }
  report('reserve', {
    spaces: N,
    'baseline host work p50 ms (cgroups + storage)': percentile(base, 50),
    'reserve p50 ms': percentile(reserveOnly, 50),
    'reserve -> signed answer p50 ms': percentile(toAnswer, 50),
    'reserve -> signed answer p99 ms': percentile(toAnswer, 99),
    'destroy p50 ms': percentile(destroy, 50),
    'destroy p99 ms': percentile(destroy, 99),
    'baseline host teardown p50 ms': percentile(baseDestroy, 50),
    'ratio reserve->answer / host work (p50)': percentile(toAnswer, 50) / percentile(base, 50),
    'ratio destroy / host teardown (p50)': percentile(destroy, 50) / percentile(baseDestroy, 50),
    goal: 'reserve->answer p50 < 500 ms',
  });
} finally {
  await t.stop();
}
