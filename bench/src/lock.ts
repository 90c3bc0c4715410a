/**
 * bench/lock: lock and unlock of a space running 5 containers and one VM (the test guest, which
 * powers off on the ACPI button), against the same for an empty space, in one run. The lock's
 * answer (at most 0.8 s: `locking` while the space still shuts down) and the time until the
 * space is `locked` are measured apart. A lock stops
 * the containers and the VM in parallel (each given `workloads.containers.stopGraceSeconds`,
 * default 3 s, before a kill), kills what is left of the space's engine and locks the storage;
 * an unlock opens the storage and starts again what ran.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { buildBusyboxImage, buildTestGuest } from '@ocs/host/testing';
import { generatePrivateKey, unwrapKey, type CreateSpaceResponse, type Vm } from '@ocs/protocol';
import { lockSpace, startTestNode, MiB } from '@ocs/e2e/harness';
import { percentile, report } from './measure.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;
const sleep = (n: number) => new Promise((r) => setTimeout(r, n));

const t = await startTestNode({
  workloads: true,
  total: { cpuMillicores: 64_000, memoryBytes: 16 * 1024 * MiB, storageBytes: 8 * 1024 * MiB },
});
const imagePath = await buildBusyboxImage(`ocs-bench-tmp/busybox-${randomBytes(5).toString('hex')}:latest`);
const guestDir = mkdtempSync(join(tmpdir(), 'ocs-bench-lock-guest-'));
try {
  const guest = await buildTestGuest(guestDir, 'acpi');
  async function space(withWorkloads: boolean) {
    const owner = generatePrivateKey();
    const r = await t.client({ roles: ['spaces'], owner }).call<CreateSpaceResponse>('POST', '/v1/spaces', {
      ownerKey: owner.publicKey.toBase64url(),
      resources: { cpuMillicores: 4000, memoryBytes: 1024 * MiB, storageBytes: 512 * MiB, pids: 2048 },
      leaseSeconds: 3600,
    });
    const { space, wrappedKey } = r.body;
    const api = t.client({ roles: ['storage', 'containers', 'vms', 'spaces'], owner });
    const base = space.apiBase;
    if (withWorkloads) {
      await api.call('POST', `${base}/images/busybox`, undefined, { raw: readFileSync(imagePath) });
      for (let i = 0; i < 5; i++)
        await api.call('POST', `${base}/containers`, {
          name: `c${i}`,
          image: 'busybox',
          command: ['sleep', '600'],
          cpuMillicores: 200,
          memoryBytes: 32 * MiB,
        });
      await api.call('POST', `${base}/files/vmlinuz`, undefined, { raw: readFileSync(guest.kernel) });
      await api.call('POST', `${base}/files/initrd`, undefined, { raw: readFileSync(guest.initrd) });
      await api.call<Vm>('POST', `${base}/vms`, {
        name: 'vm',
        vcpus: 1,
        memoryBytes: 128 * MiB,
        boot: { kind: 'kernel', kernel: 'vmlinuz', initrd: 'initrd', cmdline: guest.cmdline },
      });
    }
    const key = await unwrapKey(wrappedKey, owner);
    const sealed = await t.seal(key);
    key.fill(0);
    return { space, api, base, sealed, withWorkloads };
  }
  async function readyForLock(s: Awaited<ReturnType<typeof space>>) {
    if (!s.withWorkloads) return;
    // The guest must be up and watching its power button, as a real one would be.
    for (const until = Date.now() + 120_000; Date.now() < until; await sleep(250)) {
      const r = await s.api.call<{ text: string }>('GET', `${s.base}/vms/vm/console`);
      if (r.body.text.includes(guest.readyMarker)) return;
    }
    throw new Error('the guest did not become ready');
  }
  async function rounds(s: Awaited<ReturnType<typeof space>>) {
    const answer: number[] = [];
    const lock: number[] = [];
    const unlock: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      await readyForLock(s);
      let t0 = process.hrtime.bigint();
      const answered = { ms: 0 };
      const api = {
        call: async <T>(method: string, path: string, body?: unknown) => {
          const r = await s.api.call<T>(method, path, body);
          if (method === 'POST') answered.ms = ms(t0);
          return r;
        },
      };
      await lockSpace(api, s.space.id);
      lock.push(ms(t0));
      answer.push(answered.ms);
      t0 = process.hrtime.bigint();
      await s.api.call('POST', `/v1/spaces/${s.space.id}/unlock`, { sealedKey: s.sealed });
      unlock.push(ms(t0));
    }
    return { answer, lock, unlock };
  }
  const empty = await space(false);
  const full = await space(true);
  const e = await rounds(empty);
  const f = await rounds(full);
  const running = await full.api.call<{ containers: { state: string }[] }>('GET', `${full.base}/containers`);
  report('lock', {
    rounds: ROUNDS,
    'empty space: lock answered p50 ms': percentile(e.answer, 50),
    'empty space: lock p50 ms': percentile(e.lock, 50),
    'empty space: unlock p50 ms': percentile(e.unlock, 50),
    '5 containers + 1 VM: lock answered p50 ms': percentile(f.answer, 50),
    '5 containers + 1 VM: lock answered max ms': Math.max(...f.answer),
    '5 containers + 1 VM: locked p50 ms': percentile(f.lock, 50),
    '5 containers + 1 VM: locked max ms': Math.max(...f.lock),
    '5 containers + 1 VM: unlock (and restore) p50 ms': percentile(f.unlock, 50),
    'ratio locked full / empty (p50)': percentile(f.lock, 50) / percentile(e.lock, 50),
    'ratio unlock full / empty (p50)': percentile(f.unlock, 50) / percentile(e.unlock, 50),
    'containers running after the last unlock': running.body.containers.filter((c) => c.state === 'running').length,
  });
} finally {
  await t.stop();
  rmSync(dirname(imagePath), { recursive: true, force: true });
  rmSync(guestDir, { recursive: true, force: true });
}
