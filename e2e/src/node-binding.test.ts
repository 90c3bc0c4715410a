/**
 * Issue 23, item 10: a signed request names the node it is for. Two real nodes listen on the
 * same port (8443) in two network namespaces, so both answer to `localhost:8443`, trust the same
 * issuer and accept the same cluster audience: exactly what nodes made from one cloud image
 * share. A reservation the owner signed for node A, replayed to node B by whoever relays it, is
 * refused there (`misdirected_request`); the same request signed for B is made (the control:
 * B accepts the name, the token and the owner, only the node differs).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPairSync, randomBytes, X509Certificate } from 'node:crypto';
import { pinnedAgent, send } from '@ocs/client';
import {
  NODE_HEADER,
  contentDigest,
  generatePrivateKey,
  mintToken,
  signRequest,
  type Ed25519PrivateKey,
} from '@ocs/protocol';
import { kill9, startDaemon, type Daemon } from './daemon-process.js';

const MiB = 1024 ** 2;
const PORT = 8443;
const ISSUER = 'https://idp.node-binding.test';
const CLUSTER = 'cluster-nb';

interface Node {
  ns: string;
  /** The node's address on the test's side of its veth pair (TCP goes here; Host says localhost). */
  address: string;
  stateDir: string;
  daemon?: Daemon;
  fingerprint?: string;
}

interface Answer {
  error?: { code: string };
  space?: { id: string };
  spaces?: { id: string }[];
}

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();

test('a reservation signed for one node is refused by another that shares its name, port, issuer and audience', async () => {
  const tag = randomBytes(3).toString('hex');
  const dir = mkdtempSync(join(tmpdir(), `ocs-nb-${tag}-`));
  chmodSync(dir, 0o711);
  const issuer = generateKeyPairSync('ed25519');
  const jwk = { ...issuer.publicKey.export({ format: 'jwk' }), kid: 'nb1', alg: 'EdDSA', use: 'sig' };
  const octet = 100 + (parseInt(tag, 16) % 100);
  const nodes: Node[] = ['a', 'b'].map((n, i) => ({
    ns: `ocs-nb-${tag}-${n}`,
    address: `10.${octet}.${i}.2`,
    stateDir: join(dir, n, 'state'),
  }));
  const veths: string[] = [];
  /** Spaces made, by node, until destroyed through the API. */
  const made: [Node, string][] = [];
  try {
    for (const [i, n] of nodes.entries()) {
      ip('netns', 'add', n.ns);
      ip('-n', n.ns, 'link', 'set', 'lo', 'up');
      // A veth pair per node: the test reaches each node's port 8443 at its own address.
      const host = `nb${tag}${i}h`;
      veths.push(host);
      ip('link', 'add', host, 'type', 'veth', 'peer', 'name', `nb${tag}${i}n`, 'netns', n.ns);
      ip('addr', 'add', `10.${octet}.${i}.1/30`, 'dev', host);
      ip('link', 'set', host, 'up');
      ip('-n', n.ns, 'addr', 'add', `${n.address}/30`, 'dev', `nb${tag}${i}n`);
      ip('-n', n.ns, 'link', 'set', `nb${tag}${i}n`, 'up');
      const config = {
        stateDir: n.stateDir,
        runDir: join(dir, `${i}`, 'run'),
        cluster: CLUSTER,
        // The same port on both: each node answers to localhost:8443 in its own namespace.
        listen: { host: '0.0.0.0', port: PORT },
        storage: { backend: 'fscrypt', root: join(dir, `${i}`, 'storage') },
        cgroups: { parent: `ocs-nb-${tag}-${i}.slice` },
        capacity: { farmerReserve: { cpuMillicores: 0, memoryBytes: 0, storageBytes: 0 }, storageBytes: 512 * MiB },
        spaces: { uidBase: 600_000 + (parseInt(tag, 16) % 100) * 2000 + i * 1000, uidCount: 1000, reserveIds: false },
        auth: { devIssuer: false, issuers: [{ issuer: ISSUER, jwks: { keys: [jwk] } }] },
        workloads: { containers: { enabled: false }, libvirt: { enabled: false } },
        log: { level: 'warn' },
      };
      const path = join(dir, `config-${i}.json`);
      writeFileSync(path, JSON.stringify(config));
      n.daemon = await startDaemon(path, 30_000, { prefix: ['nsenter', `--net=/run/netns/${n.ns}`] });
      n.fingerprint = new X509Certificate(readFileSync(join(n.stateDir, 'tls', 'cert.pem'))).fingerprint256;
    }
    const [a, b] = nodes as [Node, Node];
    assert.notEqual(a.fingerprint, b.fingerprint);

    const owner = generatePrivateKey();
    const token = () =>
      mintToken({
        privateKey: issuer.privateKey,
        kid: 'nb1',
        alg: 'EdDSA',
        issuer: ISSUER,
        audience: CLUSTER,
        subject: 'owner',
        org: 'org-nb',
        roles: ['spaces'],
      });
    /**
     * A request as the owner signs it for `https://localhost:8443` on the node `signedFor`
     * (unsigned when undefined), sent as it is to `to`, pinned to its certificate.
     */
    const call = async (to: Node, method: string, path: string, o: { json?: unknown; signedFor?: Node } = {}) => {
      const body = o.json === undefined ? undefined : new TextEncoder().encode(JSON.stringify(o.json));
      const headers: Record<string, string> = {
        host: `localhost:${PORT}`,
        authorization: `Bearer ${await token()}`,
      };
      if (body) {
        headers['content-type'] = 'application/json';
        headers['content-length'] = String(body.length);
        headers['content-digest'] = contentDigest(body);
      }
      if (o.signedFor) {
        headers[NODE_HEADER] = o.signedFor.fingerprint!;
        Object.assign(headers, await sign(owner, method, `https://localhost:${PORT}${path}`, headers));
      }
      const agent = pinnedAgent({ fingerprint: to.fingerprint! });
      try {
        const res = await send(agent, {
          url: new URL(`https://${to.address}:${PORT}${path}`),
          method,
          headers,
          ...(body ? { body } : {}),
          timeoutMs: 60_000,
        });
        const text = res.body.toString('utf8');
        return { status: res.status, body: (text ? JSON.parse(text) : {}) as Answer };
      } finally {
        agent.destroy();
      }
    };
    const reservation = {
      ownerKey: owner.publicKey.toBase64url(),
      resources: { cpuMillicores: 100, memoryBytes: 64 * MiB, storageBytes: 16 * MiB },
      leaseSeconds: 600,
    };
    const spacesOn = async (n: Node) => {
      const r = await call(n, 'GET', '/v1/spaces');
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return (r.body.spaces ?? []).map((x) => x.id);
    };

    // Signed for A and sent to A: made.
    const onA = await call(a, 'POST', '/v1/spaces', { json: reservation, signedFor: a });
    assert.equal(onA.status, 201, JSON.stringify(onA.body));
    made.push([a, onA.body.space!.id]);
    // Signed for A, relayed to B: refused before anything is made.
    const relayed = await call(b, 'POST', '/v1/spaces', { json: reservation, signedFor: a });
    assert.equal(relayed.status, 421, JSON.stringify(relayed.body));
    assert.equal(relayed.body.error?.code, 'misdirected_request');
    assert.deepEqual(await spacesOn(b), [], 'nothing was made on B');
    // The control: B takes the same name, token and owner when the owner signed for B.
    const onB = await call(b, 'POST', '/v1/spaces', { json: reservation, signedFor: b });
    assert.equal(onB.status, 201, JSON.stringify(onB.body));
    made.push([b, onB.body.space!.id]);
    assert.deepEqual(await spacesOn(b), [onB.body.space!.id]);
    // A destroy A's owner signed is refused by B for B's own space of the same owner, and done by A.
    const wrong = await call(b, 'DELETE', `/v1/spaces/${onB.body.space!.id}`, { signedFor: a });
    assert.equal(wrong.status, 421, JSON.stringify(wrong.body));
    for (const [n, id] of made.splice(0)) {
      const r = await call(n, 'DELETE', `/v1/spaces/${id}`, { signedFor: n });
      assert.equal(r.status, 204, JSON.stringify(r.body));
    }
  } finally {
    for (const n of nodes) if (n.daemon) await stop(n.daemon);
    // What a failed run left (a space the relayed request made, say): the storage and cgroups
    // under this test's own directories and slices.
    const { createStorageDriver, detectCgroups } = await import('@ocs/host');
    const cgroups = await detectCgroups();
    for (const [i, n] of nodes.entries()) {
      const root = join(dir, `${i}`, 'storage');
      const images = existsSync(join(root, 'images')) ? readdirSync(join(root, 'images')) : [];
      const storage = await createStorageDriver({ backend: 'fscrypt', root });
      for (const f of images) if (f.endsWith('.img')) await storage.destroy(f.slice(0, -4)).catch(() => undefined);
      await storage.close();
      const parent = `ocs-nb-${tag}-${i}.slice`;
      for (const c of await cgroups.children(parent).catch(() => [] as string[]))
        await cgroups.destroy(`${parent}/${c}`).catch(() => undefined);
      await cgroups.destroy(parent).catch(() => undefined);
      try {
        ip('netns', 'del', n.ns);
      } catch {
        /* never made */
      }
    }
    for (const v of veths) {
      try {
        ip('link', 'del', v);
      } catch {
        /* gone with its namespace */
      }
    }
    rmSync(dir, { recursive: true, force: true });
  }
});

function sign(owner: Ed25519PrivateKey, method: string, url: string, headers: Record<string, string>) {
  return signRequest({ method, url, headers }, { keyId: owner.publicKey.fingerprint(), sign: (m) => owner.sign(m) });
}

/** SIGTERM, so the daemon locks its spaces and detaches their storage; SIGKILL after 30 s. */
async function stop(d: Daemon): Promise<void> {
  if (d.child.exitCode !== null || d.child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => d.child.once('exit', () => resolve()));
  d.child.kill('SIGTERM');
  const timer = setTimeout(() => void kill9(d), 30_000);
  await exited;
  clearTimeout(timer);
}
