/**
 * Space records: who owns a space, what it reserved, where it is in its life, and the
 * unprivileged uid its processes run as. Capacity accounting lives in the ledger, which inserts
 * through `insertSpace` below so that the check and the insert share one transaction.
 */
import { OcsError, SPACE_STATES, assertNever, isSpaceId } from '@ocs/protocol';
import type { ArchiveHead, Egress, SpaceState } from '@ocs/protocol';
import type { Clock } from '../clock.js';
import type { Database } from './db.js';
import { ClockedStore, resourceColumns } from './store.js';
import { LIVE_STATES_SQL } from './space-states.js';

/** One space record, as stored. Times are unix milliseconds. */
export interface SpaceRow {
  /** `sp_` + 20 base32 characters. */
  id: string;
  org: string;
  /** The bound owner key: raw Ed25519 public key, base64url (43 characters). */
  ownerKey: string;
  ownerFingerprint: string;
  name: string | null;
  cpuMillicores: number;
  memoryBytes: number;
  storageBytes: number;
  /** null: the space has no pids limit of its own. */
  pids: number | null;
  state: SpaceState;
  /** The space processes' unprivileged uid, unique among spaces not destroyed. */
  uid: number;
  leaseExpiresAt: number;
  graceUntil: number;
  createdAt: number;
  updatedAt: number;
  /** When the space stopped counting against capacity (see `Ledger.release`), else null. */
  releasedAt: number | null;
  /** First of its 65,536 subordinate ids, once it ran a container; else null. */
  subidBase: number | null;
  /** Its container network, once it ran a container; else null. */
  subnet: string | null;
  /** How many of the node's ports it may publish at once (counted by the ledger). */
  ports: number;
  /** Where its workloads may reach out (the owner's choice within the node's policy). */
  egress: Egress;
  /**
   * A restored space whose files are still owned by the ids of the node it came from (the
   * archive's placement): its first unlock maps them to its own, then this is null.
   */
  remapFrom: RemapFrom | null;
  /** On a move's target, until the move is committed and after: where it comes from. */
  importFrom: ImportFrom | null;
  /** On a move's source (`moving`, `committing`): where it goes. */
  moveTo: MoveTo | null;
  /** The owner's delegation (a compact JWS), as kept: checked again at each use. */
  delegation: string | null;
}

/** A move's target end: which node may send, commit or abort it, and until when it waits. */
export interface ImportFrom {
  /** base64url Ed25519 identity key of the source node. */
  identityKey: string;
  /** An import not prepared and committed by then is dropped (unix ms). */
  expiresAt: number;
  /** Set by the commit (unix ms): from then on the space is this node's. */
  committedAt?: number;
  /** The base of the seed held for it (ZFS): the source sends only what changed since. */
  seed?: string;
}

/** A move's source end: the target, as the owner named it. */
export interface MoveTo {
  url: string;
  fingerprint: string;
  startedAt: number;
  /** A drain's export instead: the archive file it goes into (url and fingerprint empty). */
  archive?: string;
}

/** What a node keeps of a space that moved away: where to, when, signed by its identity key. */
export interface TombstoneRow {
  spaceId: string;
  /** The node it moved to (empty for an export). */
  url: string;
  fingerprint: string;
  /** A drain exported it into this file of the export directory instead; else null. */
  archive: string | null;
  movedAt: number;
  signature: string;
}

/** The ids and subnet a space's files and network name on a node (an archive head's `placement`). */
export type Placement = ArchiveHead['placement'];

/** What a restored space's first unlock maps: the old placement, and its workloads' old ids to their new ones. */
export interface RemapFrom {
  /** The archived space: names in its engine's store (its images, its containers) carry its id. */
  spaceId: string;
  /**
   * This arrival of the space, random: what was done of its remap is recorded under it (a space
   * that moves away and back is the same space, with the same id, arriving again).
   */
  arrival?: string;
  placement: Placement;
  workloadIds: Record<string, string>;
  /** What it published where it came from (old workload ids): published again here. */
  published?: NonNullable<ArchiveHead['published']>;
}

/** What a caller supplies to create a record; the uid and bookkeeping times are filled in. */
export interface NewSpace {
  id: string;
  org: string;
  ownerKey: string;
  ownerFingerprint: string;
  name?: string | null;
  cpuMillicores: number;
  memoryBytes: number;
  storageBytes: number;
  pids?: number | null;
  /** Ports it may publish; default 0. */
  ports?: number;
  /** Defaults to 'creating'. */
  state?: SpaceState;
  leaseExpiresAt: number;
  graceUntil: number;
  /** Defaults to the clock's now. */
  createdAt?: number;
}

export interface SpacesRepoOptions {
  /** First uid handed to a space. */
  uidBase: number;
  /** Size of the range: uids are taken from [uidBase, uidBase + uidCount). */
  uidCount: number;
  clock?: Clock;
}

/**
 * Legal moves of the state machine. `setState` refuses anything else, so that a bug cannot,
 * for instance, revive a failed space whose capacity was already released.
 */
export function canTransition(from: SpaceState, to: SpaceState): boolean {
  switch (from) {
    case 'creating':
      // Locked: a restored space, made from an archive, waits for its owner's key.
      return to === 'active' || to === 'locked' || to === 'failed' || to === 'destroying';
    // A lock answers at once (`locking`) and ends `locked` once the space has shut down.
    case 'active':
      return to === 'locking' || to === 'locked' || to === 'expired' || to === 'failed' || to === 'destroying';
    case 'locking':
      return to === 'locked' || to === 'expired' || to === 'failed' || to === 'destroying';
    case 'locked':
      return to === 'active' || to === 'expired' || to === 'failed' || to === 'destroying' || to === 'moving';
    // A move's target: only the source's commit makes a prepared space this node's (locked).
    case 'importing':
      return to === 'prepared' || to === 'failed' || to === 'destroying';
    case 'prepared':
      return to === 'locked' || to === 'destroying';
    // A move's source: aborted before `committing`, the space is locked here as it was; from
    // `committing` it leaves once the target answered the commit (or is locked again if the
    // target says it holds no such import: it was never the target's).
    // A drain's export (into a file, no target to commit) leaves from `moving` itself.
    case 'moving':
      return to === 'locked' || to === 'committing' || to === 'destroying';
    case 'committing':
      return to === 'destroying' || to === 'locked';
    case 'expired':
      // Renewal brings an expired space back as locked: only the owner's key opens it again.
      // A drain exports it (`moving`): in its grace its owner may restore it elsewhere.
      return to === 'locked' || to === 'failed' || to === 'destroying' || to === 'moving';
    case 'failed':
      return to === 'destroying';
    case 'destroying':
      return to === 'destroyed';
    case 'destroyed':
      return false;
    default:
      return assertNever(from, 'space state');
  }
}

const OWNER_KEY_RE = /^[A-Za-z0-9_-]{43}$/;

interface DbRow {
  id: string;
  org: string;
  owner_key: string;
  owner_fingerprint: string;
  name: string | null;
  cpu_millicores: number;
  memory_bytes: number;
  storage_bytes: number;
  pids: number | null;
  state: SpaceState;
  uid: number;
  lease_expires_at: number;
  grace_until: number;
  created_at: number;
  updated_at: number;
  released_at: number | null;
  subid_base: number | null;
  subnet: string | null;
  ports: number | null;
  egress: string | null;
  remap_from: string | null;
  import_from: string | null;
  move_to: string | null;
  delegation: string | null;
}

function parseEgress(text: string | null): Egress {
  if (text === null) return { mode: 'none' };
  const e = JSON.parse(text) as Egress;
  return e.mode === 'list' ? { mode: 'list', allow: [...e.allow] } : { mode: e.mode };
}

function fromDb(r: DbRow): SpaceRow {
  return {
    id: r.id,
    org: r.org,
    ownerKey: r.owner_key,
    ownerFingerprint: r.owner_fingerprint,
    name: r.name,
    ...resourceColumns(r),
    state: r.state,
    uid: r.uid,
    leaseExpiresAt: r.lease_expires_at,
    graceUntil: r.grace_until,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    releasedAt: r.released_at,
    subidBase: r.subid_base ?? null,
    subnet: r.subnet ?? null,
    ports: r.ports ?? 0,
    egress: parseEgress(r.egress ?? null),
    remapFrom: r.remap_from ? (JSON.parse(r.remap_from) as RemapFrom) : null,
    importFrom: r.import_from ? (JSON.parse(r.import_from) as ImportFrom) : null,
    moveTo: r.move_to ? (JSON.parse(r.move_to) as MoveTo) : null,
    delegation: r.delegation ?? null,
  };
}

function isCount(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
}

/** Refuses a malformed record before it reaches SQL (the table's CHECKs are the backstop). */
export function checkNewSpace(s: NewSpace): void {
  const bad = (field: string, why: string): never => {
    throw new OcsError('invalid_request', `space record: ${field} ${why}`, { field });
  };
  if (!isSpaceId(s.id)) bad('id', 'must be sp_ followed by 20 base32 characters');
  if (!OWNER_KEY_RE.test(s.ownerKey)) bad('ownerKey', 'must be a raw Ed25519 key in base64url');
  if (s.org.length === 0) bad('org', 'must not be empty');
  if (s.ownerFingerprint.length === 0) bad('ownerFingerprint', 'must not be empty');
  for (const k of ['cpuMillicores', 'memoryBytes', 'storageBytes'] as const) {
    if (!isCount(s[k])) bad(k, 'must be a non-negative integer');
  }
  if (s.pids != null && !(isCount(s.pids) && s.pids > 0)) bad('pids', 'must be a positive integer');
  if (s.ports !== undefined && !(isCount(s.ports) && s.ports <= 65_535)) bad('ports', 'must be 0 to 65535');
  if (!Number.isSafeInteger(s.leaseExpiresAt)) bad('leaseExpiresAt', 'must be unix milliseconds');
  if (!Number.isSafeInteger(s.graceUntil) || s.graceUntil < s.leaseExpiresAt)
    bad('graceUntil', 'must not precede leaseExpiresAt');
}

/**
 * The lowest free uid in the recorded range, preferring one no record ever had: a uid is
 * reused (after its space was destroyed) only once the range has been used up, which leaves
 * any stray file a teardown missed as unlikely as possible to find a new owner.
 * Must run inside the transaction that then inserts the record.
 */
export function allocateUid(db: Database): number {
  const range = db.prepare('SELECT base, count FROM uid_range WHERE id = 1').get() as
    { base: number; count: number } | undefined;
  if (!range) throw new Error('no uid range recorded: construct a SpacesRepo before inserting spaces');
  const end = range.base + range.count;
  const top = db.prepare('SELECT max(uid) AS m FROM spaces WHERE uid >= ? AND uid < ?').get(range.base, end) as {
    m: number | null;
  };
  const fresh = top.m === null ? range.base : top.m + 1;
  if (fresh < end) return fresh;
  // Every uid has been used at least once: take the lowest one no live record holds.
  const gap = db
    .prepare(
      `SELECT c FROM (SELECT ? AS c UNION ALL SELECT uid + 1 FROM spaces WHERE state <> 'destroyed')
       WHERE c >= ? AND c < ? AND NOT EXISTS (SELECT 1 FROM spaces s WHERE s.uid = c AND s.state <> 'destroyed')
       ORDER BY c LIMIT 1`,
    )
    .pluck()
    .get(range.base, range.base, end) as number | undefined;
  if (gap === undefined) {
    throw new OcsError('capacity_exceeded', 'no free uid is left for another space', {
      resource: 'uids',
      requested: 1,
      available: 0,
    });
  }
  return gap;
}

/**
 * Inserts a record with a freshly allocated uid. No capacity check: callers other than the
 * ledger's reserve must hold their own reason to skip it. Runs in (or joins) one transaction.
 */
export function insertSpace(db: Database, s: NewSpace, now: number): SpaceRow {
  checkNewSpace(s);
  return db
    .transaction(() => {
      const uid = allocateUid(db);
      const createdAt = s.createdAt ?? now;
      try {
        db.prepare(
          `INSERT INTO spaces (id, org, owner_key, owner_fingerprint, name, cpu_millicores, memory_bytes, storage_bytes,
           pids, ports, state, uid, lease_expires_at, grace_until, created_at, updated_at, released_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)`,
        ).run(
          s.id,
          s.org,
          s.ownerKey,
          s.ownerFingerprint,
          s.name ?? null,
          s.cpuMillicores,
          s.memoryBytes,
          s.storageBytes,
          s.pids ?? null,
          s.ports ?? 0,
          s.state ?? 'creating',
          uid,
          s.leaseExpiresAt,
          s.graceUntil,
          createdAt,
          now,
        );
      } catch (err) {
        if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
          throw new OcsError('conflict', 'a space with this id already exists', { id: s.id });
        }
        throw err;
      }
      return fromDb(db.prepare('SELECT * FROM spaces WHERE id = ?').get(s.id) as DbRow);
    })
    .immediate();
}

/** The space records. All methods are synchronous and safe to share across processes. */
export class SpacesRepo extends ClockedStore {
  private readonly stmt;

  /**
   * Records the uid range in the database (so every process and the ledger allocate from the
   * same one). Shrinking the range never takes a uid away from a space that holds it.
   */
  constructor(db: Database, opts: SpacesRepoOptions) {
    super(db, opts.clock);
    if (
      !Number.isSafeInteger(opts.uidBase) ||
      opts.uidBase < 1 ||
      !Number.isSafeInteger(opts.uidCount) ||
      opts.uidCount < 1
    ) {
      throw new Error('uidBase and uidCount must be positive integers');
    }
    db.prepare(
      'INSERT INTO uid_range (id, base, count) VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE SET base = excluded.base, count = excluded.count',
    ).run(opts.uidBase, opts.uidCount);
    this.stmt = {
      get: db.prepare('SELECT * FROM spaces WHERE id = ?'),
      listAll: db.prepare('SELECT * FROM spaces ORDER BY created_at, id'),
      listOrg: db.prepare('SELECT * FROM spaces WHERE org = ? ORDER BY created_at, id'),
      setState: db.prepare('UPDATE spaces SET state = ?, updated_at = ? WHERE id = ? AND state = ?'),
      renew: db.prepare(
        `UPDATE spaces SET lease_expires_at = ?, grace_until = ?, updated_at = ?
         WHERE id = ? AND state IN ${LIVE_STATES_SQL}`,
      ),
      expired: db.prepare(
        `SELECT * FROM spaces WHERE state IN ('active','locked') AND lease_expires_at <= ? ORDER BY lease_expires_at, id`,
      ),
      pastGrace: db.prepare(
        // A moving space is the move's to end (it aborts back to locked, or leaves).
        `SELECT * FROM spaces WHERE state NOT IN ('destroyed','moving','committing') AND grace_until <= ? ORDER BY grace_until, id`,
      ),
      countByState: db.prepare('SELECT state, count(*) AS n FROM spaces GROUP BY state'),
    };
  }

  /**
   * Inserts a record with a freshly allocated uid, WITHOUT a capacity check. The daemon creates
   * spaces through `Ledger.reserve`; this is for tests and tools that restore records.
   */
  insert(space: NewSpace): SpaceRow {
    return insertSpace(this.db, space, this.clock.now());
  }

  get(id: string): SpaceRow | undefined {
    const r = this.stmt.get.get(id) as DbRow | undefined;
    return r && fromDb(r);
  }

  /** Every record (destroyed ones included: callers filter), oldest first. */
  list(filter: { org?: string } = {}): SpaceRow[] {
    const rows = (filter.org === undefined ? this.stmt.listAll.all() : this.stmt.listOrg.all(filter.org)) as DbRow[];
    return rows.map(fromDb);
  }

  /**
   * Compare-and-set: moves the space to `to` only if its state is one of `from` (checked and
   * written in one transaction, so two racing callers cannot both win) and the move is legal.
   * @throws OcsError not_found, or conflict naming the current state.
   */
  setState(id: string, from: readonly SpaceState[], to: SpaceState): SpaceRow {
    return this.db
      .transaction(() => {
        const row = this.get(id);
        if (!row) throw new OcsError('not_found', 'no such space', { id });
        if (!from.includes(row.state) || !canTransition(row.state, to)) {
          throw new OcsError('conflict', `the space is ${row.state}, not ${from.join(' or ')}`, {
            id,
            state: row.state,
            wanted: to,
          });
        }
        const now = this.clock.now();
        this.stmt.setState.run(to, now, id, row.state);
        // Destroyed spaces hold no capacity, whichever way they got there.
        if (to === 'destroyed')
          this.db.prepare('UPDATE spaces SET released_at = coalesce(released_at, ?) WHERE id = ?').run(now, id);
        return this.get(id)!;
      })
      .immediate();
  }

  /**
   * Moves the lease forward (or back). Refused for spaces being or already torn down.
   * @throws OcsError not_found, conflict, invalid_request.
   */
  renew(id: string, leaseExpiresAt: number, graceUntil: number): SpaceRow {
    if (!Number.isSafeInteger(leaseExpiresAt) || !Number.isSafeInteger(graceUntil) || graceUntil < leaseExpiresAt) {
      throw new OcsError('invalid_request', 'graceUntil must not precede leaseExpiresAt', { field: 'graceUntil' });
    }
    return this.db
      .transaction(() => {
        const changed = this.stmt.renew.run(leaseExpiresAt, graceUntil, this.clock.now(), id).changes;
        const row = this.get(id);
        if (!row) throw new OcsError('not_found', 'no such space', { id });
        if (changed === 0)
          throw new OcsError('conflict', `a ${row.state} space cannot be renewed`, { id, state: row.state });
        return row;
      })
      .immediate();
  }

  /**
   * What the lease scheduler must act on at `now`: `expired` are active or locked spaces whose
   * lease has run out (to lock and stop); `pastGrace` are spaces not yet destroyed whose grace
   * period has ended too (to destroy). A space can be in both; expire it first.
   */
  due(at: { now: number }): { expired: SpaceRow[]; pastGrace: SpaceRow[] } {
    return {
      expired: (this.stmt.expired.all(at.now) as DbRow[]).map(fromDb),
      pastGrace: (this.stmt.pastGrace.all(at.now) as DbRow[]).map(fromDb),
    };
  }

  /**
   * Marks a torn-down space destroyed (from `destroying`, or directly from `creating`/`failed`
   * when nothing was ever built on the host), which frees its capacity and, later, its uid.
   * Idempotent.
   */
  markDestroyed(id: string): SpaceRow {
    return this.db
      .transaction(() => {
        const row = this.get(id);
        if (!row) throw new OcsError('not_found', 'no such space', { id });
        if (row.state === 'destroyed') return row;
        if (row.state !== 'destroying' && row.state !== 'creating' && row.state !== 'failed') {
          throw new OcsError('conflict', `the space is ${row.state}: tear it down before marking it destroyed`, {
            id,
            state: row.state,
          });
        }
        const now = this.clock.now();
        this.db
          .prepare(
            `UPDATE spaces SET state = 'destroyed', updated_at = ?, released_at = coalesce(released_at, ?) WHERE id = ?`,
          )
          .run(now, now, id);
        return this.get(id)!;
      })
      .immediate();
  }

  /**
   * The space's subordinate ids and subnet: the recorded ones, or `derived` recorded now. A
   * derived range or subnet another space not destroyed already holds (the node's configuration
   * changed in between) is refused with `capacity_exceeded`, never shared.
   */
  workloadIds(
    id: string,
    derived: { idMap: { base: number; size: number }; subnet: string },
  ): { idMap: { base: number; size: number }; subnet: string } {
    return this.db
      .transaction(() => {
        const r = this.db.prepare('SELECT subid_base, subnet FROM spaces WHERE id = ?').get(id) as
          { subid_base: number | null; subnet: string | null } | undefined;
        if (!r) throw new OcsError('not_found', 'no such space');
        if (r.subid_base !== null && r.subnet !== null)
          return { idMap: { base: r.subid_base, size: derived.idMap.size }, subnet: r.subnet };
        const clash = this.db
          .prepare(
            `SELECT 1 FROM spaces WHERE id <> ? AND state <> 'destroyed'
             AND ((subid_base IS NOT NULL AND abs(subid_base - ?) < ?) OR subnet = ?)`,
          )
          .get(id, derived.idMap.base, derived.idMap.size, derived.subnet);
        if (clash)
          throw new OcsError('capacity_exceeded', "this space's subordinate ids or subnet are held by another space", {
            resource: 'subids',
          });
        this.db
          .prepare('UPDATE spaces SET subid_base = ?, subnet = ? WHERE id = ?')
          .run(derived.idMap.base, derived.subnet, id);
        return derived;
      })
      .immediate();
  }

  /** Records where the space's workloads may reach out (checked against the node's policy by the caller). */
  setEgress(id: string, egress: Egress): SpaceRow {
    const text = egress.mode === 'none' ? null : JSON.stringify(egress);
    if (this.db.prepare('UPDATE spaces SET egress = ? WHERE id = ?').run(text, id).changes === 0)
      throw new OcsError('not_found', 'no such space');
    return this.get(id)!;
  }

  /** Records (or, with null, clears) the placement a restored space's files still have. */
  setRemapFrom(id: string, from: RemapFrom | null): void {
    const text = from === null ? null : JSON.stringify(from);
    if (this.db.prepare('UPDATE spaces SET remap_from = ? WHERE id = ?').run(text, id).changes === 0)
      throw new OcsError('not_found', 'no such space');
  }

  /** Records (or, with null, clears) where an import comes from. */
  setImportFrom(id: string, from: ImportFrom | null): void {
    const text = from === null ? null : JSON.stringify(from);
    if (this.db.prepare('UPDATE spaces SET import_from = ? WHERE id = ?').run(text, id).changes === 0)
      throw new OcsError('not_found', 'no such space');
  }

  /**
   * Moves a space's state and records where it moves, in one transaction: `moving` is never
   * written without its target, nor `locked` again with one.
   */
  setMoveState(id: string, from: readonly SpaceState[], to: SpaceState, moveTo: MoveTo | null): SpaceRow {
    return this.db
      .transaction(() => {
        this.setState(id, from, to);
        this.db.prepare('UPDATE spaces SET move_to = ? WHERE id = ?').run(moveTo && JSON.stringify(moveTo), id);
        return this.get(id)!;
      })
      .immediate();
  }

  /** A space that moved away (torn down, `committing`): its record destroyed (its capacity and uid freed) and its tombstone written, at once. */
  recordMoved(t: TombstoneRow, from: readonly SpaceState[] = ['committing']): void {
    this.db
      .transaction(() => {
        this.setState(t.spaceId, from, 'destroying');
        this.setState(t.spaceId, ['destroying'], 'destroyed');
        this.db
          .prepare(
            `INSERT OR REPLACE INTO space_moves (space_id, target_url, target_fingerprint, moved_at, signature, archive)
             VALUES (?, ?, ?, ?, ?, ?)`,
          )
          .run(t.spaceId, t.url, t.fingerprint, t.movedAt, t.signature, t.archive);
      })
      .immediate();
  }

  /** Keeps (or, with null, forgets) the owner's delegation for a space. */
  setDelegation(id: string, jws: string | null): void {
    this.db.prepare('UPDATE spaces SET delegation = ? WHERE id = ?').run(jws, id);
  }

  /**
   * Forgets a destroyed space's record (and what referenced it), so that a space of the same id
   * can come here again: a move retried after an aborted one, a space moving back. A record in
   * any other state is refused (`conflict`); no record is fine.
   */
  forgetDestroyed(id: string): void {
    this.db
      .transaction(() => {
        const row = this.get(id);
        if (!row) return;
        if (row.state !== 'destroyed')
          throw new OcsError('conflict', `a space of this id is ${row.state} here`, { id, state: row.state });
        this.db.prepare('DELETE FROM published_ports WHERE space_id = ?').run(id);
        this.db.prepare('DELETE FROM workloads WHERE space_id = ?').run(id);
        this.db.prepare('DELETE FROM spaces WHERE id = ?').run(id);
      })
      .immediate();
  }

  /** Drops the tombstone of a space that came back. */
  forgetTombstone(spaceId: string): void {
    this.db.prepare('DELETE FROM space_moves WHERE space_id = ?').run(spaceId);
  }

  /** The tombstone of a space that moved away from this node, if it has one. */
  tombstone(spaceId: string): TombstoneRow | undefined {
    const r = this.db
      .prepare(
        'SELECT space_id, target_url, target_fingerprint, moved_at, signature, archive FROM space_moves WHERE space_id = ?',
      )
      .get(spaceId) as
      | {
          space_id: string;
          target_url: string;
          target_fingerprint: string;
          moved_at: number;
          signature: string;
          archive: string | null;
        }
      | undefined;
    return (
      r && {
        spaceId: r.space_id,
        url: r.target_url,
        fingerprint: r.target_fingerprint,
        movedAt: r.moved_at,
        signature: r.signature,
        archive: r.archive,
      }
    );
  }

  /** Forgets tombstones older than `before` (unix ms); returns how many. */
  sweepTombstones(before: number): number {
    return this.db.prepare('DELETE FROM space_moves WHERE moved_at < ?').run(before).changes;
  }

  /** The uid the next insert would get (informational: the insert allocates its own). */
  nextUid(): number {
    return allocateUid(this.db);
  }

  /** Number of records per state, every state present (zero included), for metrics. */
  countByState(): Record<SpaceState, number> {
    const out = Object.fromEntries(SPACE_STATES.map((s) => [s, 0])) as Record<SpaceState, number>;
    for (const r of this.stmt.countByState.all() as { state: SpaceState; n: number }[]) out[r.state] = r.n;
    return out;
  }
}
