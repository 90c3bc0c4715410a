/**
 * The life of a space: reserve, lock, unlock, rotate, renew, expire, destroy.
 *
 * Ordering is chosen so that a crash at any point leaves either a record that reconciliation can
 * finish or undo (state `creating` / `destroying`), never a host object nobody knows about: the
 * record is written first, host objects second, and the state flips last.
 */
import { randomBytes } from 'node:crypto';
import { chmod, chown, mkdir } from 'node:fs/promises';
import { Decrypter, armor } from 'age-encryption';
import {
  readsImages,
  receivesImages,
  receivesSeeds,
  sendsSeeds,
  type CgroupDriver,
  type ImageReceiver,
  type ImageSink,
  type SeedPlan,
  type SeedReceiver,
  type SeedSink,
  type SeedSource,
  type StorageImage,
  type StorageDriver,
} from '@ocs/host';
import {
  OcsError,
  isOcsError,
  parsePublicKey,
  readDelegation,
  verifyDelegation,
  wrapKey,
  type DelegationGrant,
  type ArchiveChunk,
  type ArchiveHead,
  type CreateSpaceRequest,
  type OpenImportRequest,
  type Ed25519PublicKey,
  type ErrorCode,
  type ImportState,
  type Principal,
  type Resources,
  type Space,
  type SpaceState,
  type Tombstone,
  archiveImageBytes,
} from '@ocs/protocol';
import type {
  AuditLog,
  Ledger,
  MoveTo,
  RemapFrom,
  SpaceRow,
  SpacesRepo,
  TombstoneRow,
  WorkloadsRepo,
} from '../state/index.js';
import type { Logger } from '../logger.js';
import type { Clock } from '../clock.js';
import { newId } from '../ids.js';
import { failpoint } from '../failpoints.js';
import { spaceCgroupLayout, spaceCgroupLimits, spaceDataLayout } from './layout.js';

export interface SpaceProcesses {
  /** Stops the space's API process (if running) and forgets it. */
  stop(spaceId: string): Promise<void>;
  /** For a space that is gone: stops its process and removes its run directory. Idempotent. */
  forget(spaceId: string): Promise<void>;
}

/** A space's workloads (volumes, containers, VMs) as a whole: `WorkloadLifecycle` on a node. */
export interface Workloads {
  stopAll(spaceId: string): Promise<void>;
  removeAll(spaceId: string): Promise<void>;
  /** After the space's storage is unlocked: open what opens with it (volume keys live inside it). */
  open(spaceId: string, mountpoint: string): Promise<void>;
  /** Stops everything of the space at once, recording nothing of what ran (a first unlock that failed: nothing of it ran yet). */
  kill(spaceId: string): Promise<void>;
  /** A restored space's first unlock, first: what its workloads keep in the storage by id, under their new ids. */
  rename(spaceId: string, mountpoint: string, from: RemapFrom): Promise<void>;
  /** A restored space's first unlock, its files' owners mapped: its workloads made its own (their new ids, this node's engine and network). */
  remap(spaceId: string, mountpoint: string, from: RemapFrom): Promise<void>;
  /** Once the space is active again: start what ran when it was locked. */
  restore(spaceId: string, mountpoint: string): Promise<void>;
}

export interface SpaceServiceDeps {
  repo: SpacesRepo;
  ledger: Ledger;
  audit: AuditLog;
  cgroups: CgroupDriver;
  storage: StorageDriver;
  processes: SpaceProcesses;
  workloads: Workloads;
  logger: Logger;
  clock: Clock;
  unlockIdentity: string;
  cgroupParent: string;
  apiCpuMillicores: number;
  graceSeconds: number;
  maxLeaseSeconds: number;
  /** What the space publishes where (absent: a node without workload networks publishes nothing). */
  published?: (spaceId: string) => Space['network']['published'];
  /** The workload records: a restored space's are written from its archive. */
  workloadRows: Pick<WorkloadsRepo, 'insertRestored' | 'list'>;
  /**
   * Gives a restored space's files (under its storage's root) the owners of this node's ids for
   * it, from the ids they had where the archive was made. Runs at its first unlock.
   */
  remapFiles(row: SpaceRow, root: string, from: RemapFrom['placement'], mounts: string[]): Promise<void>;
  /**
   * Where the ids a space had on its source and this node's ids for it overlap so that
   * `remapFiles` could not tell old owners from new ones (two nodes' uid ranges set apart by
   * less than their size): the first clash, or undefined. Such a space is refused on arrival.
   */
  remapClash?(row: SpaceRow, from: RemapFrom['placement']): { from: number; to: number } | undefined;
}

/** A restore under way: its chunks go into the new space's storage, then it is kept or dropped. */
export interface Restore {
  spaceId: string;
  write(chunk: ArchiveChunk): Promise<void>;
  /** The archive was whole and its signatures check: the image is checked and the space kept, locked. */
  finish(): Promise<Space>;
  /**
   * Drops everything of it; the space never existed for anyone but the audit log. A move's
   * seed whose stream was `cut` (not refused) keeps what arrived instead, for its source to
   * go on from (`importState`).
   */
  abort(err: unknown, o?: { cut?: boolean }): Promise<void>;
}

const KEY_BYTES = 32;
/** A lock answers within this, done or not (`locking`): the owner's request is not held by a stop grace. */
const LOCK_ANSWER_MS = 800;
/** How long a move's or a drain's lock waits for the space to be locked. */
const LOCK_WAIT_MS = 120_000;
/** How long a start waits for the locks a crash cut short. */
const RESUME_LOCKS_MS = 30_000;
/** A lock step that failed is tried again, at most this far apart. */
const LOCK_RETRY_MAX_MS = 30_000;
/** A pause that keeps no process alive (a retry's backoff: the server keeps the daemon up). */
const pause = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

/** True when `p` settled within `ms`; its timer never outlives the wait. */
async function settledWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms)));
  try {
    return await Promise.race([p.then(() => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

interface LockProgress {
  step: 'process' | 'workloads' | 'storage';
  since: number;
  error?: string;
  task: Promise<void>;
}
/** How long an import waits for its archive, and then, prepared, for its commit. */
const IMPORT_WAIT_MS = 3600_000;

export class SpaceService {
  private readonly destroying = new Set<string>();
  /** Archives being read from a space's image, by space: it stays as it is until they end. */
  private readonly exporting = new Map<string, number>();
  /** Spaces whose storage is being opened or re-keyed: no archive starts meanwhile. */
  private readonly opening = new Map<string, number>();
  /** Spaces whose archive is arriving (a restore's, an import's): an import's expiry waits for it. */
  private readonly receiving = new Map<string, number>();
  /** Locks under way (`locking`), by space. */
  private readonly locks = new Map<string, LockProgress>();

  /** Set while the node drains: it takes no new space (reservation, restore, import). */
  draining = false;

  constructor(private readonly d: SpaceServiceDeps) {}

  private refuseIfDraining(): void {
    if (this.draining)
      throw new OcsError('node_draining', 'this node is being retired and takes no new space; reserve on another node');
  }

  /**
   * Keeps the owner's delegation for the space, replacing the last one. The caller checked the
   * owner's signature over the request; the delegation carries its own, checked here against
   * the space (its id, owner key and org) and the clock.
   */
  setDelegation(actor: string, id: string, jws: string): Space {
    const row = this.get(id);
    const grant = verifyDelegation(jws, { spaceId: row.id, ownerKey: row.ownerKey, now: this.d.clock.now() });
    if (grant.org !== row.org) throw new OcsError('delegation_invalid', 'the delegation names another organization');
    this.d.repo.setDelegation(id, jws);
    this.d.audit.append({
      actor,
      action: 'space.delegate',
      target: id,
      outcome: 'ok',
      detail: {
        nodes: grant.nodes.map((n) => n.fingerprint),
        orchestrators: grant.orchestrators,
        notAfter: grant.notAfter,
      },
    });
    return this.view(this.get(id));
  }

  revokeDelegation(actor: string, id: string): void {
    this.get(id);
    this.d.repo.setDelegation(id, null);
    this.d.audit.append({ actor, action: 'space.delegate', target: id, outcome: 'ok', detail: { revoked: true } });
  }

  /**
   * The delegation an arriving archive carries, if it is this space's and holds here now: a
   * moved space keeps its owner's permission; a fork (another id) has none. Anything else in
   * its place is dropped, not refused: the owner delegates again.
   */
  private carriedDelegation(row: SpaceRow, head: ArchiveHead): string | undefined {
    if (!head.delegation || head.spaceId !== row.id) return undefined;
    const held = this.delegationOf({ ...row, delegation: head.delegation });
    if (!held) this.d.logger.warn({ spaceId: row.id }, "the archive's delegation does not hold here; not kept");
    return held ? head.delegation : undefined;
  }

  /** The space's delegation if it holds now (signature, space, owner, time); else undefined. */
  delegationOf(row: SpaceRow): DelegationGrant | undefined {
    if (!row.delegation) return undefined;
    try {
      const grant = verifyDelegation(row.delegation, {
        spaceId: row.id,
        ownerKey: row.ownerKey,
        now: this.d.clock.now(),
      });
      return grant.org === row.org ? grant : undefined;
    } catch {
      return undefined;
    }
  }

  view(row: SpaceRow): Space {
    return {
      id: row.id,
      org: row.org,
      ownerKey: row.ownerKey,
      ownerFingerprint: row.ownerFingerprint,
      resources: resourcesOf(row),
      state: row.state,
      lease: { expiresAt: iso(row.leaseExpiresAt), graceUntil: iso(row.graceUntil) },
      createdAt: iso(row.createdAt),
      apiBase: `/v1/spaces/${row.id}/api`,
      storage: { backend: this.d.storage.kind, sizeBytes: row.storageBytes, unlocked: row.state === 'active' },
      network: { egress: row.egress, published: this.d.published?.(row.id) ?? [] },
      ...(row.state === 'locking' ? { locking: this.lockingView(row.id) } : {}),
      ...(row.moveTo && !row.moveTo.archive
        ? { move: { to: { url: row.moveTo.url, fingerprint: row.moveTo.fingerprint } } }
        : {}),
      ...(row.delegation ? { delegation: delegationView(row.delegation) } : {}),
    };
  }

  private lockingView(id: string): NonNullable<Space['locking']> {
    const l = this.locks.get(id);
    // No task yet (a restart before `resumeLocks`): it starts with the process.
    if (!l) return { step: 'process', since: iso(this.d.clock.now()) };
    return { step: l.step, since: iso(l.since), ...(l.error ? { error: l.error } : {}) };
  }

  get(id: string): SpaceRow {
    const row = this.d.repo.get(id);
    if (!row || row.state === 'destroyed') {
      // A space that moved away is not "no such space": where it went is the answer.
      const t = row && this.d.repo.tombstone(id);
      if (t)
        throw new OcsError(
          'space_moved',
          t.archive
            ? `the space was exported (${t.archive}) when this node was drained`
            : `the space moved to ${t.url}`,
          tombstoneView(t),
        );
      throw new OcsError('not_found', 'no such space');
    }
    return row;
  }

  /**
   * What `create` would refuse without touching the host: the lease's length and whether the
   * space fits now. Cheap, so the API runs it before a signature's nonce is stored.
   */
  checkCreate(req: CreateSpaceRequest): void {
    this.refuseIfDraining();
    if (req.leaseSeconds > this.d.maxLeaseSeconds) {
      throw new OcsError('invalid_request', `leaseSeconds is over this node's maximum of ${this.d.maxLeaseSeconds}`, {
        field: '/leaseSeconds',
      });
    }
    this.d.ledger.check({ ...req.resources, pids: req.resources.pids ?? null });
  }

  /** Reserve → cgroups → storage with a fresh key wrapped to the owner → active. */
  async create(
    principal: Principal,
    req: CreateSpaceRequest,
    owner: Ed25519PublicKey,
    /** Called with the new space's id as soon as the ledger holds it (idempotency keys record it). */
    reserved?: (spaceId: string) => void,
  ): Promise<{ space: Space; wrappedKey: string }> {
    this.checkCreate(req);
    const row = this.reserve(principal, req, owner);
    const id = row.id;
    reserved?.(id);
    const key = new Uint8Array(randomBytes(KEY_BYTES));
    try {
      await this.createCgroups(row);
      const storage = await this.d.storage.create(id, row.storageBytes, key);
      await prepareSpaceData(storage.mountpoint, row.uid);
      const wrappedKey = await wrapKey(key, owner);
      this.d.repo.setState(id, ['creating'], 'active');
      this.d.audit.append({ actor: principal.subject, action: 'space.create', target: id, outcome: 'ok' });
      return { space: this.view(this.get(id)), wrappedKey };
    } catch (err) {
      this.d.logger.error({ err, spaceId: id }, 'space creation failed; rolling back');
      await this.teardownHost(id).catch((e: unknown) =>
        this.d.logger.error({ err: e, spaceId: id }, 'rollback incomplete; reconciliation will retry'),
      );
      this.d.repo.setState(id, ['creating'], 'failed');
      this.d.ledger.release(id);
      this.d.audit.append({
        actor: principal.subject,
        action: 'space.create',
        target: id,
        outcome: 'failed',
        // Not the caller's to fix: the route answers `host_failed` (app.ts), its detail logged above.
        code: err instanceof OcsError ? err.code : 'host_failed',
      });
      throw err;
    } finally {
      key.fill(0);
    }
  }

  /**
   * Starts restoring an archive as a new space (a fork of the one archived), reserved like a
   * new space from the archive's resources. The caller has checked that the owner signed the
   * request; the archive's own signature is checked by the caller once it has read all of it,
   * before `finish`. Nothing of the image is mounted until `finish` has checked it.
   */
  async beginRestore(
    principal: Principal,
    head: ArchiveHead,
    req: { leaseSeconds: number; name?: string },
    owner: Ed25519PublicKey,
  ): Promise<Restore> {
    const storage = this.d.storage;
    this.requireBackend(head);
    if (!receivesImages(storage))
      throw new OcsError('unavailable', `this node's storage (${storage.kind}) cannot restore a space yet`);
    checkArchiveFits(head);
    if (head.image.seed || head.image.since)
      throw new OcsError('archive_malformed', "a move's seed or increment is not a backup: it restores nowhere");
    const asked = {
      ownerKey: head.ownerKey,
      resources: head.resources,
      leaseSeconds: req.leaseSeconds,
      name: req.name,
    };
    this.checkCreate(asked);
    const row = this.reserve(principal, asked, owner);
    const id = row.id;
    const audit = (outcome: 'ok' | 'refused' | 'failed', code?: ErrorCode) =>
      this.d.audit.append({
        actor: principal.subject,
        action: 'space.restore',
        target: id,
        outcome,
        ...(code ? { code } : {}),
        detail: { from: head.spaceId, node: head.node.fingerprint.slice(0, 128) },
      });
    return this.receive(row, head, {
      from: 'creating',
      audit,
      kept: () => this.d.repo.setState(id, ['creating'], 'locked'),
    });
  }

  /**
   * Receives an archive into `row`'s new storage: its cgroups, an image nothing attaches, each
   * chunk written as it comes; `finish` checks the image, writes the workloads' records (new
   * ids, the space's first unlock renames what its storage keeps by id) and the placement to
   * map, then `kept` moves the record on. Any failure drops everything of the space.
   */
  private async receive(
    row: SpaceRow,
    head: ArchiveHead,
    o: {
      from: SpaceState;
      /** A whole image, a dataset of a move's seed (held for its increment), or the increment onto it. */
      image?: 'whole' | 'seed' | 'increment';
      /** The seed's dataset, and whether it goes on from what a cut stream left. */
      seed?: { dataset: string; resume?: boolean };
      /** Runs first, once the archive is counted as arriving. */
      before?: () => Promise<void>;
      audit(outcome: 'ok' | 'refused' | 'failed', code?: ErrorCode): void;
      kept(): void;
    },
  ): Promise<Restore> {
    const id = row.id;
    const storage = this.d.storage as StorageDriver & ImageSink & Partial<SeedSink>;
    // Counted before the first await: a second archive for the same import is `conflict`.
    count(this.receiving, id, +1);
    let ended = false;
    const end = () => {
      if (ended) return false;
      ended = true;
      count(this.receiving, id, -1);
      return true;
    };
    let receiver: ImageReceiver | SeedReceiver | undefined;
    const drop = async (err: unknown) => {
      await receiver?.abort().catch(() => undefined);
      await this.teardownHost(id).catch((e: unknown) =>
        this.d.logger.error(
          { err: e, spaceId: id },
          'rollback of a received space incomplete; reconciliation will retry',
        ),
      );
      this.d.repo.setState(id, [o.from], 'destroying');
      this.d.repo.setState(id, ['destroying'], 'destroyed');
      this.d.ledger.release(id);
      // A refusal is the archive's (a 4xx); anything else failed here.
      const code = err instanceof OcsError ? err.code : 'host_failed';
      o.audit(err instanceof OcsError && err.status < 500 ? 'refused' : 'failed', code);
    };
    try {
      const clash = this.d.remapClash?.(row, head.placement);
      if (clash)
        throw new OcsError(
          'conflict',
          "the ids this space had where it comes from overlap this node's ids for it: the two nodes' " +
            'uid ranges (spaces.uidBase, uidCount, subordinate ids) must be the same or apart',
          clash,
        );
      if (o.from === 'creating') await this.createCgroups(row);
      await o.before?.();
      const [bytes, size] = [head.image.bytes, head.resources.storageBytes];
      receiver =
        o.image === 'seed'
          ? await storage.receiveSeed!(id, bytes, size, { dataset: o.seed!.dataset, resume: o.seed!.resume })
          : await storage.receiveImage(id, bytes, size, o.image === 'increment' ? { onSeed: true } : {});
    } catch (err) {
      end();
      await drop(err);
      throw err;
    }
    const r = receiver;
    let written = 0;
    return {
      spaceId: id,
      write: (chunk) => {
        if (o.from === 'importing' && ++written === 2) failpoint('import.receiving');
        return r.write(chunk.data, chunk.offset);
      },
      finish: async () => {
        try {
          if ('hold' in r) {
            // A seed: taken whole, held unchecked (the increment's commit checks the space).
            await r.hold();
            o.kept();
            end();
            o.audit('ok');
            return this.view(this.get(id));
          }
          await r.commit();
          if (o.from === 'importing') failpoint('import.checked');
          const workloadIds: Record<string, string> = {};
          for (const w of head.workloads) workloadIds[w.id] = newId(w.id.slice(0, w.id.indexOf('_')) as 'vol');
          this.d.workloadRows.insertRestored(
            head.workloads.map((w) => ({
              ...w,
              id: workloadIds[w.id]!,
              spaceId: id,
              spec: { sizeBytes: w.storageBytes, path: storage.volumePath(id, workloadIds[w.id]!) },
            })),
          );
          this.d.repo.setRemapFrom(id, {
            spaceId: head.spaceId,
            arrival: randomBytes(8).toString('hex'),
            placement: head.placement,
            workloadIds,
            ...(head.published?.length ? { published: head.published } : {}),
          });
          const delegation = this.carriedDelegation(row, head);
          if (delegation) this.d.repo.setDelegation(id, delegation);
          o.kept();
        } catch (err) {
          end();
          await drop(err);
          throw err;
        }
        end();
        o.audit('ok');
        return this.view(this.get(id));
      },
      abort: async (err, a) => {
        if (!end()) return;
        if (a?.cut && 'stop' in r && r.stop) {
          // A seed's stream cut short: what arrived stays, resumable; an increment's: the
          // seed stays for it to be sent again. The import waits either way.
          await r.stop();
          o.audit('failed', 'unavailable');
          return;
        }
        await drop(err);
      },
    };
  }

  /**
   * A move's first step on its target: the space's room reserved under its own id, `importing`,
   * waiting for the archive from the node `req.source` names (only that node's identity key
   * may send, commit or abort it). The caller checked that the owner signed the request.
   */
  async openImport(principal: Principal, req: OpenImportRequest, owner: Ed25519PublicKey): Promise<Space> {
    if (!receivesImages(this.d.storage))
      throw new OcsError('unavailable', `this node's storage (${this.d.storage.kind}) cannot import a space yet`);
    this.checkCreate(req);
    // A destroyed record of the id (an import aborted before, the space here before it moved
    // away) makes room; a standing one is `conflict`.
    this.d.repo.forgetDestroyed(req.spaceId);
    const row = this.reserve(principal, req, owner, { id: req.spaceId, state: 'importing' });
    const id = row.id;
    try {
      await this.createCgroups(row);
      this.d.repo.setImportFrom(id, {
        identityKey: req.source.identityKey,
        expiresAt: this.d.clock.now() + IMPORT_WAIT_MS,
      });
    } catch (err) {
      await this.dropImport(id, 'node', err);
      throw err;
    }
    this.d.audit.append({
      actor: principal.subject,
      action: 'space.import',
      target: id,
      outcome: 'ok',
      detail: { step: 'open', source: req.source.identityKey },
    });
    failpoint('import.opened');
    return this.view(this.get(id));
  }

  /**
   * The archive of an import, from its source: it must be the space the import was opened for
   * (id, owner, resources, backend). Whole and checked, the space is `prepared`: on this node,
   * but nobody can unlock it until the source commits.
   */
  async beginImport(row: SpaceRow, head: ArchiveHead): Promise<Restore> {
    if (row.state !== 'importing' || this.receiving.has(row.id))
      throw new OcsError('conflict', `the import is ${row.state === 'importing' ? 'already arriving' : row.state}`);
    this.requireBackend(head);
    checkArchiveFits(head);
    const mismatch = (what: string) =>
      new OcsError('archive_malformed', `the archive is not the space this import was opened for: ${what}`);
    if (head.spaceId !== row.id) throw mismatch('another space id');
    if (head.ownerKey !== row.ownerKey) throw mismatch('another owner key');
    const r = resourcesOf(row);
    for (const k of ['cpuMillicores', 'memoryBytes', 'storageBytes', 'pids', 'ports'] as const)
      if ((head.resources[k] ?? 0) !== (r[k] ?? 0)) throw mismatch(`another ${k}`);
    const { seed, since } = head.image;
    if ((seed || since) && !receivesSeeds(this.d.storage))
      throw new OcsError('archive_malformed', `this node's storage (${this.d.storage.kind}) takes no seed`);
    const held = row.importFrom!.seed;
    if (since !== undefined && since !== held)
      throw new OcsError('conflict', "the increment's base is not the seed this import holds: send the space whole");
    // A seed begins with its top, sent afresh; every other part goes on with the seed it names.
    const newSeed = seed !== undefined && seed.dataset === '.' && !seed.resume;
    if (seed && !newSeed && seed.base !== held)
      throw new OcsError('conflict', 'the import holds no part of this seed: send it from its top');
    const step = seed ? 'seed' : since ? 'increment' : 'receive';
    const audit = (outcome: 'ok' | 'refused' | 'failed', code?: ErrorCode) =>
      this.d.audit.append({
        actor: `node:${row.importFrom!.identityKey}`,
        action: 'space.import',
        target: row.id,
        outcome,
        ...(code ? { code } : {}),
        detail: {
          step,
          node: head.node.fingerprint.slice(0, 128),
          ...(seed ? { dataset: seed.dataset, ...(seed.resume ? { resumed: true } : {}) } : {}),
        },
      });
    const importFrom = { ...row.importFrom!, seed: undefined };
    return this.receive(row, head, {
      from: 'importing',
      image: seed ? 'seed' : since ? 'increment' : 'whole',
      ...(seed ? { seed } : {}),
      // A new seed, or the whole space after all: what an earlier seed left goes first. The
      // new seed's base is the import's from its first byte, so its parts and a resume follow.
      before:
        newSeed || (held !== undefined && since === undefined && seed === undefined)
          ? async () => {
              if (held !== undefined) await this.d.storage.destroy(row.id);
              this.d.repo.setImportFrom(row.id, newSeed ? { ...importFrom, seed: seed.base } : importFrom);
            }
          : undefined,
      audit,
      kept: () => {
        const expiresAt = this.d.clock.now() + IMPORT_WAIT_MS;
        // A seed waits, still `importing`, for the increment that completes it.
        if (seed) return this.d.repo.setImportFrom(row.id, { ...importFrom, seed: seed.base, expiresAt });
        this.d.repo.setImportFrom(row.id, { ...importFrom, expiresAt });
        this.d.repo.setState(row.id, ['importing'], 'prepared');
        failpoint('import.prepared');
      },
    });
  }

  /**
   * An import as its source sees it: what it holds of a move's seed, so that a seed cut short
   * goes on where it stopped (`conflict` while an archive still arrives: ask again).
   */
  async importState(row: SpaceRow): Promise<ImportState> {
    if (this.receiving.has(row.id)) throw new OcsError('conflict', 'an archive is still arriving');
    const base = row.importFrom?.seed;
    const storage = this.d.storage;
    if (row.state !== 'importing' || base === undefined || !receivesSeeds(storage))
      return { spaceId: row.id, state: row.state };
    return { spaceId: row.id, state: row.state, seed: { base, ...(await storage.seedState(row.id)) } };
  }

  /**
   * The source's commit: a prepared space becomes this node's, `locked`, for its owner to
   * unlock. Idempotent: a commit of an import already committed answers the same, so a source
   * that lost the first answer may ask again.
   */
  commitImport(row: SpaceRow): Space {
    const from = row.importFrom!;
    if (from.committedAt !== undefined) return this.view(row);
    // Dropped (expired, aborted, destroyed by its owner) before any commit: never this node's,
    // and the source, told so, keeps the space.
    if (row.state === 'destroyed' || row.state === 'destroying') throw new OcsError('not_found', 'no such import');
    if (row.state !== 'prepared')
      throw new OcsError('conflict', `the import is ${row.state}: only a prepared import commits`);
    this.d.repo.setImportFrom(row.id, { ...from, committedAt: this.d.clock.now() });
    this.d.repo.setState(row.id, ['prepared'], 'locked');
    // A space that once moved away from here is back: here is where it is.
    this.d.repo.forgetTombstone(row.id);
    this.d.audit.append({
      actor: `node:${from.identityKey}`,
      action: 'space.import',
      target: row.id,
      outcome: 'ok',
      detail: { step: 'commit' },
    });
    failpoint('import.committed');
    return this.view(this.get(row.id));
  }

  /** Drops an import its source gave up (idempotent); a committed one is this node's and stays. */
  async abortImport(row: SpaceRow): Promise<void> {
    if (row.importFrom?.committedAt !== undefined)
      throw new OcsError('conflict', "the import was committed: the space is this node's now");
    if (row.state === 'destroyed') return;
    if (this.receiving.has(row.id))
      throw new OcsError('conflict', 'the archive is still arriving; a cut stream drops the import by itself');
    await this.dropImport(row.id, `node:${row.importFrom!.identityKey}`, undefined);
  }

  /**
   * Drops imports not committed in time (a source that never sent, or never committed); with
   * `all` (a drain), every import not arriving right now: its source's commit then finds none,
   * and the space stays there.
   */
  async expireImports(o: { all?: boolean } = {}): Promise<void> {
    const now = this.d.clock.now();
    for (const row of this.d.repo.list({})) {
      if (row.state !== 'importing' && row.state !== 'prepared') continue;
      if (this.receiving.has(row.id) || !row.importFrom || (!o.all && row.importFrom.expiresAt > now)) continue;
      const why = o.all
        ? new OcsError('node_draining', 'the node is being drained')
        : new OcsError('conflict', 'the import expired');
      await this.dropImport(row.id, 'node', why).catch((err: unknown) =>
        this.d.logger.error({ err, spaceId: row.id }, 'an expired import could not be dropped'),
      );
    }
  }

  /** Everything of an uncommitted import gone: host objects, record, capacity. */
  async dropImport(id: string, actor: string, why: unknown): Promise<void> {
    await this.teardownHost(id);
    this.d.repo.setState(id, ['importing', 'prepared', 'destroying'], 'destroying');
    this.d.repo.setState(id, ['destroying'], 'destroyed');
    this.d.ledger.release(id);
    this.d.audit.append({
      actor,
      action: 'space.import',
      target: id,
      outcome: why === undefined ? 'ok' : 'failed',
      ...(isOcsError(why) ? { code: why.code } : {}),
      detail: { step: 'drop' },
    });
  }

  /** An archive of another storage backend than this node's is `archive_backend`. */
  private requireBackend(head: ArchiveHead): void {
    const node = this.d.storage.kind;
    if (head.backend !== node)
      throw new OcsError('archive_backend', `the archive holds ${head.backend} storage; this node's is ${node}`, {
        archive: head.backend,
        node,
      });
  }

  /** A new space's record in the ledger, `creating`, holding what it asked for (or `capacity_exceeded`). */
  private reserve(
    principal: Principal,
    req: CreateSpaceRequest,
    owner: Ed25519PublicKey,
    as: { id: string; state: 'importing' } | undefined = undefined,
  ): SpaceRow {
    this.refuseIfDraining();
    const now = this.d.clock.now();
    return this.d.ledger.reserve({
      id: as?.id ?? newId('sp'),
      org: principal.org,
      name: req.name ?? null,
      ownerKey: owner.toBase64url(),
      ownerFingerprint: owner.fingerprint(),
      cpuMillicores: req.resources.cpuMillicores,
      memoryBytes: req.resources.memoryBytes,
      storageBytes: req.resources.storageBytes,
      pids: req.resources.pids ?? null,
      ports: req.resources.ports ?? 0,
      state: as?.state ?? 'creating',
      leaseExpiresAt: now + req.leaseSeconds * 1000,
      graceUntil: now + (req.leaseSeconds + this.d.graceSeconds) * 1000,
      createdAt: now,
    });
  }

  /** The space's cgroups: the space, its API process's, its workloads'. */
  private async createCgroups(row: SpaceRow): Promise<void> {
    const layout = spaceCgroupLayout(this.d.cgroupParent, row.id);
    const limits = spaceCgroupLimits(row, this.d.apiCpuMillicores);
    await this.d.cgroups.create(layout.space, limits.space);
    await this.d.cgroups.create(layout.api, limits.api);
    await this.d.cgroups.create(layout.workloads, limits.workloads);
  }

  /**
   * Locks the space: `locking` at once (nothing of it runs or opens again from here), then its
   * process, its workloads and its key go, and it is `locked`. The answer waits for that at most
   * `LOCK_ANSWER_MS` and says where it is: `locking` means still shutting down (a container in
   * its stop grace, a VM shutting down, a file fscrypt cannot evict while it is open), and the
   * lock goes on in the background, tried again until it ends. `wait`: answer once `locked` (a
   * move's or a drain's first step), or `unavailable` after `LOCK_WAIT_MS`.
   */
  async lock(actor: string, id: string, o: { wait?: boolean } = {}): Promise<Space> {
    const row = this.get(id);
    if (row.state === 'locked' || row.state === 'expired') return this.view(row);
    if (row.state !== 'locking') {
      this.requireState(row, ['active']);
      this.d.repo.setState(id, ['active'], 'locking');
    }
    const waited = await settledWithin(this.lockTask(actor, id), o.wait ? LOCK_WAIT_MS : LOCK_ANSWER_MS);
    if (o.wait && !waited)
      throw new OcsError('unavailable', 'the space is still shutting down (locking); try again when it is locked', {
        spaceId: id,
      });
    return this.view(this.get(id));
  }

  /**
   * After a restart: locks cut short go on, and the start waits for them (at most
   * `RESUME_LOCKS_MS` in all) so that what the node first answers is locked; a lock that takes
   * longer goes on in the background.
   */
  async resumeLocks(): Promise<void> {
    const tasks = this.d.repo
      .list({})
      .filter((r) => r.state === 'locking')
      .map((r) => this.lockTask('node', r.id));
    await settledWithin(Promise.all(tasks), RESUME_LOCKS_MS);
  }

  /**
   * The lock of a `locking` space, one per space: its process, its workloads, its key, then
   * `locked`. A step that fails is tried again (backing off) for as long as the space is
   * `locking`; a destroy meanwhile ends it. Never rejects.
   */
  private lockTask(actor: string, id: string): Promise<void> {
    const running = this.locks.get(id);
    if (running) return running.task;
    const started = this.d.clock.now();
    const entry: LockProgress = { step: 'process', since: started, task: Promise.resolve() };
    entry.task = (async () => {
      for (let attempt = 0; ; attempt++) {
        if (this.d.repo.get(id)?.state !== 'locking') return;
        try {
          entry.step = 'process';
          await this.d.processes.stop(id);
          entry.step = 'workloads';
          await this.d.workloads.stopAll(id);
          entry.step = 'storage';
          await this.d.storage.lock(id);
          this.d.repo.setState(id, ['locking'], 'locked');
          this.d.audit.append({
            actor,
            action: 'space.lock',
            target: id,
            outcome: 'ok',
            detail: { seconds: Math.round((this.d.clock.now() - started) / 100) / 10 },
          });
          return;
        } catch (err) {
          // Said in the space's view (`locking.error`); the detail goes to the log only.
          entry.error = isOcsError(err) ? err.message : `the ${entry.step} step failed on the node; it is tried again`;
          this.d.logger.warn({ err, spaceId: id, step: entry.step }, 'the lock did not end yet; trying again');
          await pause(Math.min(LOCK_RETRY_MAX_MS, 500 * 2 ** attempt));
        }
      }
    })().finally(() => {
      if (this.locks.get(id) === entry) this.locks.delete(id);
    });
    this.locks.set(id, entry);
    return entry.task;
  }

  async unlock(actor: string, id: string, sealedKey: string): Promise<Space> {
    const row = this.get(id);
    if (row.state === 'expired') throw new OcsError('lease_expired', 'the lease has expired: renew it first');
    if (row.state === 'active') throw new OcsError('space_unlocked', 'the space is already unlocked');
    this.requireState(row, ['locked']);
    this.requireNotExporting(id);
    const key = await this.openSealed(sealedKey);
    count(this.opening, id, +1);
    try {
      await this.d.storage.unlock(id, key);
    } finally {
      key.fill(0);
      count(this.opening, id, -1);
    }
    const { mountpoint, root } = await this.d.storage.info(id);
    if (row.remapFrom) {
      // A restored space: its files still have the owners of the node it came from, and its
      // workloads their old ids. Mapped before anything of the space runs, and
      // forgotten only once done (cut short by a crash, it runs again at the next unlock: each
      // step is idempotent, and the walk never moves an id twice). One that fails leaves the
      // space as locked as it was, for the next unlock to try again.
      try {
        // The volumes under their new ids, and open: on ZFS each is a filesystem of its own,
        // mounted only then, and the walk must reach its files.
        await this.d.workloads.rename(id, mountpoint, row.remapFrom);
        await this.d.workloads.open(id, mountpoint);
        const volumes = this.d.workloadRows.list(id, 'volume').map((w) => this.d.storage.volumePath(id, w.id));
        await this.d.remapFiles(row, root, row.remapFrom.placement, [mountpoint, ...volumes]);
        await this.d.workloads.remap(id, mountpoint, row.remapFrom);
      } catch (err) {
        await this.d.workloads.kill(id).catch(() => undefined);
        await this.d.storage
          .lock(id)
          .catch((e: unknown) =>
            this.d.logger.error({ err: e, spaceId: id }, 'a restored space could not be locked again'),
          );
        throw err;
      }
      this.d.repo.setRemapFrom(id, null);
    } else await this.d.workloads.open(id, mountpoint);
    this.d.repo.setState(id, ['locked'], 'active');
    this.d.audit.append({ actor, action: 'space.unlock', target: id, outcome: 'ok' });
    await this.d.workloads.restore(id, mountpoint);
    return this.view(this.get(id));
  }

  async rotateKey(actor: string, id: string, sealedKey: string): Promise<{ wrappedKey: string }> {
    const row = this.get(id);
    this.requireState(row, ['active', 'locked']);
    this.requireNotExporting(id);
    const oldKey = await this.openSealed(sealedKey);
    const newKey = new Uint8Array(randomBytes(KEY_BYTES));
    // A locked space's storage is mounted for the rotation: no archive reads it meanwhile.
    count(this.opening, id, +1);
    try {
      await this.d.storage.rotateKey(id, oldKey, newKey);
      const wrappedKey = await wrapKey(newKey, parsePublicKey(row.ownerKey));
      this.d.audit.append({ actor, action: 'space.rotate-key', target: id, outcome: 'ok' });
      return { wrappedKey };
    } finally {
      count(this.opening, id, -1);
      oldKey.fill(0);
      newKey.fill(0);
    }
  }

  renew(actor: string, id: string, leaseSeconds: number): Space {
    const row = this.get(id);
    this.requireState(row, ['active', 'locking', 'locked', 'expired']);
    if (leaseSeconds > this.d.maxLeaseSeconds) {
      throw new OcsError('invalid_request', `leaseSeconds is over this node's maximum of ${this.d.maxLeaseSeconds}`, {
        field: '/leaseSeconds',
      });
    }
    // A renew extends, never shortens: cutting a lease short would lock and, after the grace
    // period, destroy the owner's data.
    const expiresAt = Math.max(this.d.clock.now() + leaseSeconds * 1000, row.leaseExpiresAt);
    this.d.repo.renew(id, expiresAt, expiresAt + this.d.graceSeconds * 1000);
    // An expired space stays locked after renewal: only its owner's key can open it again.
    if (row.state === 'expired') this.d.repo.setState(id, ['expired'], 'locked');
    this.d.audit.append({ actor, action: 'space.renew', target: id, outcome: 'ok' });
    return this.view(this.get(id));
  }

  /** Lease expiry: lock and stop everything, keep the data until the grace period ends. */
  async expire(id: string): Promise<void> {
    const row = this.d.repo.get(id);
    if (!row || !['active', 'locked'].includes(row.state)) return;
    await this.d.processes.stop(id);
    await this.d.workloads.stopAll(id);
    await this.d.storage.lock(id);
    this.d.repo.setState(id, ['active', 'locked'], 'expired');
    this.d.audit.append({ actor: 'node', action: 'space.expire', target: id, outcome: 'ok' });
  }

  async destroy(actor: string, id: string): Promise<void> {
    // One teardown at a time: a second request would tear down what the first is removing
    // (a cgroup gone under its feet is ENODEV). `destroying` without one in flight is a crash's
    // leftover, and is finished here.
    if (this.destroying.has(id)) throw new OcsError('conflict', 'the space is being destroyed');
    const row = this.get(id);
    this.requireNotExporting(id);
    if (this.receiving.has(id)) throw new OcsError('conflict', 'the space is arriving; try again when it has');
    this.destroying.add(id);
    try {
      if (row.state !== 'destroying')
        this.d.repo.setState(
          id,
          ['active', 'locking', 'locked', 'expired', 'failed', 'creating', 'importing', 'prepared'],
          'destroying',
        );
      await this.teardownHost(id);
      this.d.repo.setState(id, ['destroying'], 'destroyed');
    } finally {
      this.destroying.delete(id);
    }
    this.d.ledger.release(id);
    this.d.audit.append({ actor, action: 'space.destroy', target: id, outcome: 'ok' });
  }

  /** Idempotent: safe to run again after a crash halfway through. */
  async teardownHost(id: string): Promise<void> {
    await this.d.processes.stop(id);
    await this.d.workloads.removeAll(id);
    await this.d.cgroups.destroy(spaceCgroupLayout(this.d.cgroupParent, id).space);
    await this.d.storage.destroy(id);
    // Last: with its cgroup gone, nothing of the space's uid is left to write there again.
    await this.d.processes.forget(id);
  }

  /**
   * A move's first step on its source: the space locked (if it ran, as a lock by its owner
   * would), then `moving`, with its target recorded in the same write. From here nothing else
   * can open, re-key, export, renew or destroy it until the move ends one way or the other.
   */
  async beginMove(actor: string, id: string, to: Omit<MoveTo, 'startedAt'>): Promise<SpaceRow> {
    const row = this.get(id);
    if (row.state === 'active' || row.state === 'locking') await this.lock(actor, id, { wait: true });
    failpoint('move.locked');
    // An expired space only leaves as a drain's export; a move to a node needs a live lease.
    const from: SpaceState[] = to.archive === undefined ? ['locked'] : ['locked', 'expired'];
    this.requireState(this.get(id), from);
    this.requireNotExporting(id);
    if (this.destroying.has(id)) throw new OcsError('conflict', 'the space is being destroyed');
    if (this.opening.has(id)) throw new OcsError('conflict', 'the space is being unlocked or re-keyed');
    return this.d.repo.setMoveState(id, from, 'moving', { ...to, startedAt: this.d.clock.now() });
  }

  /** A move that did not commit: the space is locked here again, as it was. */
  endMoveAborted(actor: string, id: string, from: 'moving' | 'committing', why: unknown): void {
    this.d.repo.setMoveState(id, [from], 'locked', null);
    failpoint('move.aborted');
    this.d.audit.append({
      actor,
      action: 'space.move',
      target: id,
      outcome: isOcsError(why) && why.status < 500 ? 'refused' : 'failed',
      code: isOcsError(why) ? why.code : 'host_failed',
    });
  }

  /**
   * The target answered the commit: the space is the target's. What is left of it here goes
   * (its process, workloads, cgroups, storage), and its record becomes a tombstone at once with
   * the capacity it frees. Safe to run again after a crash halfway.
   */
  async finishMove(actor: string, id: string, tombstone: TombstoneRow): Promise<void> {
    const row = this.d.repo.get(id);
    if (!row || row.state === 'destroyed') return;
    // Torn down while still `committing`: a crash halfway restarts as a commit, which the
    // target answers again, and this runs again (never `destroying` without its tombstone).
    // An export (a drain's, into a file) ends from `moving`: nothing else holds the space.
    await this.teardownHost(id);
    failpoint('move.torn-down');
    this.d.repo.recordMoved(tombstone, tombstone.archive ? ['moving'] : ['committing']);
    this.d.ledger.release(id);
    this.d.audit.append({
      actor,
      action: tombstone.archive ? 'space.export' : 'space.move',
      target: id,
      outcome: 'ok',
      detail: tombstone.archive
        ? { archive: tombstone.archive, leaves: true }
        : { to: tombstone.url.slice(0, 256), fingerprint: tombstone.fingerprint },
    });
  }

  /**
   * Opens a locked (or expired) space's image for an archive. Until `done` is called, the space
   * cannot be unlocked, re-keyed or destroyed: the image read is the image at rest. An active
   * space is `space_unlocked`: fscrypt cannot copy a live space consistently (no snapshot on
   * ext4 over a loop device), so the owner locks it first, and the CLI says so.
   */
  async openExport(
    actor: string,
    id: string,
    o: {
      /** A move's own export: the space is `moving` (see `beginMove`). */
      moving?: boolean;
      /**
       * One dataset of a move's seed (`openSeed`), sent before the lock, the space `active`;
       * with `token`, the rest of it from where the target's copy stopped.
       */
      seed?: { base: string; dataset: string; token?: string };
      /** A move's export after a seed: only what changed since it. */
      since?: string;
    } = {},
  ): Promise<{
    row: SpaceRow;
    image: StorageImage;
    /** What the archive's head says of its image beyond its size: a seed's base, an increment's. */
    imageHead: Pick<ArchiveHead['image'], 'seed' | 'since'>;
    backend: StorageDriver['kind'];
    done(ok: boolean): Promise<void>;
  }> {
    const row = this.get(id);
    if (o.seed) this.requireState(row, ['active']);
    else if (row.state === 'active')
      throw new OcsError('space_unlocked', 'lock the space first: its storage is copied only at rest');
    else this.requireState(row, o.moving ? ['moving'] : ['locked', 'expired']);
    if (this.destroying.has(id)) throw new OcsError('conflict', 'the space is being destroyed');
    if (this.opening.has(id)) throw new OcsError('conflict', 'the space is being unlocked or re-keyed');
    const storage = this.d.storage;
    if (!readsImages(storage))
      throw new OcsError('unavailable', `this node's storage (${storage.kind}) cannot export a space yet`);
    if ((o.seed || o.since !== undefined) && !sendsSeeds(storage))
      throw new OcsError('unavailable', `this node's storage (${storage.kind}) sends no seed`);
    count(this.exporting, id, +1);
    let image: StorageImage;
    let imageHead: Pick<ArchiveHead['image'], 'seed' | 'since'> = {};
    try {
      if (o.seed) {
        image = await (storage as StorageDriver & SeedSource).openSeedPart(id, o.seed);
        const { base, dataset, token } = o.seed;
        imageHead = { seed: { base, dataset, ...(token !== undefined ? { resume: true as const } : {}) } };
      } else if (o.since !== undefined) {
        image = await (storage as StorageDriver & SeedSource).openImage(id, { since: o.since });
        imageHead = { since: o.since };
      } else image = await storage.openImage(id);
    } catch (err) {
      count(this.exporting, id, -1);
      throw err;
    }
    let ended = false;
    return {
      row,
      image,
      imageHead,
      backend: storage.kind,
      done: async (ok) => {
        if (ended) return;
        ended = true;
        await image.close().catch(() => undefined);
        count(this.exporting, id, -1);
        this.d.audit.append({
          actor,
          action: 'space.export',
          target: id,
          // Failed: the stream was cut (the client went away, or the image could not be read).
          outcome: ok ? 'ok' : 'failed',
        });
      },
    };
  }

  /**
   * Takes a move's seed of an active space (ZFS only): a snapshot its datasets are then sent
   * from one by one (`openExport`'s `seed`), while the space runs on.
   */
  async openSeed(id: string): Promise<SeedPlan> {
    const row = this.get(id);
    this.requireState(row, ['active']);
    if (this.destroying.has(id)) throw new OcsError('conflict', 'the space is being destroyed');
    const storage = this.d.storage;
    if (!sendsSeeds(storage)) throw new OcsError('unavailable', `this node's storage (${storage.kind}) sends no seed`);
    return storage.openSeed(id);
  }

  private requireNotExporting(id: string): void {
    if (this.exporting.has(id))
      throw new OcsError('conflict', 'the space is being exported; try again when the archive is complete');
  }

  private requireState(row: SpaceRow, allowed: SpaceState[]): void {
    if (allowed.includes(row.state)) return;
    if (row.state === 'expired') throw new OcsError('lease_expired', 'the lease has expired');
    if (row.state === 'locked') throw new OcsError('space_locked', 'the space is locked');
    throw new OcsError('conflict', `the space is ${row.state}`);
  }

  /** Opens a space key sealed (age) to the node's unlock recipient. */
  private async openSealed(sealed: string): Promise<Uint8Array> {
    let key: Uint8Array;
    try {
      const d = new Decrypter();
      d.addIdentity(this.d.unlockIdentity);
      const bytes = sealed.trimStart().startsWith('-----BEGIN AGE') ? armor.decode(sealed) : base64ToBytes(sealed);
      key = await d.decrypt(bytes);
    } catch {
      throw new OcsError('unwrap_failed', "the sealed key could not be opened with this node's unlock key");
    }
    if (key.length !== KEY_BYTES) {
      key.fill(0);
      throw new OcsError('unwrap_failed', 'the sealed key is not a space key');
    }
    return key;
  }
}

/**
 * What a restore refuses in an archive's head before anything is reserved: an image that is not
 * the size the space's storage would be, and workloads that do not fit the space's resources.
 */
function checkArchiveFits(head: ArchiveHead): void {
  const bad = (why: string) => new OcsError('archive_malformed', `the archive's head is inconsistent: ${why}`);
  if (head.image.bytes !== archiveImageBytes(head.backend, head.resources.storageBytes))
    throw bad('its image is not the size of its storage');
  if ((head.image.seed || head.image.since) && head.backend !== 'zfs')
    throw bad('only a ZFS image is sent as a seed and its increment');
  if (head.image.seed && head.image.since) throw bad('its image is both a seed and an increment');
  const sum = { cpuMillicores: 0, memoryBytes: 0, storageBytes: 0, pids: 0 };
  const ids = new Set<string>();
  for (const w of head.workloads) {
    if (ids.has(w.id) || !w.id.startsWith(w.kind === 'volume' ? 'vol_' : w.kind === 'vm' ? 'vm_' : 'ctr_'))
      throw bad(`workload ${w.id} is listed twice or under another kind`);
    ids.add(w.id);
    for (const k of ['cpuMillicores', 'memoryBytes', 'storageBytes', 'pids'] as const) sum[k] += w[k];
  }
  for (const k of ['cpuMillicores', 'memoryBytes', 'storageBytes'] as const)
    if (sum[k] > head.resources[k]) throw bad(`its workloads hold more ${k} than the space`);
  if (head.resources.pids !== undefined && sum.pids > head.resources.pids)
    throw bad('its workloads hold more pids than the space');
  const published = head.published ?? [];
  if (published.length > (head.resources.ports ?? 0)) throw bad('it publishes more ports than the space reserved');
  for (const p of published)
    if (!ids.has(p.workloadId)) throw bad(`it publishes a port of ${p.workloadId}, which it does not hold`);
}

/**
 * Lays out a new space's storage (see {@link spaceDataLayout}): the space process gets a home
 * of its own uid; what the node keeps there stays root's, beside it, where the space cannot
 * rename or replace it.
 */
export async function prepareSpaceData(mountpoint: string, uid: number): Promise<void> {
  const l = spaceDataLayout(mountpoint);
  await chown(l.root, 0, 0);
  await chmod(l.root, 0o711);
  for (const [dir, mode] of [
    [l.node, 0o711],
    [l.keys, 0o700],
    [l.spool, 0o700],
    [l.vms, 0o711],
  ] as const) {
    await mkdir(dir, { mode });
    await chmod(dir, mode);
  }
  for (const dir of [l.space, l.state, l.files]) {
    await mkdir(dir, { mode: 0o700 });
    await chown(dir, uid, uid);
  }
}

function base64ToBytes(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s, 'base64'));
}

/** Operations in flight on a space, counted: several of one kind may run at once. */
function count(inFlight: Map<string, number>, id: string, by: 1 | -1): void {
  const n = (inFlight.get(id) ?? 0) + by;
  if (n > 0) inFlight.set(id, n);
  else inFlight.delete(id);
}

/** A tombstone as the API shows it (`space_moved`'s details). */
export function tombstoneView(t: TombstoneRow): Tombstone {
  return {
    spaceId: t.spaceId,
    ...(t.archive ? { archive: { name: t.archive } } : { to: { url: t.url, fingerprint: t.fingerprint } }),
    movedAt: iso(t.movedAt),
    signature: t.signature,
  };
}

/** What a space's view says of its delegation (its grant; the signature is the node's to check). */
function delegationView(jws: string): Space['delegation'] {
  try {
    const g = readDelegation(jws);
    return { nodes: g.nodes, orchestrators: g.orchestrators, notAfter: g.notAfter };
  } catch {
    return undefined;
  }
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

export function resourcesOf(row: SpaceRow): Resources {
  return {
    cpuMillicores: row.cpuMillicores,
    memoryBytes: row.memoryBytes,
    storageBytes: row.storageBytes,
    ...(row.pids ? { pids: row.pids } : {}),
    ...(row.ports ? { ports: row.ports } : {}),
  };
}
