/**
 * The farmer-facing API. Every route is an entry of NODE_ROUTES (protocol package): roles,
 * signature kind and schemas come from there; this file binds handlers and the checks that
 * need the daemon's state (which space, whose org, whose key).
 */
import { Readable } from 'node:stream';
import Koa, { type Context } from 'koa';
import Router from '@koa/router';
import {
  ARCHIVE_HEAD_HEADER,
  ARCHIVE_MEDIA_TYPE,
  ArchiveReader,
  archiveHeadDigest,
  createDigestVerifier,
  NODE_ROUTES,
  nodeOperationPart,
  hostFailed,
  isOcsError,
  OcsError,
  SpaceId,
  authorize,
  checkAuthority,
  bearerToken,
  parsePublicKey,
  printable,
  readDelegation,
  verifyDelegation,
  validate,
  precompile,
  type Principal,
  type RouteSpec,
  type NonceStore,
  type TokenVerifier,
  type VerifyPolicy,
  type NodeInfo,
  type AuditPage,
  type Ed25519PublicKey,
  type NodeRoute,
  type NodeRouteId,
  type ParamsOf,
  type QueryOf,
  type HeadersOf,
  type BodyOf,
  validateQuery,
  validateHeaders,
  type TSchema,
} from '@ocs/protocol';
import type { Registry } from 'prom-client';
import type { Logger } from '../logger.js';
import type { Clock } from '../clock.js';
import type { SpaceService } from '../spaces/service.js';
import type { SpacesRepo, AuditLog, SpaceRow } from '../state/index.js';
import type { RefusalLog } from '../state/refusals.js';
import { nodeHashes, nodeVerify } from '../crypto.js';
import { bindCatalogue, errorMiddleware, logResponseErrors, methodNotAllowed, parseJson, readBody } from '@ocs/http';
import type { Forwarder } from './forward.js';
import type { ReservationKeys } from '../spaces/reservation-keys.js';
import { spaceArchive, type RecordedHead } from '../spaces/archive.js';
import { readHead, readRest, requireOwnerSignature, requireNodeSignature } from '../spaces/restore.js';
import type { SpaceMover } from '../spaces/mover.js';
import type { Drainer } from '../spaces/drainer.js';
import type { HttpMetrics } from '../metrics.js';

export interface AppDeps {
  /** This node's own `host:port` names; any other `Host` is refused before anything else. */
  authorities: ReadonlySet<string>;
  /** This node's TLS certificate fingerprint: a signed request must name it (`ocs-node`). */
  tlsFingerprint: string;
  service: SpaceService;
  /** A move's source end. */
  mover: SpaceMover;
  /** Retiring the node. */
  drainer: Drainer;
  /** Identity keys (base64url) of the nodes whose drains this node takes in (`moves.peers`). */
  peers: readonly string[];
  /** What an archive's head says of a space beyond its record: its workloads and its placement on this node. */
  archiveHead(row: SpaceRow): RecordedHead;
  repo: SpacesRepo;
  audit: AuditLog;
  /** Counts every refusal and chains those of known principals, bounded per principal. */
  refusals: RefusalLog;
  verifyToken: TokenVerifier;
  nonceStore: NonceStore;
  /** Idempotency keys of reservations (a retried reserve returns the same space). */
  reservationKeys: ReservationKeys;
  clock: Clock;
  logger: Logger;
  nodeInfo(): NodeInfo;
  forwarder: Forwarder;
  registry: Registry;
  metrics: HttpMetrics;
}

const JSON_LIMIT = 64 * 1024;
const SPACE_API_RE = /^\/v1\/spaces\/([a-z0-9_]{1,64})\/api(?:\/|$)/;
/** The protocol's own id pattern: a path segment that does not match names no space. */
const SPACE_ID_RE = new RegExp(SpaceId.pattern!);

/** One principal, whoever its issuer: what refusal budgets and replay-cache shares count by. */
const principalKey = (p: Principal): string => `token:${p.issuer} ${p.subject}`;

/** A route's handler: the caller checked as its catalogue entry says, and its inputs by their schemas. */
type Handler<R> = (
  ctx: Context,
  input: {
    principal: Principal | undefined;
    /** The space an owner-signed route acts on, and who signed (the key id, or the farmer). */
    row?: SpaceRow;
    actor?: string;
    raw: Uint8Array;
    params: ParamsOf<R>;
    query: QueryOf<R>;
    headers: HeadersOf<R>;
    body: BodyOf<R>;
  },
) => Promise<unknown>;

interface Checked {
  principal: Principal | undefined;
  body: Uint8Array;
  keyId: string | undefined;
}

export function createApp(d: AppDeps): Koa {
  precompile(NODE_ROUTES.flatMap((r: RouteSpec) => [r.params, r.query, r.headers, r.body].filter(isSchema)));
  const app = new Koa();
  logResponseErrors(app, d.logger);
  app.proxy = false;

  const nowSeconds = () => Math.floor(d.clock.now() / 1000);
  const signaturePolicy = (resolveKey: VerifyPolicy['resolveKey']): VerifyPolicy => ({
    resolveKey,
    verify: nodeVerify,
    now: nowSeconds,
    nonceStore: d.nonceStore,
    node: d.tlsFingerprint,
  });
  const requestOf = (ctx: Context, body: Uint8Array) => ({
    method: ctx.method,
    // The target URI as the client addressed it: TLS always, authority from Host.
    url: `https://${ctx.get('host')}${ctx.originalUrl}`,
    headers: ctx.headers as Record<string, string | string[] | undefined>,
    rawHeaders: ctx.req.rawHeaders,
    body,
  });

  /** Token and roles only. */
  async function tokenOnly(
    ctx: Context,
    spec: Pick<RouteSpec, 'roles'>,
    body: Uint8Array = new Uint8Array(),
  ): Promise<Checked> {
    const { principal } = await authorize(requestOf(ctx, body), { verifyToken: d.verifyToken, roles: spec.roles });
    ctx.state.principal = principal;
    return { principal, body, keyId: undefined };
  }

  /** A space the caller may know about: its own org's, or any for farmer and monitor. */
  function visibleSpace(principal: Principal | undefined, spaceId: string): SpaceRow {
    const global = principal?.roles.has('farmer') || principal?.roles.has('monitor');
    const row = spaceOf(spaceId, (org) => global === true || org === principal?.org);
    if (!global && row.org !== principal?.org) throw new OcsError('not_found', 'no such space');
    return row;
  }

  /** A space the caller may change: its own org's, or any for the farmer. Global read (monitor) grants no write. */
  function writableSpace(principal: Principal | undefined, spaceId: string): SpaceRow {
    const mayWrite = (org: string) => principal?.roles.has('farmer') === true || org === principal?.org;
    const row = spaceOf(spaceId, mayWrite);
    if (!mayWrite(row.org)) throw new OcsError('not_found', 'no such space');
    return row;
  }

  /**
   * The space's record; for a space that moved away, its tombstone (`space_moved`) goes only to
   * whom the space itself would have answered: another org learns nothing, not even where it went.
   */
  function spaceOf(spaceId: string, mayKnow: (org: string) => boolean): SpaceRow {
    try {
      return d.service.get(spaceId);
    } catch (err) {
      if (isOcsError(err) && err.code === 'space_moved' && !mayKnow(d.repo.get(spaceId)?.org ?? ''))
        throw new OcsError('not_found', 'no such space');
      throw err;
    }
  }

  /** Token, then the owner's signature over the request, then the digest of the body. */
  async function ownerSigned(
    ctx: Context,
    spec: RouteSpec,
    spaceId: string,
    opts: { farmerMayInstead?: boolean; delegateMayInstead?: boolean } = {},
  ) {
    const body = spec.body ? await readBody(ctx, JSON_LIMIT) : new Uint8Array();
    const { principal } = await tokenOnly(ctx, spec, body);
    const row = writableSpace(principal, spaceId);
    const signed = ctx.get('signature-input') !== '';
    if (opts.farmerMayInstead && principal?.roles.has('farmer') && !signed) {
      return { principal, body, row, actor: principal.subject };
    }
    const { signature } = await authorize(requestOf(ctx, body), {
      verifyToken: d.verifyToken,
      roles: [],
      signature: signaturePolicy((keyId) => {
        if (keyId === row.ownerFingerprint) return parsePublicKey(row.ownerKey).bytes;
        // An orchestrator the owner's delegation names, while it holds.
        const delegate = opts.delegateMayInstead
          ? d.service
              .delegationOf(row)
              ?.orchestrators.map((k) => parsePublicKey(k))
              .find((k) => k.fingerprint() === keyId)
          : undefined;
        if (delegate) return delegate.bytes;
        throw new OcsError('not_owner', 'this space is bound to another key');
      }),
      hashes: nodeHashes,
    });
    return { principal, body, row, actor: signature!.keyId };
  }

  /**
   * Proof of possession: the request is signed by `owner`, the key it binds (a reservation's, a
   * restored archive's, an import's). Anyone may bring a new key, so the nonce is charged to the
   * token's principal, not to the key.
   */
  async function provePossession(
    ctx: Context,
    body: Uint8Array,
    principal: Principal,
    owner: Ed25519PublicKey | readonly Ed25519PublicKey[],
    refusal: string,
    o: { requireDigestCoverage?: boolean } = {},
  ): Promise<void> {
    const keys = Array.isArray(owner) ? owner : [owner as Ed25519PublicKey];
    await authorize(requestOf(ctx, body), {
      verifyToken: d.verifyToken,
      roles: [],
      signature: {
        ...signaturePolicy((keyId) => {
          const key = keys.find((k) => k.fingerprint() === keyId);
          if (!key) throw new OcsError('not_owner', refusal);
          return key.bytes;
        }),
        noncePartition: principalKey(principal),
        ...o,
      },
      hashes: nodeHashes,
    });
  }

  /**
   * A move's node-to-node step on its target: no token, a signature by the identity key of
   * the node the import names as its source (its nonce charged to that node).
   */
  async function importSource(ctx: Context, spaceId: string, body = new Uint8Array()): Promise<SpaceRow> {
    const row = d.repo.get(spaceId);
    if (!row?.importFrom) throw new OcsError('not_found', 'no such import');
    const source = parsePublicKey(row.importFrom.identityKey);
    await authorize(requestOf(ctx, body), {
      verifyToken: d.verifyToken,
      roles: [],
      signature: {
        ...signaturePolicy((keyId) => {
          if (keyId !== source.fingerprint())
            throw new OcsError('not_owner', 'the request must be signed by the node this import comes from');
          return source.bytes;
        }),
        noncePartition: `node:${row.importFrom.identityKey}`,
        // The archive checks itself: every chunk's digest, the chain, the source's signature.
        requireDigestCoverage: body.length > 0,
      },
      hashes: nodeHashes,
    });
    return row;
  }

  /**
   * A drain's import: no token, a signature by the identity key of a node this node's farmer
   * lists as a peer (its nonce charged to that node). Answers that node's key.
   */
  async function peerNode(ctx: Context, body: Uint8Array): Promise<Ed25519PublicKey> {
    const peers = d.peers.map((k) => parsePublicKey(k));
    let signer: Ed25519PublicKey | undefined;
    await authorize(requestOf(ctx, body), {
      verifyToken: d.verifyToken,
      roles: [],
      signature: {
        ...signaturePolicy((keyId) => {
          signer = peers.find((k) => k.fingerprint() === keyId);
          if (!signer) throw new OcsError('not_owner', 'this node takes drains only from the nodes its farmer lists');
          return signer.bytes;
        }),
      },
      hashes: nodeHashes,
    });
    return signer!;
  }

  const handlers: { [K in NodeRouteId]: Handler<Extract<NodeRoute, { id: K }>> } = {
    health: async () => ({ status: 'ok' }),
    metrics: async (ctx) => {
      ctx.type = d.registry.contentType;
      return d.registry.metrics();
    },
    getNode: async () => d.nodeInfo(),
    createSpace: async (ctx, { principal, raw, body, headers }) => {
      const owner = parsePublicKey(body.ownerKey);
      const key = headers['idempotency-key'];
      // What the reservation would refuse anyway is refused before the signature's nonce is
      // stored; a retry under an idempotency key is checked when it is not a replay.
      if (!key) d.service.checkCreate(body);
      await provePossession(ctx, raw, principal!, owner, 'the request must be signed by the key it binds');
      if (!key) return d.service.create(principal!, body, owner);
      const { response, replayed } = await d.reservationKeys.once(principalKey(principal!), key, raw, (reserved) =>
        d.service.create(principal!, body, owner, reserved),
      );
      if (replayed) ctx.set('idempotent-replayed', 'true');
      return response;
    },
    listSpaces: async (_ctx, { principal }) => {
      const global = principal!.roles.has('farmer') || principal!.roles.has('monitor');
      const rows = d.repo.list(global ? {} : { org: principal!.org }).filter((r) => r.state !== 'destroyed');
      return { spaces: rows.map((r) => d.service.view(r)) };
    },
    getSpace: async (_ctx, { principal, params }) => d.service.view(visibleSpace(principal, params.spaceId)),
    renewSpace: async (_ctx, { row, actor, body }) => d.service.renew(actor!, row!.id, body.leaseSeconds),
    lockSpace: async (_ctx, { row, actor }) => d.service.lock(actor!, row!.id),
    unlockSpace: async (_ctx, { row, actor, body }) => d.service.unlock(actor!, row!.id, body.sealedKey),
    rotateSpaceKey: async (_ctx, { row, actor, body }) => d.service.rotateKey(actor!, row!.id, body.sealedKey),
    exportSpace: async (ctx, { row, actor }) => {
      const exp = await d.service.openExport(actor!, row!.id);
      ctx.type = ARCHIVE_MEDIA_TYPE;
      // Pulled as the connection drains; a client that goes away ends it (and the export) early.
      const stream = Readable.from(
        spaceArchive({
          ...exp,
          ...d.archiveHead(row!),
          node: d.tlsFingerprint,
          now: d.clock.now(),
          hashes: nodeHashes,
        }),
        { objectMode: false },
      );
      stream.on('error', (err) => d.logger.warn({ err, spaceId: row!.id }, 'space archive cut short'));
      return stream as never;
    },
    restoreSpace: async (ctx, { principal, query }) => {
      const body = (ctx.req as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
      // The body is bound to the signed request by the digest of its head (the owner's signature
      // over head and tail covers the rest), or else by a Content-Digest summed as it streams.
      const headDigest = ctx.get(ARCHIVE_HEAD_HEADER) || undefined;
      const contentDigest = ctx.get('content-digest') || undefined;
      if (headDigest === undefined && contentDigest === undefined)
        throw new OcsError(
          'digest_missing',
          `a restore must carry an ${ARCHIVE_HEAD_HEADER} or a Content-Digest header`,
        );
      const reader = new ArchiveReader(nodeHashes);
      const intake = {
        reader,
        digest:
          headDigest === undefined
            ? createDigestVerifier(contentDigest!, nodeHashes)
            : { update: () => undefined, verify: () => undefined },
      };
      const { head, early } = await readHead(body, intake);
      if (headDigest !== undefined && headDigest !== archiveHeadDigest(reader.headBytesSeen!, nodeHashes))
        throw new OcsError('digest_mismatch', 'the archive does not start with the head the request was signed for');
      const owner = parsePublicKey(head.ownerKey);
      // As for a reservation, signed by the key the archive binds.
      await provePossession(
        ctx,
        new Uint8Array(),
        principal!,
        owner,
        "the request must be signed by the archive's owner key",
        {
          requireDigestCoverage: headDigest === undefined,
        },
      );
      const restore = await d.service.beginRestore(principal!, head, query, owner);
      try {
        const summary = await readRest(body, intake, early, (c) => restore.write(c)).catch((err: unknown) => {
          // A body cut short by the client is not an archive at all.
          throw isOcsError(err) ? err : new OcsError('archive_malformed', 'the archive could not be read to its end');
        });
        await requireOwnerSignature(summary, nodeHashes);
      } catch (err) {
        await restore.abort(err);
        throw err;
      }
      return d.service.view(d.service.get((await restore.finish()).id));
    },
    openImport: async (ctx, { principal, raw, body }) => {
      const owner = parsePublicKey(body.ownerKey);
      d.service.checkCreate(body);
      // As for a reservation, signed by the owner key the body names; or, on the owner's
      // delegation for this space and org, by an orchestrator key it names.
      const signers = [owner];
      if (body.delegation !== undefined) {
        const grant = verifyDelegation(body.delegation, {
          spaceId: body.spaceId,
          ownerKey: owner.toBase64url(),
          now: d.clock.now(),
        });
        if (grant.org !== principal!.org)
          throw new OcsError('delegation_invalid', "the delegation is for another organization's space");
        signers.push(...grant.orchestrators.map((k) => parsePublicKey(k)));
      }
      await provePossession(ctx, raw, principal!, signers, 'the request must be signed by the key it binds');
      return d.service.openImport(principal!, body, owner);
    },
    openPeerImport: async (ctx, { raw, body }) => {
      const source = await peerNode(ctx, raw);
      // The owner's word: a delegation for this space naming this node, still holding.
      const grant = readDelegation(body.delegation);
      verifyDelegation(body.delegation, { spaceId: body.spaceId, ownerKey: grant.ownerKey, now: d.clock.now() });
      if (!grant.nodes.some((n) => n.fingerprint === d.tlsFingerprint))
        throw new OcsError('not_delegated', "the space's delegation does not name this node");
      const owner = parsePublicKey(grant.ownerKey);
      const req = { ...body, ownerKey: grant.ownerKey, source: { identityKey: source.toBase64url() } };
      d.service.checkCreate(req);
      // The space is the owner's org's, as the delegation the owner signed says; the draining
      // node is who asked (the audit's actor).
      const now = new Date(d.clock.now());
      const principal: Principal = {
        issuer: 'node',
        subject: `node:${source.fingerprint()}`,
        org: grant.org,
        roles: new Set(),
        issuedAt: now,
        expiresAt: now,
      };
      return d.service.openImport(principal, req, owner);
    },
    receiveImport: async (ctx, { params }) => {
      const row = await importSource(ctx, params.spaceId);
      // A connection that ends mid-body throws here: the stream was cut, not refused.
      const req = (ctx.req as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
      let cut = false;
      const body: AsyncIterator<Uint8Array> = {
        next: () =>
          req.next().catch((err: unknown) => {
            cut = true;
            throw err;
          }),
      };
      const intake = {
        reader: new ArchiveReader(nodeHashes),
        digest: { update: () => undefined, verify: () => undefined },
      };
      const { head, early } = await readHead(body, intake);
      const receive = await d.service.beginImport(row, head);
      try {
        const summary = await readRest(body, intake, early, (c) => receive.write(c)).catch((err: unknown) => {
          throw isOcsError(err) ? err : new OcsError('archive_malformed', 'the archive could not be read to its end');
        });
        await requireNodeSignature(summary, row.importFrom!.identityKey, nodeHashes);
      } catch (err) {
        await receive.abort(err, { cut });
        throw err;
      }
      return receive.finish();
    },
    importState: async (ctx, { params }) => d.service.importState(await importSource(ctx, params.spaceId)),
    commitImport: async (ctx, { params, raw }) =>
      d.service.commitImport(await importSource(ctx, params.spaceId, new Uint8Array(raw))),
    abortImport: async (ctx, { params }) => {
      await d.service.abortImport(await importSource(ctx, params.spaceId));
      return undefined;
    },
    moveSpace: async (_ctx, { row, actor, body }) => d.mover.move(actor!, row!.id, body.to),
    delegateSpace: async (_ctx, { row, actor, body }) => d.service.setDelegation(actor!, row!.id, body.delegation),
    revokeDelegation: async (_ctx, { row, actor }) => {
      d.service.revokeDelegation(actor!, row!.id);
      return undefined;
    },
    drainNode: async (_ctx, { principal, body }) => d.drainer.start(principal!.subject, body.graceSeconds),
    getDrain: async () => {
      const s = d.drainer.status();
      if (!s) throw new OcsError('not_found', 'this node was never drained');
      return s;
    },
    cancelDrain: async (_ctx, { principal }) => d.drainer.cancel(principal!.subject),
    deleteSpace: async (_ctx, { row, actor }) => {
      await d.service.destroy(actor!, row!.id);
      return undefined;
    },
    listAudit: async (_ctx, { query }) => {
      const page: AuditPage = d.audit.page({ after: query.after ?? 0, limit: query.limit ?? 100 });
      return page;
    },
  };

  const router = new Router();
  // Ids are checked against the protocol's pattern before anything uses them (lookups, logs).
  router.param('spaceId', (id, _ctx, next) => {
    if (!SPACE_ID_RE.test(id)) throw new OcsError('not_found', 'no such space');
    return next();
  });
  // Every route of the catalogue, bound here and only here: the checks its entry names (token,
  // owner signature), then path, query, headers and body by its schemas.
  bindCatalogue(router, NODE_ROUTES as readonly RouteSpec[], async (spec, ctx) => {
    const handler = handlers[spec.id as NodeRouteId] as Handler<RouteSpec>;
    const params = (spec.params ? validate(spec.params, { ...ctx.params }, 'path parameter') : {}) as {
      spaceId?: string;
    };
    let auth: { principal: Principal | undefined; body: Uint8Array; row?: SpaceRow; actor?: string };
    if (spec.signature === 'owner' || spec.signature === 'owner-or-farmer' || spec.signature === 'owner-or-delegate') {
      auth = await ownerSigned(ctx, spec, params.spaceId!, {
        farmerMayInstead: spec.signature === 'owner-or-farmer',
        delegateMayInstead: spec.signature === 'owner-or-delegate',
      });
    } else if (spec.signature === 'import-source' || spec.signature === 'peer-node') {
      // Checked by the handler against the import's source node; a binary body is streamed.
      auth = {
        principal: undefined,
        body: spec.body && spec.body !== 'binary' ? await readBody(ctx, JSON_LIMIT) : new Uint8Array(),
      };
    } else if (spec.roles.length > 0) {
      // A binary body is streamed by its handler, never read whole here.
      auth = await tokenOnly(
        ctx,
        spec,
        spec.body && spec.body !== 'binary' ? await readBody(ctx, JSON_LIMIT) : undefined,
      );
    } else {
      auth = { principal: undefined, body: new Uint8Array() };
    }
    const input = {
      ...auth,
      raw: auth.body,
      params,
      query: spec.id === 'health' ? {} : validateQuery(spec.query, ctx.query),
      headers: spec.headers ? validateHeaders(spec.headers, ctx.headers) : {},
      body: spec.body && spec.body !== 'binary' ? validate(spec.body, parseJson(auth.body)) : undefined,
    };
    const result = await handler(ctx, input as never).catch((err: unknown) => {
      // An unexpected failure of an operation that reaches the host is that part's (502), not
      // the daemon's own (500); the detail goes to the log only.
      const part = nodeOperationPart(spec.id);
      if (isOcsError(err) || !part) throw err;
      d.logger.error({ err, op: spec.id, spaceId: params.spaceId }, 'node operation failed');
      throw hostFailed(spec.id, part);
    });
    ctx.status = spec.status;
    if (spec.status !== 204) ctx.body = result;
  });

  app.use(async (ctx, next) => {
    const end = d.metrics.requestTimer();
    try {
      await next();
    } finally {
      end(
        ctx.method,
        (ctx as { _matchedRoute?: string })._matchedRoute ?? (SPACE_API_RE.test(ctx.path) ? 'space-api' : 'unmatched'),
        ctx.status,
      );
    }
  });
  /**
   * Who a refused request came from, if it proved it: the principal of a verified token. A
   * refusal before the route checked the token (an unknown path, a malformed id, a missing
   * role) still names its caller when the token verifies (verified tokens are cached).
   */
  async function callerOf(ctx: Context, err: OcsError): Promise<Principal | undefined> {
    const known = ctx.state.principal as Principal | undefined;
    if (known) return known;
    if (err.code.startsWith('token_') || ctx.get('authorization') === '') return undefined;
    try {
      return await d.verifyToken(bearerToken(ctx.get('authorization')));
    } catch {
      return undefined;
    }
  }
  app.use(
    errorMiddleware(d.logger, async (ctx, err) => {
      const principal = await callerOf(ctx, err);
      const matched = (ctx as { _matchedRoute?: string })._matchedRoute;
      const spaceId = (ctx.params as Record<string, string> | undefined)?.spaceId;
      d.refusals.record({
        chainAs: principal && { key: principalKey(principal), actor: principal.subject },
        // The route's pattern, never the caller's path: the path goes into the bounded detail.
        action: `${ctx.method.slice(0, 16)} ${matched ?? '(no route)'}`,
        target: spaceId,
        code: err.code,
        detail: matched === undefined ? { path: printable(ctx.path, 128) } : undefined,
      });
    }),
  );
  // Before any other check: a request signed for another node (its name in @target-uri) never runs here.
  app.use(async (ctx, next) => {
    if (ctx.path !== '/healthz') checkAuthority(ctx.get('host') || undefined, d.authorities);
    await next();
  });
  // The space API is forwarded untouched; the space process checks token and signature itself.
  app.use(async (ctx, next) => {
    const m = SPACE_API_RE.exec(ctx.path);
    if (!m) return next();
    const spaceId = m[1]!;
    ctx.params = { spaceId };
    const { principal } = await tokenOnly(ctx, { roles: ['storage', 'containers', 'vms', 'monitor'] });
    // A space's own API is for its org only, whatever node-wide roles (farmer, monitor) the token has.
    const row = d.service.get(spaceId);
    if (row.org !== principal?.org) throw new OcsError('not_found', 'no such space');
    if (row.state === 'expired') throw new OcsError('lease_expired', 'the lease has expired');
    if (row.state !== 'active') throw new OcsError('space_locked', 'the space is locked: unlock it first');
    await d.forwarder.forward(ctx, spaceId);
  });
  app.use(router.routes());
  app.use(methodNotAllowed(router));
  return app;
}

function isSchema(v: unknown): v is TSchema {
  return typeof v === 'object' && v !== null;
}
