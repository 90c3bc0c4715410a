/**
 * The reservation daemon end to end, against the real kernel: cgroups, fscrypt images on loop
 * devices, sandboxed space processes, and the owner's key at every step.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  generatePrivateKey,
  unwrapKey,
  type CreateSpaceResponse,
  type Space,
  type Ed25519PrivateKey,
} from '@ocs/protocol';
import { spaceCgroupLayout } from '@ocs/node-daemon';
import { startTestNode, GiB, MiB, type TestNode, lockSpace } from './harness.js';

let t: TestNode;
before(async () => {
  t = await startTestNode();
});
after(async () => {
  await t?.stop();
});

const resources = { cpuMillicores: 500, memoryBytes: 256 * MiB, storageBytes: 64 * MiB, pids: 256 };

async function reserve(owner: Ed25519PrivateKey, org = 'org-a', res = resources) {
  const c = t.client({ roles: ['spaces'], org, owner });
  return c.call<CreateSpaceResponse>('POST', '/v1/spaces', {
    ownerKey: owner.publicKey.toOpenSsh('owner@test'),
    resources: res,
    leaseSeconds: 600,
  });
}

function v1Controller(ctrl: string, path: string, file: string): string {
  return readFileSync(join('/sys/fs/cgroup', ctrl, path, file), 'utf8').trim();
}

test('GET /v1/node needs a token and reports identity, fingerprint, unlock key and capacity', async () => {
  const anon = await t.client({ token: async () => '' }).send('GET', '/v1/node');
  assert.equal(anon.status, 401);
  assert.equal((anon.body as { error: { code: string } }).error.code, 'token_missing');
  const info = (
    await t
      .client({ roles: ['monitor'] })
      .call<{ tlsFingerprint: string; unlockRecipient: string; capacity: { allocatable: { memoryBytes: number } } }>(
        'GET',
        '/v1/node',
      )
  ).body;
  assert.equal(info.tlsFingerprint, t.node.tls.fingerprint);
  assert.match(info.unlockRecipient, /^age1[0-9a-z]+$/);
  assert.equal(info.capacity.allocatable.memoryBytes, 4 * GiB);
});

test('a space is reserved on real cgroups and encrypted storage; only its owner can open the key', async () => {
  const owner = generatePrivateKey();
  const res = await reserve(owner);
  assert.equal(res.status, 201);
  const { space, wrappedKey } = res.body;
  assert.equal(space.state, 'active');
  assert.equal(space.ownerFingerprint, owner.publicKey.fingerprint());

  // Kernel files, not our records.
  const layout = spaceCgroupLayout(t.config.cgroups.parent, space.id);
  if (t.cgroups.version === 'v1') {
    assert.equal(Number(v1Controller('memory', layout.space, 'memory.limit_in_bytes')), 256 * MiB);
    assert.equal(v1Controller('cpu', layout.workloads, 'cpu.cfs_quota_us'), '50000');
    const api = t.config.spaces.apiCpuMillicores;
    assert.equal(v1Controller('cpu', layout.api, 'cpu.cfs_quota_us'), String(api * 100));
    assert.equal(v1Controller('cpu', layout.space, 'cpu.cfs_quota_us'), String((500 + api) * 100));
    assert.equal(Number(v1Controller('memory', layout.api, 'memory.limit_in_bytes')), 256 * MiB);
    assert.equal(v1Controller('pids', layout.space, 'pids.max'), '256');
  }
  const info = await t.storage.info(space.id);
  assert.equal(info.unlocked, true);
  assert.ok(info.sizeBytes <= 64 * MiB);

  // The wrapped key opens with the owner's key: with ours, and with the stock age CLI.
  const key = await unwrapKey(wrappedKey, owner);
  assert.equal(key.length, 32);
  const dir = mkdtempSync(join(tmpdir(), 'ocs-age-'));
  try {
    writeFileSync(join(dir, 'id'), owner.toOpenSshPrivate(), { mode: 0o600 });
    writeFileSync(join(dir, 'wrapped.age'), wrappedKey);
    const viaCli = execFileSync('age', ['-d', '-i', join(dir, 'id'), join(dir, 'wrapped.age')]);
    assert.deepEqual(new Uint8Array(viaCli), key);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const other = generatePrivateKey();
  await assert.rejects(unwrapKey(wrappedKey, other), (e: { code?: string }) => e.code === 'unwrap_failed');
});

test('a reservation retried under its idempotency key returns the same space, never a second', async () => {
  const owner = generatePrivateKey();
  const c = t.client({ roles: ['spaces'], owner });
  const body = { ownerKey: owner.publicKey.toBase64url(), resources, leaseSeconds: 600 };
  const headers = { 'idempotency-key': `e2e-${randomBytes(12).toString('hex')}` };
  const before = t.node.repo.list({}).length;
  // The second arrives while the first is still being made (cgroups, storage): it waits for it.
  const [a, b] = await Promise.all([
    c.call<CreateSpaceResponse>('POST', '/v1/spaces', body, { headers }),
    c.call<CreateSpaceResponse>('POST', '/v1/spaces', body, { headers }),
  ]);
  const again = await c.call<CreateSpaceResponse>('POST', '/v1/spaces', body, { headers });
  assert.equal(b.body.space.id, a.body.space.id);
  assert.equal(again.body.space.id, a.body.space.id);
  assert.equal(again.body.wrappedKey, a.body.wrappedKey);
  assert.equal(again.headers['idempotent-replayed'], 'true');
  assert.equal(t.node.repo.list({}).length, before + 1);
  // The same key for another request is refused, and reserves nothing.
  const other = await c.send('POST', '/v1/spaces', { ...body, leaseSeconds: 601 }, { headers });
  assert.equal(other.status, 409);
  assert.equal((other.body as { error: { code: string } }).error.code, 'conflict');
  const bad = await c.send('POST', '/v1/spaces', body, { headers: { 'idempotency-key': 'short' } });
  assert.equal((bad.body as { error: { code: string } }).error.code, 'invalid_request');
  assert.equal(t.node.repo.list({}).length, before + 1);
  await t.client({ roles: ['spaces'], owner }).call('DELETE', `/v1/spaces/${a.body.space.id}`);
});

test('reserving needs role spaces and proof of possession of the bound key', async () => {
  const owner = generatePrivateKey();
  const body = { ownerKey: owner.publicKey.toBase64url(), resources, leaseSeconds: 600 };
  const monitor = await t.client({ roles: ['monitor'], owner }).send('POST', '/v1/spaces', body);
  assert.equal((monitor.body as { error: { code: string } }).error.code, 'role_missing');
  const unsigned = await t.client({ roles: ['spaces'] }).send('POST', '/v1/spaces', body);
  assert.equal((unsigned.body as { error: { code: string } }).error.code, 'signature_missing');
  const someoneElse = await t
    .client({ roles: ['spaces'], owner: generatePrivateKey() })
    .send('POST', '/v1/spaces', body);
  assert.equal((someoneElse.body as { error: { code: string } }).error.code, 'not_owner');
  const rsaJwk = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'jwk' });
  const rsa = await t.client({ roles: ['spaces'], owner }).send('POST', '/v1/spaces', { ...body, ownerKey: rsaJwk });
  const rsaCode = (rsa.body as { error: { code: string } }).error.code;
  assert.equal(rsaCode, 'key_unsupported');
});

test('the space process answers its owner only, runs sandboxed in the space cgroup', async () => {
  const owner = generatePrivateKey();
  const { space } = (await reserve(owner)).body;
  const status = await t
    .client({ roles: ['monitor'], owner })
    .call<{ spaceId: string }>('GET', `${space.apiBase}/status`);
  assert.equal(status.body.spaceId, space.id);

  // The supervisor's child is the sandbox (bwrap, root); the space's own code is the Node
  // process inside it, in the same cgroup.
  const layout = spaceCgroupLayout(t.config.cgroups.parent, space.id);
  const inCgroup = await t.cgroups.processes(layout.api);
  assert.ok(inCgroup.includes(t.node.supervisor.pidOf(space.id)!), 'the sandbox is in the api cgroup');
  const pid = inCgroup.find((p) => readlinkSync(`/proc/${p}/exe`) === process.execPath)!;
  assert.ok(pid, `the space's Node process among ${inCgroup.join(',')}`);
  const procStatus = readFileSync(`/proc/${pid}/status`, 'utf8');
  const uid = Number(/^Uid:\s+(\d+)/m.exec(procStatus)![1]);
  assert.ok(uid >= t.config.spaces.uidBase && uid < t.config.spaces.uidBase + t.config.spaces.uidCount, `uid ${uid}`);
  assert.match(procStatus, /^NoNewPrivs:\s+1$/m);
  assert.match(procStatus, /^CapEff:\s+0000000000000000$/m);
  assert.match(procStatus, /^CapBnd:\s+0000000000000000$/m);

  // Unsigned, another owner's signature, another org's token: refused for the right reason.
  const unsigned = await t.client({ roles: ['monitor'] }).send('GET', `${space.apiBase}/status`);
  assert.equal((unsigned.body as { error: { code: string } }).error.code, 'signature_missing');
  const intruder = await t
    .client({ roles: ['monitor'], owner: generatePrivateKey() })
    .send('GET', `${space.apiBase}/status`);
  assert.equal((intruder.body as { error: { code: string } }).error.code, 'not_owner');
  const otherOrg = await t.client({ roles: ['monitor'], org: 'org-b', owner }).send('GET', `${space.apiBase}/status`);
  assert.equal((otherOrg.body as { error: { code: string } }).error.code, 'not_found');
});

test('owner B signing for space A is refused on every owner route', async () => {
  const a = generatePrivateKey();
  const b = generatePrivateKey();
  const { space } = (await reserve(a)).body;
  await reserve(b);
  const asB = t.client({ roles: ['spaces', 'storage', 'monitor'], owner: b });
  for (const [method, path, body] of [
    ['POST', `/v1/spaces/${space.id}/lock`, {}],
    ['POST', `/v1/spaces/${space.id}/unlock`, { sealedKey: 'x' }],
    ['POST', `/v1/spaces/${space.id}/rotate-key`, { sealedKey: 'x' }],
    ['DELETE', `/v1/spaces/${space.id}`, undefined],
    ['GET', `/v1/spaces/${space.id}/api/status`, undefined],
  ] as const) {
    const r = await asB.send(method, path, body);
    assert.equal((r.body as { error: { code: string } }).error.code, 'not_owner', `${method} ${path}`);
  }
  assert.equal(
    (await t.client({ roles: ['monitor'] }).call<Space>('GET', `/v1/spaces/${space.id}`)).body.state,
    'active',
  );
});

test('a replayed signed request is refused', async () => {
  const owner = generatePrivateKey();
  const { space } = (await reserve(owner)).body;
  // Capture one signed lock request and send its exact headers twice.
  const { headers, body, token } = await t.captureSigned(
    owner,
    'POST',
    `/v1/spaces/${space.id}/lock`,
    ['spaces', 'storage'],
    {},
  );
  const raw = t.client({ token: async () => token });
  const first = await raw.send('POST', `/v1/spaces/${space.id}/lock`, undefined, {
    raw: body!,
    contentType: 'application/json',
    headers,
    sign: false,
  });
  assert.equal(first.status, 200, JSON.stringify(first.body));
  const again = await raw.send('POST', `/v1/spaces/${space.id}/lock`, undefined, {
    raw: body!,
    contentType: 'application/json',
    headers,
    sign: false,
  });
  assert.equal((again.body as { error: { code: string } }).error.code, 'replayed');
});

test('lock hides the data: a marker is nowhere on the raw image; unlock with the sealed key restores it', async () => {
  const owner = generatePrivateKey();
  const { space, wrappedKey } = (await reserve(owner)).body;
  const info = await t.storage.info(space.id);
  const marker = `OCS-MARKER-${space.id}-${Date.now()}`;
  writeFileSync(join(info.mountpoint, 'marker.txt'), marker);
  execFileSync('sync');
  const c = t.client({ roles: ['spaces', 'storage'], owner });
  const locked = await lockSpace(c, space.id);
  assert.equal(locked.state, 'locked');
  assert.equal(existsSync(join(info.mountpoint, 'marker.txt')) && readable(join(info.mountpoint, 'marker.txt')), false);
  const image = join(t.config.storage.root, 'images', `${space.id}.img`);
  if (existsSync(image))
    assert.equal(readFileSync(image).includes(Buffer.from(marker)), false, 'marker found in the raw image');

  // Space API is closed while locked.
  const closed = await t.client({ roles: ['monitor'], owner }).send('GET', `${space.apiBase}/status`);
  assert.equal((closed.body as { error: { code: string } }).error.code, 'space_locked');

  // A wrong key is refused and leaves it locked; the right key, sealed to the node, opens it.
  const wrong = await c.send('POST', `/v1/spaces/${space.id}/unlock`, {
    sealedKey: await t.seal(new Uint8Array(32).fill(7)),
  });
  assert.equal((wrong.body as { error: { code: string } }).error.code, 'unwrap_failed');
  const key = await unwrapKey(wrappedKey, owner);
  const unlocked = await c.call<Space>('POST', `/v1/spaces/${space.id}/unlock`, { sealedKey: await t.seal(key) });
  assert.equal(unlocked.body.state, 'active');
  assert.equal(readFileSync(join((await t.storage.info(space.id)).mountpoint, 'marker.txt'), 'utf8'), marker);
});

function readable(path: string): boolean {
  try {
    readFileSync(path);
    return true;
  } catch {
    return false;
  }
}

test('rotate-key: the new wrapped key unlocks, the old key no longer does', async () => {
  const owner = generatePrivateKey();
  const { space, wrappedKey } = (await reserve(owner)).body;
  const c = t.client({ roles: ['spaces', 'storage'], owner });
  const oldKey = await unwrapKey(wrappedKey, owner);
  const rotated = await c.call<{ wrappedKey: string }>('POST', `/v1/spaces/${space.id}/rotate-key`, {
    sealedKey: await t.seal(oldKey),
  });
  const newKey = await unwrapKey(rotated.body.wrappedKey, owner);
  assert.notDeepEqual(newKey, oldKey);
  await lockSpace(c, space.id);
  const withOld = await c.send('POST', `/v1/spaces/${space.id}/unlock`, { sealedKey: await t.seal(oldKey) });
  assert.equal((withOld.body as { error: { code: string } }).error.code, 'unwrap_failed');
  assert.equal(
    (await c.call<Space>('POST', `/v1/spaces/${space.id}/unlock`, { sealedKey: await t.seal(newKey) })).body.state,
    'active',
  );
});

test('delete removes cgroups, storage and process; the farmer may evict without the owner', async () => {
  const owner = generatePrivateKey();
  const { space } = (await reserve(owner)).body;
  await t.client({ roles: ['monitor'], owner }).call('GET', `${space.apiBase}/status`);
  const layout = spaceCgroupLayout(t.config.cgroups.parent, space.id);
  const del = await t.client({ roles: ['spaces'], owner }).send('DELETE', `/v1/spaces/${space.id}`);
  assert.equal(del.status, 204, JSON.stringify(del.body));
  assert.equal(await t.cgroups.exists(layout.space), false);
  assert.equal((await t.storage.list()).includes(space.id), false);
  assert.equal(t.node.supervisor.isRunning(space.id), false);

  const evicted = (await reserve(generatePrivateKey())).body.space;
  const byFarmer = await t.client({ roles: ['farmer'] }).send('DELETE', `/v1/spaces/${evicted.id}`);
  assert.equal(byFarmer.status, 204);
  const gone = await t.client({ roles: ['monitor'] }).send('GET', `/v1/spaces/${evicted.id}`);
  assert.equal((gone.body as { error: { code: string } }).error.code, 'not_found');
});

test('a spaces caller sees only its org; farmer and monitor see all; nobody sees a key', async () => {
  await reserve(generatePrivateKey(), 'org-list-a');
  await reserve(generatePrivateKey(), 'org-list-b');
  const a = (await t.client({ roles: ['spaces'], org: 'org-list-a' }).call<{ spaces: Space[] }>('GET', '/v1/spaces'))
    .body.spaces;
  assert.ok(a.length >= 1 && a.every((s) => s.org === 'org-list-a'));
  const all = (await t.client({ roles: ['monitor'] }).call<{ spaces: Space[] }>('GET', '/v1/spaces')).body.spaces;
  assert.ok(all.some((s) => s.org === 'org-list-b') && all.some((s) => s.org === 'org-list-a'));
  assert.equal(JSON.stringify(all).includes('BEGIN AGE'), false);
});

test('the audit log records actions and refusals and its chain verifies', async () => {
  const page = (
    await t
      .client({ roles: ['farmer'] })
      .call<{ entries: { action: string; outcome: string; code?: string }[] }>('GET', '/v1/audit?limit=1000')
  ).body;
  assert.ok(page.entries.some((e) => e.action === 'space.create' && e.outcome === 'ok'));
  assert.ok(page.entries.some((e) => e.outcome === 'refused' && e.code === 'not_owner'));
  assert.equal(t.node.audit.verify().ok, true);
  const spacesRole = await t.client({ roles: ['spaces'] }).send('GET', '/v1/audit');
  assert.equal((spacesRole.body as { error: { code: string } }).error.code, 'role_missing');
});

test('bad input gets a stable 4xx code, never a 500', async () => {
  const c = t.client({ roles: ['spaces', 'farmer'], owner: generatePrivateKey() });
  const cases: [string, string, unknown, string][] = [
    ['POST', '/v1/spaces', { nope: 1 }, 'invalid_request'],
    [
      'POST',
      '/v1/spaces',
      { ownerKey: 'garbage-garbage-garbage-garbage-garbage-garbage', resources, leaseSeconds: 600 },
      'key_malformed',
    ],
    ['GET', '/v1/spaces/sp_doesnotexist00000000', undefined, 'not_found'],
    ['GET', '/v1/spaces/..%2f..%2fetc', undefined, 'not_found'],
    ['GET', '/v1/nothing-here', undefined, 'not_found'],
    ['POST', '/v1/spaces/sp_doesnotexist00000000/renew', { leaseSeconds: 'long' }, 'not_found'],
    ['GET', '/v1/audit?limit=-5', undefined, 'invalid_request'],
  ];
  for (const [method, path, body, code] of cases) {
    const r = await c.send(method, path, body);
    assert.ok(r.status >= 400 && r.status < 500, `${method} ${path} -> ${r.status}`);
    assert.equal((r.body as { error: { code: string } }).error.code, code, `${method} ${path}`);
  }
  const notJson = await c.send('POST', '/v1/spaces', undefined, {
    raw: new TextEncoder().encode('{not json'),
    contentType: 'application/json',
  });
  assert.equal((notJson.body as { error: { code: string } }).error.code, 'invalid_request');
  const tooBig = await c.send('POST', '/v1/spaces', undefined, {
    raw: new Uint8Array(200 * 1024),
    contentType: 'application/json',
  });
  assert.equal((tooBig.body as { error: { code: string } }).error.code, 'body_too_large');
});

test('logs never contain a token, a signature or a key', async () => {
  const owner = generatePrivateKey();
  const token = await t.token(['spaces', 'storage', 'monitor']);
  const c = t.client({ token: async () => token, owner });
  const { space, wrappedKey } = (
    await c.call<CreateSpaceResponse>('POST', '/v1/spaces', {
      ownerKey: owner.publicKey.toBase64url(),
      resources,
      leaseSeconds: 600,
    })
  ).body;
  await c.call('GET', `${space.apiBase}/status`);
  await c.send('POST', `/v1/spaces/${space.id}/unlock`, { sealedKey: await t.seal(new Uint8Array(32)) });
  const all = t.logs.join('');
  assert.ok(all.length > 0);
  for (const secret of [
    token,
    token.split('.')[2]!,
    wrappedKey.split('\n')[1]!,
    'BEGIN AGE',
    'AGE-SECRET-KEY',
    'PRIVATE KEY',
    'sig1=:',
  ]) {
    assert.equal(all.includes(secret), false, `log contains ${secret.slice(0, 12)}…`);
  }
});
