/**
 * For tests only: the daemon's Koa app in this process, over an in-memory database, with host
 * drivers that do nothing and a test issuer. Requests go straight into `app.callback()` (no
 * port, no TLS), signed for `https://<authority>` exactly as a client of the real node signs.
 */
import { ReservationKeys } from '#src/spaces/reservation-keys.js';
import { IncomingMessage, ServerResponse } from 'node:http';
import { Duplex } from 'node:stream';
import { generateKeyPairSync, sign as nodeSign, type KeyObject } from 'node:crypto';
import type { CgroupDriver, StorageDriver } from '@ocs/host';
import {
  authoritySet,
  cacheTokens,
  contentDigest,
  createTokenVerifier,
  mintToken,
  NODE_HEADER,
  parsePublicKey,
  signRequest,
  type Ed25519PublicKey,
  type Role,
} from '@ocs/protocol';
import { AuditLog, Ledger, SpacesRepo, openDatabase, openNonceStore, type Database } from '#src/state/index.js';
import { RefusalLog } from '#src/state/refusals.js';
import { SpaceService } from '#src/spaces/service.js';
import { createMetrics } from '#src/metrics.js';
import { createLogger } from '#src/logger.js';
import { ManualClock } from './clock.js';
import { newId } from '#src/ids.js';
import { createApp } from '#src/http/app.js';

const MiB = 1024 * 1024;
export const NODE_ID = 'node-test';
/** The test node's certificate fingerprint, which signed requests name (`ocs-node`). */
export const NODE_FINGERPRINT = Array.from({ length: 32 }, (_, i) =>
  (i * 7).toString(16).padStart(2, '0').toUpperCase(),
).join(':');
const ISSUER = 'https://issuer.test';

/** Does nothing, successfully: the app's logic is under test, not the host. */
function inert<T>(props: Record<string, unknown> = {}): T {
  return new Proxy(
    {},
    {
      get: (_t, prop: string) => (prop in props ? props[prop] : prop === 'then' ? undefined : async () => undefined),
    },
  ) as T;
}

/** A cgroup driver that does nothing, successfully, except `destroy`, which runs `destroy`. */
export function cgroupsDestroying(destroy: () => Promise<void>): CgroupDriver {
  return inert<CgroupDriver>({ destroy });
}

/** An owner key held as a Node KeyObject (fast to sign with in floods). */
export interface TestKey {
  public: Ed25519PublicKey;
  private: KeyObject;
}

export function newKey(): TestKey {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const x = publicKey.export({ format: 'jwk' }).x!;
  return { public: parsePublicKey(x), private: privateKey };
}

export interface Reply {
  status: number;
  type: string;
  body: { error?: { code: string; message: string } } & Record<string, unknown>;
  text: string;
}

export interface TestApp {
  db: Database;
  audit: AuditLog;
  refusals: RefusalLog;
  repo: SpacesRepo;
  clock: ManualClock;
  metrics: ReturnType<typeof createMetrics>;
  /** host:port, as sent in Host. */
  authority: string;
  token(roles: Role[], o?: { org?: string; sub?: string }): Promise<string>;
  /** Records an active space of `org` bound to `owner`. */
  addSpace(org: string, owner: TestKey): string;
  /** One request. `path` goes on the wire as given (already percent-encoded). */
  send(
    method: string,
    path: string,
    o?: { token?: string; json?: unknown; sign?: TestKey; headers?: Record<string, string> },
  ): Promise<Reply>;
  close(): Promise<void>;
}

export async function startTestApp(
  o: {
    uidCount?: number;
    allocatable?: { cpuMillicores: number; memoryBytes: number; storageBytes: number };
    /** A cgroup driver of the test's own (e.g. one that records or slows teardown). */
    cgroups?: CgroupDriver;
    /** The storage's lock (e.g. one that fails as fscrypt does while a file is open). */
    lockStorage?: (id: string) => Promise<void>;
    /** Stopping a space's workloads (e.g. one held in a stop grace). */
    stopWorkloads?: (id: string) => Promise<void>;
  } = {},
): Promise<TestApp> {
  const ZERO = { cpuMillicores: 0, memoryBytes: 0, storageBytes: 0 };
  const clock = new ManualClock(Date.UTC(2030, 0, 1));
  const logger = createLogger({ level: 'silent' });
  const db = openDatabase(':memory:');
  const repo = new SpacesRepo(db, { uidBase: 500_000, uidCount: o.uidCount ?? 1000 });
  const ledger = new Ledger(db, {
    allocatable: o.allocatable ?? { cpuMillicores: 8000, memoryBytes: 8192 * MiB, storageBytes: 8192 * MiB },
    clock,
  });
  const audit = new AuditLog(db, { clock });
  const refusals = new RefusalLog({ audit, clock, logger });
  const metrics = createMetrics({
    spacesByState: () => ({}),
    runningProcesses: () => 0,
    capacity: () => ({ allocatable: ZERO, used: ZERO }),
  });
  refusals.count = (code) => metrics.refusals.inc({ code });

  const issuerKey = generateKeyPairSync('ed25519');
  const jwk = { ...issuerKey.publicKey.export({ format: 'jwk' }), kid: 'k1', alg: 'EdDSA', use: 'sig' };
  const verifier = cacheTokens(
    createTokenVerifier({
      issuers: [{ issuer: ISSUER, keys: { keys: [jwk] } as never }],
      audiences: [NODE_ID],
      maxLifetimeSeconds: 900,
      clockToleranceSeconds: 5,
    }),
  );
  const service = new SpaceService({
    repo,
    ledger,
    audit,
    cgroups: o.cgroups ?? inert<CgroupDriver>(),
    storage: inert<StorageDriver>({ kind: 'fscrypt', ...(o.lockStorage ? { lock: o.lockStorage } : {}) }),
    processes: inert(),
    workloads: inert(o.stopWorkloads ? { stopAll: o.stopWorkloads } : {}),
    logger,
    clock,
    unlockIdentity: 'unused',
    cgroupParent: 'ocs-test.slice',
    apiCpuMillicores: 100,
    graceSeconds: 60,
    maxLeaseSeconds: 86_400,
    workloadRows: inert(),
    remapFiles: inert<{ f(): Promise<void> }>().f,
  });
  const app = createApp({
    authorities: authoritySet(['node.test:8443'], 8443),
    tlsFingerprint: NODE_FINGERPRINT,
    service,
    archiveHead: (row) => ({
      workloads: [],
      placement: { uid: row.uid, workloadUid: row.uid + 1000, subordinateIds: null, subnet: null },
    }),
    // No move reaches another node in these tests.
    mover: inert(),
    drainer: inert(),
    peers: [],
    repo,
    audit,
    refusals,
    verifyToken: (t) => verifier(t, { now: new Date(clock.now()) }),
    nonceStore: openNonceStore(db),
    reservationKeys: new ReservationKeys(db, clock, (id) => repo.get(id) !== undefined),
    clock,
    logger,
    nodeInfo: () => {
      throw new Error('not in these tests');
    },
    forwarder: {
      forward: async () => {
        throw new Error('not in these tests');
      },
    },
    registry: metrics.registry,
    metrics: metrics.http,
  });

  const handler = app.callback();
  const authority = 'node.test:8443';

  return {
    db,
    audit,
    refusals,
    repo,
    clock,
    metrics,
    authority,
    token: (roles, t = {}) =>
      mintToken({
        privateKey: issuerKey.privateKey,
        kid: 'k1',
        alg: 'EdDSA',
        issuer: ISSUER,
        audience: NODE_ID,
        subject: t.sub ?? 'tester',
        org: t.org ?? 'org-a',
        roles,
        now: new Date(clock.now()),
      }),
    addSpace(org, owner) {
      const id = newId('sp');
      ledger.reserve({
        id,
        org,
        ownerKey: owner.public.toBase64url(),
        ownerFingerprint: owner.public.fingerprint(),
        cpuMillicores: 100,
        memoryBytes: 64 * MiB,
        storageBytes: 64 * MiB,
        state: 'active',
        leaseExpiresAt: clock.now() + 3_600_000,
        graceUntil: clock.now() + 7_200_000,
      });
      return id;
    },
    async send(method, path, s = {}) {
      const body = s.json === undefined ? undefined : new TextEncoder().encode(JSON.stringify(s.json));
      const headers: Record<string, string> = { host: authority, ...s.headers };
      if (s.token !== undefined) headers.authorization = `Bearer ${s.token}`;
      if (body) {
        headers['content-type'] = 'application/json';
        headers['content-length'] = String(body.length);
        headers['content-digest'] = await contentDigest(body);
      }
      if (s.sign) {
        const key = s.sign;
        headers[NODE_HEADER] ??= NODE_FINGERPRINT;
        Object.assign(
          headers,
          await signRequest(
            { method, url: `https://${authority}${path}`, headers },
            {
              keyId: key.public.fingerprint(),
              sign: (m) => new Uint8Array(nodeSign(null, m, key.private)),
              created: Math.floor(clock.now() / 1000),
            },
          ),
        );
      }
      return inject(handler, method, path, headers, body);
    },
    async close() {
      db.close();
    },
  };
}

/**
 * One request through a Koa callback, without a socket: a message with its body already
 * complete, and a response whose bytes are collected from a stand-in connection.
 */
function inject(
  handler: (req: IncomingMessage, res: ServerResponse) => Promise<void>,
  method: string,
  path: string,
  headers: Record<string, string>,
  body: Uint8Array | undefined,
): Promise<Reply> {
  return new Promise((resolve) => {
    const out: Buffer[] = [];
    const socket = new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        out.push(chunk);
        cb();
      },
    });
    const req = new IncomingMessage(socket as never);
    req.method = method;
    req.url = path;
    req.headers = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
    req.rawHeaders = Object.entries(headers).flat();
    if (body) req.push(Buffer.from(body));
    req.push(null);
    // What the HTTP parser sets once a message is whole; without it, reading to the end aborts.
    req.complete = true;
    const res = new ServerResponse(req);
    res.assignSocket(socket as never);
    res.on('finish', () => {
      const raw = Buffer.concat(out).toString('utf8');
      const text = raw.slice(raw.indexOf('\r\n\r\n') + 4);
      let parsed: Reply['body'] = {};
      try {
        parsed = JSON.parse(text) as Reply['body'];
      } catch {
        // Left empty: the caller asserts on `type` and `text`.
      }
      resolve({ status: res.statusCode, type: String(res.getHeader('content-type') ?? ''), body: parsed, text });
    });
    void handler(req, res);
  });
}
