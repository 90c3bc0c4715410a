/**
 * kill -9 of the real daemon while containers are created, run and locked, then a restart:
 * reconciliation must find every space's engine and containers and leave no orphan. What must
 * hold after each restart, for every space the daemon lists:
 *   - locked: nothing of its engine runs (no process in its engine or containers group, no run
 *     directory);
 *   - active: its engine holds exactly the containers the API lists, no half-made one;
 * and no engine run directory belongs to a space that is not active. The spaces' network rules
 * too: every live space has its table, a space destroyed has none, whatever the kernel held when
 * the daemon died (the test removes a live space's table and puts back a gone one's meanwhile).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import Dockerode from 'dockerode';
import { execFileSync } from 'node:child_process';
import { bridgeName, detectCgroups, type CgroupDriver } from '@ocs/host';
import { buildBusyboxImage } from '@ocs/host/testing';
import { spaceCgroupLayout } from '@ocs/node-daemon';
import { generatePrivateKey, type Container, type Ed25519PrivateKey, type Space } from '@ocs/protocol';
import { daemonClient, daemonDir, kill9, startDaemon, type Daemon } from './daemon-process.js';
import { hostFirewall, removeSpaceRules, spaceTables } from './space-rules.js';

const MiB = 1024 ** 2;

async function groupPids(cgroups: CgroupDriver, group: string): Promise<number[]> {
  const own = await cgroups.processes(group).catch(() => [] as number[]);
  const kids = await cgroups.children(group).catch(() => [] as string[]);
  return [...own, ...(await Promise.all(kids.map((k) => groupPids(cgroups, `${group}/${k}`)))).flat()];
}

test('kill -9 while containers are made, run and locked: after restart engines and containers match the records', async () => {
  const home = daemonDir('crashw');
  const { tag, parent } = home;
  const runRoot = `/run/ocs-k${tag}`;
  const config = home.nodeConfig({ uidFirst: 600_000, storageBytes: 2048 * MiB, containersRunRoot: runRoot });
  const configPath = home.write(config);
  const cgroups = await detectCgroups();
  // The daemon installs the node's table; it is this test's to remove only if it was not there.
  const nodeTableWasThere = await hostFirewall().installed();
  let imagePath: string | undefined;
  const owners = new Map<string, Ed25519PrivateKey>();
  const seen = new Set<string>();
  const destroyed = new Set<string>();
  let d: Daemon | undefined;
  try {
    imagePath = await buildBusyboxImage(`ocs-e2e-tmp/busybox-${randomBytes(5).toString('hex')}:latest`);
    const image = readFileSync(imagePath);
    for (let round = 0; round < 4; round++) {
      d = await startDaemon(configPath, 60_000);
      const farmer = daemonClient(config.stateDir, d, { roles: ['spaces', 'farmer'], org: 'org-crashw' });
      const owned = (id: string) =>
        daemonClient(config.stateDir, d!, {
          roles: ['spaces', 'storage', 'containers'],
          org: 'org-crashw',
          owner: owners.get(id)!,
        });

      // ---- what must hold after the restart ----------------------------------------------------
      const listed = (await farmer.call<{ spaces: Space[] }>('GET', '/v1/spaces')).body.spaces;
      const active = listed.filter((s) => s.state === 'active');
      for (const s of listed.filter((x) => x.state === 'locked')) {
        const l = spaceCgroupLayout(parent, s.id);
        assert.deepEqual(
          await groupPids(cgroups, l.engine),
          [],
          `round ${round}: locked ${s.id} has an engine process`,
        );
        assert.deepEqual(await groupPids(cgroups, l.containers), [], `round ${round}: locked ${s.id} runs a container`);
        assert.equal(existsSync(join(runRoot, s.id)), false, `round ${round}: locked ${s.id} has an engine run dir`);
      }
      for (const s of active) {
        const api = owned(s.id);
        const recorded = (await api.call<{ containers: Container[] }>('GET', `${s.apiBase}/containers`)).body.containers
          .map((c) => c.id)
          .sort();
        // The listing above started the engine if it was not serving.
        const engine = new Dockerode({ socketPath: join(runRoot, s.id, 'engine.sock'), version: 'v1.41' });
        const held = (await engine.listContainers({ all: true })).map((c) => c.Labels['ocs.container'] ?? '?').sort();
        assert.deepEqual(held, recorded, `round ${round}: the engine of ${s.id} holds what is not recorded`);
      }
      const activeIds = new Set(active.map((s) => s.id));
      for (const r of existsSync(runRoot) ? readdirSync(runRoot) : [])
        assert.ok(activeIds.has(r), `round ${round}: an engine run dir of ${r}, which is not active`);
      // Every space here ran a container, so each live one has rules; a destroyed one has none.
      const tables = await spaceTables();
      for (const s of listed.filter((x) => ['active', 'locked'].includes(x.state)))
        assert.ok(tables.has(s.id), `round ${round}: live ${s.id} (${s.state}) has no network rules`);
      for (const id of destroyed) assert.ok(!tables.has(id), `round ${round}: destroyed ${id} still has rules`);

      // ---- a space destroyed for good, while the others stay -----------------------------------
      // (A lock cut short by the kill ends after the restart: the space it asked for is locked
      // then, so the one destroyed is the newest live space, active or locked.)
      const live = listed.filter((x) => ['active', 'locked'].includes(x.state));
      if (round === 2 && live.length > 1) {
        const gone = live[live.length - 1]!;
        const r = await farmer.call('DELETE', `/v1/spaces/${gone.id}`, undefined, { sign: false });
        assert.equal(r.status, 204, JSON.stringify(r.body));
        assert.ok(!(await spaceTables()).has(gone.id), "destroy removes the space's rules");
        destroyed.add(gone.id);
      }

      // ---- a space with a running container, then creates and a lock cut short by kill -9 ------
      const owner = generatePrivateKey();
      const made = await daemonClient(config.stateDir, d, { roles: ['spaces'], org: 'org-crashw', owner }).call<{
        space: Space;
      }>('POST', '/v1/spaces', {
        ownerKey: owner.publicKey.toBase64url(),
        resources: { cpuMillicores: 500, memoryBytes: 512 * MiB, storageBytes: 128 * MiB },
        leaseSeconds: 600,
      });
      const s = made.body.space;
      owners.set(s.id, owner);
      seen.add(s.id);
      const api = owned(s.id);
      await api.call('POST', `${s.apiBase}/images/busybox`, undefined, { raw: image });
      const run = (name: string) =>
        api.call('POST', `${s.apiBase}/containers`, {
          name,
          image: 'busybox',
          command: ['sleep', '600'],
          cpuMillicores: 100,
          memoryBytes: 16 * MiB,
        });
      await run('first');
      const older = active.find((x) => !destroyed.has(x.id));
      const inflight = [
        run('second').catch(() => undefined),
        run('third').catch(() => undefined),
        // A space from an earlier round, its containers running, is locked while the daemon dies.
        older
          ? owned(older.id)
              .call('POST', `/v1/spaces/${older.id}/lock`, {})
              .catch(() => undefined)
          : Promise.resolve(),
      ];
      await new Promise((r) => setTimeout(r, 100 + round * 150));
      await kill9(d);
      await Promise.all(inflight);
      // While the daemon is down the kernel drifts: a live space's rules are lost, a gone
      // space's table comes back. The restart must undo both.
      const lost = listed.find((x) => x.state === 'active' && !destroyed.has(x.id));
      if (lost) execFileSync('nft', ['delete', 'table', 'inet', `ocs_${lost.id}`]);
      for (const id of destroyed) execFileSync('nft', ['add', 'table', 'inet', `ocs_${id}`]);
    }
    assert.equal(destroyed.size, 1, 'a space was destroyed and checked across a restart');
  } finally {
    if (d) await kill9(d);
    // Everything of this run, by its own names: the spaces' cgroups (engines, conmon and
    // containers with them), storage, run directories, bridges, the spaces' rules.
    await home.remove();
    rmSync(runRoot, { recursive: true, force: true });
    for (const id of seen) {
      const bridge = bridgeName(id);
      if (existsSync(`/sys/class/net/${bridge}`)) {
        execFileSync('ip', ['link', 'delete', bridge]);
      }
    }
    await removeSpaceRules(seen, nodeTableWasThere).catch(() => undefined);
    if (imagePath) rmSync(dirname(imagePath), { recursive: true, force: true });
  }
});
