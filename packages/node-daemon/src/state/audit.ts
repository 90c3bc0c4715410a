/**
 * The append-only, hash-chained audit log of every privileged action and every refusal.
 *
 * Each entry's hash is SHA-256 over the canonical JSON of its fields and the previous entry's
 * hash, so changing, removing or reordering any entry breaks the chain from that entry on.
 * Triggers refuse UPDATE and DELETE; the chain catches whoever drops them. Truncating the tail
 * leaves a valid shorter chain: only a head recorded elsewhere (`verify({ anchor })`) shows it.
 */
import {
  GENESIS_HASH,
  canonicalJson,
  entryHash,
  printable,
  type AuditEntry,
  type ErrorCode,
  type HashedFields,
  type JsonValue,
} from '@ocs/protocol';

export { GENESIS_HASH, canonicalJson, entryHash, type JsonValue };
import type { Clock } from '../clock.js';
import type { Database } from './db.js';
import { ClockedStore } from './store.js';

/** The `prevHash` of the first entry. */

export type AuditOutcome = 'ok' | 'refused' | 'failed';

/** What a caller records. `detail` is small and never secret (and is scrubbed anyway). */
export interface AuditInput {
  /** Token subject, owner key fingerprint, or 'node'. Caller-chosen text: stored escaped and bounded. */
  actor: string;
  /** What was attempted, e.g. 'space.create'. Chosen by our code: refused if malformed. */
  action: string;
  /** What it was attempted on, e.g. a space id. Caller-chosen text: stored escaped and bounded. */
  target?: string | undefined;
  outcome: AuditOutcome;
  /** The error code when refused or failed. */
  code?: ErrorCode | undefined;
  detail?: Record<string, unknown> | undefined;
}

/** A stored entry: the wire `AuditEntry` plus its scrubbed detail. */
export interface AuditRecord extends AuditEntry {
  outcome: AuditOutcome;
  detail?: { [key: string]: JsonValue };
}

export type VerifyResult =
  | { ok: true; count: number; head: string }
  | { ok: false; count: number; head: string; brokenAt: number; reason: string };

/** A head recorded outside this file (e.g. shipped to a log host), to detect truncation or rewrite. */
export interface AuditAnchor {
  seq: number;
  hash: string;
}

const MAX_TEXT = 256;
const MAX_DETAIL_CHARS = 4096;
const MAX_DEPTH = 8;
export const PAGE_LIMIT_MAX = 1000;

/**
 * Detail keys that name secrets. A deny-list cannot be complete, which is why callers must not
 * pass secrets in the first place; this is the second line, like the logger's redaction.
 * Fingerprints are hashes of public keys and stay.
 */
const SECRET_KEY_RE =
  /token|signature|key|secret|authorization|password|passphrase|cookie|credential|private|sealed|wrapped/i;
const KEEP_KEY_RE = /fingerprint$/i;
/** Values that are secrets whatever their key: JWTs, PEM private keys, age identities. */
const SECRET_VALUE_RE = /^eyJ[\w-]*\.[\w-]*\.[\w-]*$|PRIVATE KEY-----|AGE-SECRET-KEY-/;
const REDACTED = '[redacted]';

/**
 * Copies `value` into plain JSON, replacing secret-looking keys' values and secret-looking
 * strings with '[redacted]', dropping what JSON cannot carry, and bounding depth and size.
 */
export function scrubDetail(detail: Record<string, unknown>): { [key: string]: JsonValue } {
  const out = scrub(detail, 0);
  const obj = out !== null && typeof out === 'object' && !Array.isArray(out) ? out : {};
  const size = canonicalJson(obj).length;
  return size > MAX_DETAIL_CHARS ? { truncated: true, chars: size } : obj;
}

function scrub(value: unknown, depth: number): JsonValue | undefined {
  if (value === null) return null;
  switch (typeof value) {
    case 'string':
      if (SECRET_VALUE_RE.test(value)) return REDACTED;
      return value.length > 1024 ? `${value.slice(0, 1024)}…` : value;
    case 'number':
      return Number.isFinite(value) ? value : null;
    case 'boolean':
      return value;
    case 'bigint':
      return value.toString();
    case 'object': {
      if (depth >= MAX_DEPTH) return '[too deep]';
      if (value instanceof Date) return Number.isNaN(value.getTime()) ? null : value.toISOString();
      if (Array.isArray(value)) return value.slice(0, 100).map((v) => scrub(v, depth + 1) ?? null);
      // Only plain objects: a class instance could carry anything (a key buffer, a socket).
      const proto = Object.getPrototypeOf(value) as unknown;
      if (proto !== Object.prototype && proto !== null) return undefined;
      const out: { [key: string]: JsonValue } = {};
      for (const [k, v] of Object.entries(value)) {
        if (SECRET_KEY_RE.test(k) && !KEEP_KEY_RE.test(k)) {
          out[k] = REDACTED;
          continue;
        }
        const s = scrub(v, depth + 1);
        if (s !== undefined) out[k] = s;
      }
      return out;
    }
    case 'undefined':
    case 'function':
    case 'symbol':
      // Nothing JSON can say.
      return undefined;
  }
  // typeof has no other answers, but the compiler cannot see that the switch covers them all.
  return undefined;
}

/** A row of audit_log: the hashed fields (`detail` as its JSON text, `prevHash` as `prev_hash`) and the hash. */
type DbRow = Omit<HashedFields, 'detail' | 'prevHash'> & { detail: string | null; prev_hash: string; hash: string };

function toRecord(r: DbRow): AuditRecord {
  const rec: AuditRecord = {
    seq: r.seq,
    at: r.at,
    actor: r.actor,
    action: r.action,
    outcome: r.outcome as AuditOutcome,
    prevHash: r.prev_hash,
    hash: r.hash,
  };
  if (r.target !== null) rec.target = r.target;
  if (r.code !== null) rec.code = r.code;
  if (r.detail !== null) rec.detail = JSON.parse(r.detail) as { [key: string]: JsonValue };
  return rec;
}

function hasControl(v: string): boolean {
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

function checkText(field: string, v: string | undefined, required: boolean): void {
  if (v === undefined) {
    if (required) throw new TypeError(`audit ${field} is required`);
    return;
  }
  // Control characters would let a crafted value forge lines in a text export of the log.
  if (typeof v !== 'string' || v.length === 0 || v.length > MAX_TEXT || hasControl(v)) {
    throw new TypeError(`audit ${field} must be 1 to ${MAX_TEXT} printable characters`);
  }
}

/** Verifies the chain of `rows` (ascending seq). Shared by `AuditLog.verify` and the CLI. */
export function verifyRows(rows: Iterable<DbRow>, anchor?: AuditAnchor): VerifyResult {
  let expected = 1;
  let prev = GENESIS_HASH;
  let anchorHash: string | undefined;
  const broken = (brokenAt: number, reason: string): VerifyResult => ({
    ok: false,
    count: expected - 1,
    head: prev,
    brokenAt,
    reason,
  });
  for (const r of rows) {
    if (r.seq !== expected) return broken(expected, `entry ${expected} is missing`);
    if (r.prev_hash !== prev) return broken(r.seq, 'prevHash does not match the previous entry');
    let detail: JsonValue = null;
    if (r.detail !== null) {
      try {
        detail = JSON.parse(r.detail) as JsonValue;
      } catch {
        return broken(r.seq, 'detail is not JSON');
      }
      // Stored canonical at append time: any other spelling was written by someone else.
      if (canonicalJson(detail) !== r.detail) return broken(r.seq, 'detail is not in canonical form');
    }
    const hash = entryHash({
      seq: r.seq,
      at: r.at,
      actor: r.actor,
      action: r.action,
      target: r.target,
      outcome: r.outcome,
      code: r.code,
      detail,
      prevHash: r.prev_hash,
    });
    if (hash !== r.hash) return broken(r.seq, 'hash does not match the entry');
    if (anchor && r.seq === anchor.seq) anchorHash = r.hash;
    prev = r.hash;
    expected++;
  }
  const count = expected - 1;
  if (anchor) {
    if (anchorHash === undefined)
      return {
        ok: false,
        count,
        head: prev,
        brokenAt: anchor.seq,
        reason: `entry ${anchor.seq} of the anchor is missing (truncated log)`,
      };
    if (anchorHash !== anchor.hash)
      return { ok: false, count, head: prev, brokenAt: anchor.seq, reason: 'entry differs from the anchor' };
  }
  return { ok: true, count, head: prev };
}

/** Reads every row in order without loading the whole log into memory. */
export function iterateRows(db: Database): IterableIterator<DbRow> {
  return db.prepare('SELECT * FROM audit_log ORDER BY seq').iterate() as IterableIterator<DbRow>;
}

export class AuditLog extends ClockedStore {
  private readonly stmt;

  constructor(db: Database, opts: { clock?: Clock } = {}) {
    super(db, opts.clock);
    this.stmt = {
      head: db.prepare('SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1'),
      insert: db.prepare(
        'INSERT INTO audit_log (seq, at, actor, action, target, outcome, code, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      page: db.prepare('SELECT * FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?'),
    };
  }

  /**
   * Appends one entry at the head of the chain. BEGIN IMMEDIATE: reading the head and writing
   * after it must not interleave with another process doing the same.
   * The actor and target come from callers (a token's subject, an id from a path): they are
   * escaped and bounded (`printable`), so what a caller sent can never make the entry fail.
   * @throws TypeError for a missing actor, or a malformed action, outcome or code (our bug).
   */
  append(raw: AuditInput): AuditRecord {
    if (typeof raw.actor !== 'string' || raw.actor === '') throw new TypeError('audit actor is required');
    const input: AuditInput = {
      ...raw,
      actor: printable(raw.actor, MAX_TEXT),
      target: raw.target === undefined ? undefined : printable(raw.target, MAX_TEXT),
    };
    checkText('action', input.action, true);
    checkText('code', input.code, false);
    if (input.outcome !== 'ok' && input.outcome !== 'refused' && input.outcome !== 'failed') {
      throw new TypeError('audit outcome must be ok, refused or failed');
    }
    const detail = input.detail === undefined ? null : scrubDetail(input.detail);
    return this.db
      .transaction(() => {
        // Read the clock under the write lock, so `at` never runs backwards along the chain.
        const at = new Date(this.clock.now()).toISOString();
        const head = this.stmt.head.get() as { seq: number; hash: string } | undefined;
        const fields: HashedFields = {
          seq: (head?.seq ?? 0) + 1,
          at,
          actor: input.actor,
          action: input.action,
          target: input.target ?? null,
          outcome: input.outcome,
          code: input.code ?? null,
          detail,
          prevHash: head?.hash ?? GENESIS_HASH,
        };
        const hash = entryHash(fields);
        const detailText = detail === null ? null : canonicalJson(detail);
        this.stmt.insert.run(
          fields.seq,
          at,
          fields.actor,
          fields.action,
          fields.target,
          fields.outcome,
          fields.code,
          detailText,
          fields.prevHash,
          hash,
        );
        return toRecord({ ...fields, detail: detailText, prev_hash: fields.prevHash, hash });
      })
      .immediate();
  }

  /**
   * Entries after `after` (default 0: from the start), at most `limit` (capped at 1000), and
   * the hash of the newest entry overall (the genesis hash for an empty log).
   */
  page(q: { after?: number; limit: number }): { entries: AuditRecord[]; head: string } {
    const limit = Math.max(1, Math.min(Math.trunc(q.limit), PAGE_LIMIT_MAX));
    return this.db.transaction(() => {
      const entries = (this.stmt.page.all(q.after ?? 0, limit) as DbRow[]).map(toRecord);
      return { entries, head: this.head().hash };
    })();
  }

  /** The newest entry's seq and hash ({ seq: 0, hash: GENESIS_HASH } when empty). */
  head(): AuditAnchor {
    const h = this.stmt.head.get() as { seq: number; hash: string } | undefined;
    return h ?? { seq: 0, hash: GENESIS_HASH };
  }

  /**
   * Walks the whole chain. `brokenAt` is the first entry that is missing, altered or out of
   * chain. With an `anchor`, also checks that the entry at `anchor.seq` still has that hash.
   */
  verify(opts: { anchor?: AuditAnchor } = {}): VerifyResult {
    // One read transaction: a consistent snapshot even while the daemon keeps appending.
    return this.db.transaction(() => verifyRows(iterateRows(this.db), opts.anchor))();
  }
}
