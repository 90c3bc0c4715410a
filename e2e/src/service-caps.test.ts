/**
 * The capability bounding set of the systemd unit we ship (packaging/systemd/ocs-node.service)
 * is enough for what the daemon does on this host: the real daemon, started under exactly that
 * bounding set and umask (read from the unit file, applied with setpriv and the shell), reserves a space on fscrypt,
 * loads an image, runs a container in the space's user namespace and destroys the space. A
 * capability dropped from the unit that the daemon or its engines need fails this here, not
 * first on an operator's node. (The guest tier runs the unit itself under systemd.)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { bridgeName } from '@ocs/host';
import { buildBusyboxImage } from '@ocs/host/testing';
import { generatePrivateKey } from '@ocs/protocol';
import { daemonClient, daemonDir, kill9, startDaemon, type Daemon } from './daemon-process.js';
import { hostFirewall, removeSpaceRules } from './space-rules.js';

const MiB = 1024 ** 2;
const UNIT = fileURLToPath(new URL('../../packaging/systemd/ocs-node.service', import.meta.url));

/** The unit's CapabilityBoundingSet=, as setpriv names them (`sys_admin`). */
function unitCapabilities(): string[] {
  const line = readFileSync(UNIT, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('CapabilityBoundingSet='));
  assert.ok(line, 'the unit sets CapabilityBoundingSet=');
  return line
    .slice('CapabilityBoundingSet='.length)
    .trim()
    .split(/\s+/)
    .map((c) => c.replace(/^CAP_/, '').toLowerCase());
}

/** The unit's UMask=. */
function unitUmask(): string {
  const m = /^UMask=([0-7]{3,4})$/m.exec(readFileSync(UNIT, 'utf8'));
  assert.ok(m, 'the unit sets UMask=');
  return m[1]!;
}

function capBnd(pid: string): string {
  return /CapBnd:\s+(\S+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]!;
}

/** The capability names of a CapBnd mask, as `capsh --decode` prints them. */
function decode(mask: string): string[] {
  const out = execFileSync('capsh', [`--decode=${mask}`], { encoding: 'utf8' }).trim();
  return out
    .slice(out.indexOf('=') + 1)
    .split(',')
    .filter(Boolean)
    .map((c) => c.replace(/^cap_/, ''));
}

test("the daemon runs a space's container under exactly the unit's capability bounding set", async () => {
  const home = daemonDir('caps');
  const { tag } = home;
  const runRoot = `/run/ocs-c${tag}`;
  const config = home.nodeConfig({ uidFirst: 700_000, storageBytes: 1024 * MiB, containersRunRoot: runRoot });
  const configPath = home.write(config);
  const nodeTableWasThere = await hostFirewall().installed();
  const caps = unitCapabilities();
  let imagePath: string | undefined;
  let d: Daemon | undefined;
  let spaceId: string | undefined;
  try {
    imagePath = await buildBusyboxImage(`ocs-e2e-tmp/busybox-${randomBytes(5).toString('hex')}:latest`);
    d = await startDaemon(configPath, 60_000, {
      // The unit's UMask= too: what the daemon and its engines create must not depend on 022.
      prefix: [
        '/bin/sh',
        '-c',
        `umask ${unitUmask()} && exec "$@"`,
        'ocs-unit',
        'setpriv',
        `--bounding-set=-all,${caps.map((c) => `+${c}`).join(',')}`,
        '--',
      ],
    });
    // What the daemon holds is the unit's set, less what this machine withholds from us all.
    const mine = decode(capBnd('self'));
    assert.deepEqual(
      decode(capBnd(String(d.child.pid))).sort(),
      caps.filter((x) => mine.includes(x)).sort(),
      "the daemon's bounding set is the unit's",
    );
    const umask = /Umask:\s+([0-7]+)/.exec(readFileSync(`/proc/${d.child.pid}/status`, 'utf8'))![1]!;
    assert.equal(parseInt(umask, 8), parseInt(unitUmask(), 8), "the daemon's umask is the unit's");

    const owner = generatePrivateKey();
    const c = daemonClient(config.stateDir, d, {
      roles: ['spaces', 'storage', 'containers', 'farmer'],
      org: 'org-caps',
      owner,
    });
    const { space } = await c.spaces.reserve({
      resources: { cpuMillicores: 500, memoryBytes: 256 * MiB, storageBytes: 128 * MiB },
      leaseSeconds: 600,
    });
    spaceId = space.id;
    const s = c.space(space.id);
    await s.images.load('busybox', { path: imagePath });
    const said = `bounded-${randomBytes(6).toString('hex')}`;
    await s.containers.create({
      name: 'hello',
      image: 'busybox',
      command: ['sh', '-c', `echo ${said.slice(0, 8)}"${said.slice(8)}"; id -u`],
      cpuMillicores: 100,
      memoryBytes: 16 * MiB,
    });
    const end = Date.now() + 60_000;
    while ((await s.containers.get('hello')).state !== 'exited') {
      assert.ok(Date.now() < end, 'the container did not exit');
      await new Promise((r) => setTimeout(r, 200));
    }
    const logs = (await s.containers.logs('hello', { tail: 10 })).text;
    assert.match(logs, new RegExp(said), "the container ran and its output is in the space's log");
    assert.match(logs, /^0$/m, "the container's root (its own user namespace)");
    await c.spaces.destroy(space.id);
    spaceId = undefined;
  } finally {
    if (d) await kill9(d);
    await home.remove();
    rmSync(runRoot, { recursive: true, force: true });
    if (spaceId && existsSync(`/sys/class/net/${bridgeName(spaceId)}`))
      execFileSync('ip', ['link', 'delete', bridgeName(spaceId)]);
    await removeSpaceRules(spaceId ? [spaceId] : [], nodeTableWasThere).catch(() => undefined);
    if (imagePath) rmSync(dirname(imagePath), { recursive: true, force: true });
  }
});
