/**
 * The node daemon's own state: one SQLite file (0600, root) holding space records, the
 * capacity ledger and the hash-chained audit log. Never a key that opens a space's storage.
 */
export { openDatabase } from './db.js';
export type { Database, OpenDatabaseOptions } from './db.js';
export { migrate, MIGRATIONS, LATEST_VERSION, schemaVersion } from './migrations.js';
export type { Migration } from './migrations.js';
export { SpacesRepo, canTransition } from './spaces-repo.js';
export { isLive, isStanding } from './space-states.js';
export type {
  SpaceRow,
  NewSpace,
  Placement,
  RemapFrom,
  ImportFrom,
  MoveTo,
  TombstoneRow,
  SpacesRepoOptions,
} from './spaces-repo.js';
export { Ledger } from './ledger.js';
export type { LedgerOptions } from './ledger.js';
export { AuditLog, GENESIS_HASH, PAGE_LIMIT_MAX, canonicalJson, entryHash, scrubDetail } from './audit.js';
export type { AuditInput, AuditRecord, AuditOutcome, AuditAnchor, VerifyResult, JsonValue } from './audit.js';
export { verifyAuditFile } from './audit-file.js';
export { openNonceStore, NONCES_PER_PARTITION } from './nonces.js';
export { WorkloadsRepo } from './workloads-repo.js';
export type { WorkloadRow, WorkloadKind, Share, Budget } from './workloads-repo.js';
export { PortsRepo } from './ports-repo.js';
export { DrainsRepo } from './drains-repo.js';
export type { DrainRow, DrainSpace, DrainState } from './drains-repo.js';
export type { PublishedRow, PortRange } from './ports-repo.js';
