/**
 * Issue 23, item 1: a local account whose delegation (/etc/subuid) covers the node's space uids
 * could become a space's uid with newuidmap. A real account is made with such a delegation; the
 * real daemon refuses to start and names the entry; without the delegation it starts (the
 * control). The account and its delegations are removed, by their own name, whatever happens.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { daemonDir, startDaemon } from './daemon-process.js';

test("the daemon refuses to start while a local account's /etc/subuid delegation covers its space uids, naming the entry", async () => {
  const home = daemonDir('ids');
  const user = `ocst${home.tag}`;
  const uidBase = home.uidBase(800_000);
  const config = {
    ...home.base,
    auth: { devIssuer: true },
    spaces: { uidBase, uidCount: 100, reserveIds: false },
    workloads: { containers: { enabled: false }, libvirt: { enabled: false } },
    log: { level: 'info' },
  };
  const path = home.write(config);
  const range = `${uidBase + 10}-${uidBase + 19}`;
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
    await home.remove();
  }
});
