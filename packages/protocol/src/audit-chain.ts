/**
 * The audit log's hash chain, one definition for the daemon that writes it and for anyone who
 * checks it from the API (`ocs audit verify`): each entry's hash is the SHA-256 of the
 * canonical JSON of its fields and the previous entry's hash.
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex, utf8ToBytes } from '@noble/hashes/utils.js';
import type { AuditEntry } from './schemas/node.js';

export const GENESIS_HASH = '0'.repeat(64);

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/**
 * JSON with object keys sorted (by UTF-16 code units, as RFC 8785 does) and no whitespace:
 * the same value always hashes the same, whoever wrote it.
 */
export function canonicalJson(value: JsonValue): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const keys = Object.keys(value).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k] as JsonValue)}`).join(',')}}`;
}

export interface HashedFields {
  seq: number;
  at: string;
  actor: string;
  action: string;
  target: string | null;
  outcome: string;
  code: string | null;
  detail: JsonValue;
  prevHash: string;
}

/** hex SHA-256 over the canonical JSON of the entry's fields and the previous hash. */
export function entryHash(f: HashedFields): string {
  return bytesToHex(sha256(utf8ToBytes(canonicalJson({ ...f }))));
}

/** The hash an entry as the API returns it must carry: {@link entryHash} over its fields. */
export function auditEntryHash(e: Omit<AuditEntry, 'hash'>): string {
  return entryHash({
    seq: e.seq,
    at: e.at,
    actor: e.actor,
    action: e.action,
    target: e.target ?? null,
    outcome: e.outcome,
    code: e.code ?? null,
    detail: (e.detail ?? null) as JsonValue,
    prevHash: e.prevHash,
  });
}

export interface ChainCheck {
  ok: boolean;
  /** The last entry that checked out ({ seq: 0, hash: GENESIS_HASH } before any). */
  head: { seq: number; hash: string };
  brokenAt?: number;
  reason?: string;
}

/** Checks entries as the API returns them, continuing from `from` (the genesis by default). */
export function verifyAuditEntries(
  entries: readonly AuditEntry[],
  from: { seq: number; hash: string } = { seq: 0, hash: GENESIS_HASH },
): ChainCheck {
  let head = from;
  for (const e of entries) {
    const broken = (reason: string): ChainCheck => ({ ok: false, head, brokenAt: e.seq, reason });
    if (e.seq !== head.seq + 1)
      return { ok: false, head, brokenAt: head.seq + 1, reason: `entry ${head.seq + 1} is missing` };
    if (e.prevHash !== head.hash) return broken('prevHash does not match the previous entry');
    const hash = auditEntryHash(e);
    if (hash !== e.hash) return broken('hash does not match the entry');
    head = { seq: e.seq, hash };
  }
  return { ok: true, head };
}
