/**
 * Issue 23, item 1: a local account whose delegation (/etc/subuid) covers the node's space uids
 * could become a space's uid with newuidmap. A real account is made with such a delegation; the
 * real daemon refuses to start and names the entry; without the delegation it starts (the
 * control). The account and its delegations are removed, by their own name, whatever happens.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createStorageDriver, detectCgroups } from '@ocs/host';
import { startDaemon } from './daemon-process.js';

test("the daemon refuses to start while a local account's /etc/subuid delegation covers its space uids, naming the entry", async () => {
  const tag = randomBytes(4).toString('hex');
  const user = `ocst${tag}`;
  const uidBase = 800_000 + (parseInt(tag, 16) % 1000) * 1000;
  const base = mkdtempSync(join(tmpdir(), `ocs-e2e-ids-${tag}-`));
  chmodSync(base, 0o711);
  const parent = `ocs-ids-${tag}.slice`;
  const config = {
    stateDir: join(base, 'state'),
    runDir: join(base, 'run'),
    listen: { host: '127.0.0.1', port: 0 },
    auth: { devIssuer: true },
    storage: { backend: 'fscrypt', root: join(base, 'storage') },
    cgroups: { parent },
    spaces: { uidBase, uidCount: 100, reserveIds: false },
    workloads: { containers: { enabled: false }, libvirt: { enabled: false } },
    log: { level: 'info' },
  };
  const path = join(base, 'config.json');
  writeFileSync(path, JSON.stringify(config));
  const range = `${uidBase + 10}-${uidBase + 19}`;
  const cgroups = await detectCgroups();
  try {
    execFileSync('useradd', ['--no-create-home', '--shell', '/usr/sbin/nologin', user]);
    execFileSync('usermod', ['--add-subuids', range, '--add-subgids', range, user]);
    assert.ok(readFileSync('/etc/subuid', 'utf8').includes(`${user}:${uidBase + 10}:10`), 'the delegation is real');
    await assert.rejects(
      startDaemon(path),
      (err: Error) =>
        new RegExp(`/etc/subuid line \\d+ \\(${user}:${uidBase + 10}:10\\) overlaps the space uids`).test(
          err.message,
        ) && /daemon exited 1/.test(err.message),
    );
    // The control: the same node, once the delegation is gone, starts.
    execFileSync('usermod', ['--del-subuids', range, '--del-subgids', range, user]);
    const d = await startDaemon(path);
    await new Promise<void>((resolve) => {
      d.child.once('exit', () => resolve());
      d.child.kill('SIGTERM');
    });
  } finally {
    execFileSync('userdel', [user], { stdio: 'ignore' });
    for (const file of ['/etc/subuid', '/etc/subgid'])
      assert.ok(!readFileSync(file, 'utf8').includes(`${user}:`), `${file} keeps nothing of ${user}`);
    const storage = await createStorageDriver(config.storage as { backend: 'fscrypt'; root: string });
    await storage.close();
    for (const c of await cgroups.children(parent).catch(() => [] as string[])) await cgroups.destroy(`${parent}/${c}`);
    await cgroups.destroy(parent).catch(() => undefined);
    rmSync(base, { recursive: true, force: true });
  }
});
