/**
 * kill -9 of the real daemon process in the middle of reserve and destroy, then a restart:
 * reconciliation must leave no orphan (cgroup, image, loop device, process) and lose no space.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { detectCgroups } from '@ocs/host';
import { spaceCgroupLayout } from '@ocs/node-daemon';
import { generatePrivateKey } from '@ocs/protocol';
import { daemonClient, daemonDir, kill9, startDaemon, type Daemon } from './daemon-process.js';

const MiB = 1024 ** 2;

test('kill -9 during reserve, lock and destroy: after restart no orphan, no lost space, and a locked space is locked on the host', async () => {
  const home = daemonDir('crash');
  const { parent } = home;
  // No workloads: nothing of the host's container or VM set-up (its INPUT rule) is this test's to leave behind.
  const config = home.nodeConfig({ uidFirst: 400_000, storageBytes: 2048 * MiB });
  const configPath = home.write(config);
  const cgroups = await detectCgroups();
  let d: Daemon | undefined;
  const created = new Set<string>();
  const destroyed = new Set<string>();
  const owners = new Map<string, ReturnType<typeof generatePrivateKey>>();
  try {
    for (let round = 0; round < 4; round++) {
      d = await startDaemon(configPath);
      const client = (owner = generatePrivateKey()) =>
        daemonClient(config.stateDir, d!, { roles: ['spaces', 'farmer', 'monitor'], org: 'org-crash', owner });

      // The records the restarted daemon reports must match the host exactly.
      const listed = (await client().call<{ spaces: { id: string; state: string }[] }>('GET', '/v1/spaces')).body
        .spaces;
      for (const s of listed)
        assert.ok(['active', 'locked', 'failed'].includes(s.state), `space ${s.id} left ${s.state}`);
      const live = new Set(listed.filter((s) => s.state !== 'failed').map((s) => s.id));
      for (const id of created) if (!destroyed.has(id)) assert.ok(live.has(id), `space ${id} was lost`);
      const hostCgroups = new Set(await cgroups.children(parent).catch(() => [] as string[]));
      assert.deepEqual(
        [...hostCgroups].sort(),
        [...live].map((id) => `${id}.space`).sort(),
        'cgroups differ from records',
      );
      for (const id of live)
        assert.deepEqual(
          await cgroups.processes(spaceCgroupLayout(parent, id).api),
          [],
          `stray space process of ${id}`,
        );
      const images = existsSync(join(config.storage.root, 'images'))
        ? readdirSync(join(config.storage.root, 'images'))
            .filter((f) => f.endsWith('.img'))
            .map((f) => f.replace(/\.img$/, ''))
        : [];
      assert.deepEqual(images.sort(), [...live].sort(), 'storage images differ from records');
      const locked = new Set(listed.filter((s) => s.state === 'locked').map((s) => s.id));
      const mounts = readFileSync('/proc/self/mountinfo', 'utf8');
      for (const id of images) {
        const loops = execFileSync('losetup', ['-j', join(config.storage.root, 'images', `${id}.img`)])
          .toString()
          .trim()
          .split('\n')
          .filter(Boolean);
        assert.ok(loops.length <= 1, `image ${id} attached ${loops.length} times`);
        // What the records call locked is locked on the host: no loop device, no mount.
        if (locked.has(id)) {
          assert.equal(loops.length, 0, `locked space ${id} still has a loop device`);
          assert.ok(!mounts.includes(`/mnt/${id} `), `locked space ${id} is still mounted`);
        }
      }

      // One completed reservation, then one reserve, one lock and one destroy cut short by kill -9.
      const okOwner = generatePrivateKey();
      const ok = await client(okOwner)
        .call<{ space: { id: string } }>('POST', '/v1/spaces', {
          ownerKey: okOwner.publicKey.toBase64url(),
          resources: { cpuMillicores: 100, memoryBytes: 64 * MiB, storageBytes: 32 * MiB },
          leaseSeconds: 600,
        })
        .catch(() => undefined);
      if (ok) {
        created.add(ok.body.space.id);
        owners.set(ok.body.space.id, okOwner);
      }
      const victim = [...created].find((id) => !destroyed.has(id) && id !== ok?.body.space.id);
      const owner = generatePrivateKey();
      const inflight = [
        client(owner)
          .call<{ space: { id: string } }>('POST', '/v1/spaces', {
            ownerKey: owner.publicKey.toBase64url(),
            resources: { cpuMillicores: 100, memoryBytes: 64 * MiB, storageBytes: 32 * MiB },
            leaseSeconds: 600,
          })
          .then(
            (r) => created.add(r.body.space.id),
            () => undefined,
          ),
        victim
          ? client()
              .call('DELETE', `/v1/spaces/${victim}`)
              .then(
                () => destroyed.add(victim),
                () => undefined,
              )
          : Promise.resolve(),
        // The space just made is locked by its owner while the daemon dies.
        ok
          ? client(okOwner)
              .call('POST', `/v1/spaces/${ok.body.space.id}/lock`, {})
              .catch(() => undefined)
          : Promise.resolve(),
      ];
      await new Promise((r) => setTimeout(r, 20 + round * 60));
      await kill9(d);
      await Promise.all(inflight);
      // A delete that was cut short may or may not have finished: the next round's records say which.
      if (victim) destroyed.add(victim);
    }
  } finally {
    if (d) await kill9(d);
    // Final cleanup, by this run's own names: the cgroups under its parent, every space whose
    // image is in its storage root, its directory.
    await home.remove();
  }
});
