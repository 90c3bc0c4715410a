/**
 * Schema migrations, applied in order and recorded in SQLite's `user_version` header field.
 * A migration is never edited once released: fixes are new migrations appended to the list.
 */
import type { Database } from './db.js';

export interface Migration {
  /** 1, 2, 3...: the `user_version` the database has once this migration ran. */
  version: number;
  name: string;
  up(db: Database): void;
  /**
   * Rebuilds a table other tables reference (SQLite's way to change a CHECK): foreign keys are
   * off around its transaction, as SQLite's own procedure says, and checked before it commits.
   */
  rebuildsTables?: boolean;
}

const STATES = `('creating','active','locked','expired','destroying','destroyed','failed')`;
// With a move's four states, and `locking`: a lock answered before its space's key is gone.
const STATES_V10 = `('creating','active','locked','expired','destroying','destroyed','failed','importing','prepared','moving','committing','locking')`;

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'spaces, uid range, audit log',
    up(db) {
      // Nothing secret lives in `spaces`: no plaintext key, and not the wrapped key either. The
      // wrapped key is handed to the owner once; keeping a copy would let whoever later obtains
      // the owner's private key open a snapshot of this disk even after the space is destroyed
      // and its key shredded, and no flow needs it (unlock and rotate bring the key sealed).
      db.exec(`
        CREATE TABLE spaces (
          id                TEXT PRIMARY KEY CHECK (length(id) = 23 AND id GLOB 'sp_*'),
          org               TEXT NOT NULL,
          owner_key         TEXT NOT NULL CHECK (length(owner_key) = 43),
          owner_fingerprint TEXT NOT NULL,
          name              TEXT,
          cpu_millicores    INTEGER NOT NULL CHECK (cpu_millicores >= 0),
          memory_bytes      INTEGER NOT NULL CHECK (memory_bytes >= 0),
          storage_bytes     INTEGER NOT NULL CHECK (storage_bytes >= 0),
          pids              INTEGER CHECK (pids IS NULL OR pids > 0),
          state             TEXT NOT NULL CHECK (state IN ${STATES}),
          uid               INTEGER NOT NULL,
          lease_expires_at  INTEGER NOT NULL,
          grace_until       INTEGER NOT NULL CHECK (grace_until >= lease_expires_at),
          created_at        INTEGER NOT NULL,
          updated_at        INTEGER NOT NULL,
          -- Set when the space's host resources are gone (failed create rolled back, or
          -- destroyed): from then on it no longer counts against capacity.
          released_at       INTEGER
        ) STRICT;
        -- A uid belongs to one space until that space is destroyed; the index enforces it
        -- even if two processes allocate at once.
        CREATE UNIQUE INDEX spaces_uid_held ON spaces (uid) WHERE state <> 'destroyed';
        CREATE INDEX spaces_org ON spaces (org, created_at);
        CREATE INDEX spaces_lease ON spaces (state, lease_expires_at);
        CREATE INDEX spaces_grace ON spaces (state, grace_until);

        -- The configured uid range, recorded so that every process sharing this file (and the
        -- ledger, which inserts spaces) allocates from the same range.
        CREATE TABLE uid_range (
          id    INTEGER PRIMARY KEY CHECK (id = 1),
          base  INTEGER NOT NULL CHECK (base > 0),
          count INTEGER NOT NULL CHECK (count > 0)
        ) STRICT;

        CREATE TABLE audit_log (
          seq       INTEGER PRIMARY KEY,
          at        TEXT NOT NULL,
          actor     TEXT NOT NULL,
          action    TEXT NOT NULL,
          target    TEXT,
          outcome   TEXT NOT NULL CHECK (outcome IN ('ok','refused','failed')),
          code      TEXT,
          detail    TEXT,
          prev_hash TEXT NOT NULL,
          hash      TEXT NOT NULL
        ) STRICT;
        -- Append-only inside SQLite too, so a bug in the daemon cannot rewrite history. (Anyone
        -- with write access to the file can drop these; the hash chain is what catches that.)
        CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
          BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
        CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
          BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
      `);
    },
  },
  {
    version: 2,
    name: 'workloads of spaces (volumes, containers, VMs) and what they hold of the space',
    up(db) {
      // The broker's own account of what each space runs: the budget is summed from these rows
      // inside the transaction that adds one, like the capacity ledger, so concurrent requests
      // of one space never exceed it. The host objects are named after these ids and labels.
      db.exec(`
        CREATE TABLE workloads (
          id             TEXT PRIMARY KEY CHECK (id GLOB 'vol_*' OR id GLOB 'ctr_*' OR id GLOB 'vm_*'),
          space_id       TEXT NOT NULL REFERENCES spaces (id),
          kind           TEXT NOT NULL CHECK (kind IN ('volume','container','vm')),
          name           TEXT NOT NULL,
          cpu_millicores INTEGER NOT NULL CHECK (cpu_millicores >= 0),
          memory_bytes   INTEGER NOT NULL CHECK (memory_bytes >= 0),
          storage_bytes  INTEGER NOT NULL CHECK (storage_bytes >= 0),
          pids           INTEGER NOT NULL CHECK (pids >= 0),
          -- The request as the broker accepted it (JSON; names, sizes and commands, never a key).
          spec           TEXT NOT NULL,
          state          TEXT NOT NULL CHECK (state IN ('creating','ready')),
          created_at     INTEGER NOT NULL
        ) STRICT;
        CREATE UNIQUE INDEX workloads_name ON workloads (space_id, kind, name);
      `);
    },
  },
  {
    version: 3,
    name: 'replay cache of signed requests to the daemon',
    up(db) {
      // Kept across restarts: a signature stays valid for minutes, a restart takes seconds.
      db.exec(`
        CREATE TABLE nonces (
          key        TEXT PRIMARY KEY,
          expires_at INTEGER NOT NULL
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX nonces_expiry ON nonces (expires_at);
      `);
    },
  },
  {
    version: 4,
    name: 'replay cache entries charged to a partition',
    up(db) {
      // Whose share an entry counts against (a signing key, or the principal of a proof of
      // possession). Entries from before have none; they expire within minutes.
      db.exec(`ALTER TABLE nonces ADD COLUMN charged_to TEXT NOT NULL DEFAULT ''`);
    },
  },
  {
    version: 5,
    name: "a space's subordinate id range and container subnet, recorded at first use",
    up(db) {
      // Derived from the space's uid slot when its first container is made, then kept: a later
      // change of the node's configuration never moves a space's ids (its layers are owned by
      // them) or its network.
      db.exec(`ALTER TABLE spaces ADD COLUMN subid_base INTEGER`);
      db.exec(`ALTER TABLE spaces ADD COLUMN subnet TEXT`);
    },
  },
  {
    version: 6,
    name: 'idempotency keys of reservations',
    up(db) {
      // Which space a client's key made, so that a retried reservation never makes a second
      // one. The response itself (with the wrapped key) is kept in memory only: see
      // http/idempotency.ts. Rows older than a day are swept.
      db.exec(`
        CREATE TABLE reservation_keys (
          principal      TEXT NOT NULL,
          idem_key       TEXT NOT NULL,
          request_sha256 TEXT NOT NULL CHECK (length(request_sha256) = 64),
          space_id       TEXT NOT NULL,
          created_at     INTEGER NOT NULL,
          PRIMARY KEY (principal, idem_key)
        ) WITHOUT ROWID;
        CREATE INDEX reservation_keys_created ON reservation_keys (created_at);
      `);
    },
  },
  {
    version: 7,
    name: "the spaces' networks: reserved ports, egress, workload addresses and published ports",
    up(db) {
      // ports: how many of the node's ports the space reserved (counted by the ledger); egress:
      // the owner's choice as JSON (NULL: none); a workload's address on the space network,
      // given by the daemon so that what is published to it survives restarts.
      db.exec(`
        ALTER TABLE spaces ADD COLUMN ports INTEGER NOT NULL DEFAULT 0 CHECK (ports >= 0);
        ALTER TABLE spaces ADD COLUMN egress TEXT;
        ALTER TABLE workloads ADD COLUMN address TEXT;
        CREATE UNIQUE INDEX workloads_address ON workloads (space_id, address) WHERE address IS NOT NULL;
        CREATE TABLE published_ports (
          host_port   INTEGER PRIMARY KEY CHECK (host_port BETWEEN 1 AND 65535),
          space_id    TEXT NOT NULL REFERENCES spaces (id),
          protocol    TEXT NOT NULL CHECK (protocol IN ('tcp','udp')),
          workload_id TEXT NOT NULL REFERENCES workloads (id) ON DELETE CASCADE,
          port        INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
          created_at  INTEGER NOT NULL
        ) STRICT;
        CREATE UNIQUE INDEX published_ports_target ON published_ports (workload_id, protocol, port);
        CREATE INDEX published_ports_space ON published_ports (space_id);
      `);
    },
  },
  {
    version: 8,
    name: 'workloads being removed',
    up(db) {
      // Set before the engine is asked to remove a workload: a daemon killed between the two
      // finishes the removal at its next start instead of keeping a dead record (and its share).
      db.exec(`ALTER TABLE workloads ADD COLUMN removing_since INTEGER;`);
    },
  },
  {
    version: 9,
    name: 'restored spaces',
    up(db) {
      // A space restored from an archive: where its files' owners sat on the node it came from
      // (JSON, the archive head's placement), until its first unlock maps them to its own ids.
      db.exec(`ALTER TABLE spaces ADD COLUMN remap_from TEXT;`);
    },
  },
  {
    version: 10,
    name: 'moves: the import and move states, where a move comes from and goes, tombstones',
    rebuildsTables: true,
    up(db) {
      // The states' CHECK names the new ones (SQLite changes a CHECK only by a rebuild).
      // import_from: on the target, the source node's identity key and until when the import
      // waits (JSON); move_to: on the source, the target (JSON). A tombstone outlives the space
      // it names: where it went, signed by this node, for those who look for it here.
      const columns = `id, org, owner_key, owner_fingerprint, name, cpu_millicores, memory_bytes, storage_bytes, pids,
        state, uid, lease_expires_at, grace_until, created_at, updated_at, released_at, subid_base, subnet, ports,
        egress, remap_from`;
      db.exec(`
        CREATE TABLE spaces_new (
          id                TEXT PRIMARY KEY CHECK (length(id) = 23 AND id GLOB 'sp_*'),
          org               TEXT NOT NULL,
          owner_key         TEXT NOT NULL CHECK (length(owner_key) = 43),
          owner_fingerprint TEXT NOT NULL,
          name              TEXT,
          cpu_millicores    INTEGER NOT NULL CHECK (cpu_millicores >= 0),
          memory_bytes      INTEGER NOT NULL CHECK (memory_bytes >= 0),
          storage_bytes     INTEGER NOT NULL CHECK (storage_bytes >= 0),
          pids              INTEGER CHECK (pids IS NULL OR pids > 0),
          state             TEXT NOT NULL CHECK (state IN ${STATES_V10}),
          uid               INTEGER NOT NULL,
          lease_expires_at  INTEGER NOT NULL,
          grace_until       INTEGER NOT NULL CHECK (grace_until >= lease_expires_at),
          created_at        INTEGER NOT NULL,
          updated_at        INTEGER NOT NULL,
          released_at       INTEGER,
          subid_base        INTEGER,
          subnet            TEXT,
          ports             INTEGER NOT NULL DEFAULT 0 CHECK (ports >= 0),
          egress            TEXT,
          remap_from        TEXT,
          import_from       TEXT,
          move_to           TEXT
        ) STRICT;
        INSERT INTO spaces_new (${columns}) SELECT ${columns} FROM spaces;
        DROP TABLE spaces;
        ALTER TABLE spaces_new RENAME TO spaces;
        CREATE UNIQUE INDEX spaces_uid_held ON spaces (uid) WHERE state <> 'destroyed';
        CREATE INDEX spaces_org ON spaces (org, created_at);
        CREATE INDEX spaces_lease ON spaces (state, lease_expires_at);
        CREATE INDEX spaces_grace ON spaces (state, grace_until);
        CREATE TABLE space_moves (
          space_id           TEXT PRIMARY KEY CHECK (length(space_id) = 23 AND space_id GLOB 'sp_*'),
          target_url         TEXT NOT NULL,
          target_fingerprint TEXT NOT NULL,
          moved_at           INTEGER NOT NULL,
          signature          TEXT NOT NULL
        ) STRICT;
      `);
    },
  },
  {
    version: 11,
    name: 'drains: delegations, tombstones of exported spaces, the drain record',
    up(db) {
      // delegation: the owner's signed delegation (a compact JWS), checked again at each use.
      // A tombstone's archive: a drain exported the space into this file (target_* are empty).
      // drains: the node's one drain (its progress, space by space, as JSON).
      db.exec(`
        ALTER TABLE spaces ADD COLUMN delegation TEXT;
        ALTER TABLE space_moves ADD COLUMN archive TEXT;
        CREATE TABLE drains (
          id           INTEGER PRIMARY KEY CHECK (id = 1),
          state        TEXT NOT NULL CHECK (state IN ('draining', 'drained', 'cancelled')),
          started_at   INTEGER NOT NULL,
          grace_until  INTEGER NOT NULL,
          spaces       TEXT NOT NULL
        ) STRICT;
      `);
    },
  },
];

/** The schema version this code writes and understands. */
export const LATEST_VERSION = MIGRATIONS.reduce((v, m) => Math.max(v, m.version), 0);

export function schemaVersion(db: Database): number {
  return db.pragma('user_version', { simple: true }) as number;
}

/**
 * Applies every migration newer than the database, each in its own BEGIN IMMEDIATE transaction
 * together with its `user_version` bump, so a crash leaves a consistent version and two
 * processes starting at once do not both migrate. Idempotent. Refuses a database written by a
 * newer daemon rather than guessing at a schema it does not know.
 */
export function migrate(db: Database, migrations: readonly Migration[] = MIGRATIONS): number {
  const latest = migrations.reduce((v, m) => Math.max(v, m.version), 0);
  for (const m of [...migrations].sort((a, b) => a.version - b.version)) {
    if (m.rebuildsTables && schemaVersion(db) < m.version) db.pragma('foreign_keys = OFF');
    try {
      migrateOne(db, m, latest);
    } finally {
      db.pragma('foreign_keys = ON');
    }
  }
  return schemaVersion(db);
}

function migrateOne(db: Database, m: Migration, latest: number): void {
  db.transaction(() => {
    // Re-read inside the write lock: another process may have migrated meanwhile.
    const current = schemaVersion(db);
    if (current > latest) {
      throw new Error(`database schema version ${current} is newer than this daemon knows (${latest})`);
    }
    if (current >= m.version) return;
    if (current !== m.version - 1)
      throw new Error(`migration ${m.version} needs schema version ${m.version - 1}, found ${current}`);
    m.up(db);
    if (m.rebuildsTables) {
      const broken = db.pragma('foreign_key_check') as unknown[];
      if (broken.length > 0) throw new Error(`migration ${m.version} would break ${broken.length} references`);
    }
    db.pragma(`user_version = ${m.version}`);
  }).immediate();
}
