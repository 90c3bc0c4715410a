/**
 * The unit of the daemon's workload code: one module per kind of workload (volumes, containers,
 * VMs), each holding everything the node does with that kind — the broker's operations on it, and
 * its part in the space's life (stop before lock, restore after unlock, remove with the space,
 * undo after a crash, orphans). The broker's dispatch and `WorkloadLifecycle` are loops over the
 * kinds; neither knows what a container or a VM is.
 *
 * Which module carries out an operation is the catalogue's `kind` field (protocol's
 * operations.ts): `HandlersOf<K>` holds exactly the operations of kind `K`, so an operation
 * added to the catalogue without its handler, or handled by the wrong module, is a compile error.
 */
import type { BrokerArgs, BrokerOp, BrokerOps, BrokerResult, OperationKind } from '@ocs/protocol';
import type { RemapFrom, SpaceRow, WorkloadRow } from '../state/index.js';

/** One broker operation, for the space its connection belongs to, with checked arguments. */
export type Handler<O extends BrokerOp> = (space: SpaceRow, args: BrokerArgs<O>) => Promise<BrokerResult<O>>;

/** The broker operations the catalogue gives to kinds `K`. */
export type OpsOf<K extends OperationKind> = {
  [O in BrokerOp]: BrokerOps[O]['kind'] extends K ? O : never;
}[BrokerOp];

/** A handler for every operation of kinds `K`, and for nothing else. */
export type HandlersOf<K extends OperationKind> = { [O in OpsOf<K>]: Handler<O> };

/** A module that carries out every broker operation of some operation kinds. */
export interface OperationModule<K extends OperationKind> {
  readonly kinds: readonly K[];
  readonly handlers: HandlersOf<K>;
}

export type WorkloadKindName = WorkloadRow['kind'];

/** What reconciliation at start knows of the node's spaces and records. */
export interface SpacesView {
  /** Every space this database knows. One it never knew is another daemon's and never touched. */
  ours: ReadonlySet<string>;
  /** Live spaces (active, locked, expired): their records and data are kept. */
  live: ReadonlySet<string>;
  /** Active spaces (unlocked, their engines askable). */
  active: ReadonlyMap<string, SpaceRow>;
  /** Every workload with a record, after the half-done ones were undone. */
  known: ReadonlySet<string>;
}

/** Host objects that no record explained, removed by reconciliation. */
export interface Orphans {
  /** Workloads of live spaces. */
  workloads: string[];
  /** Spaces that are gone, whose objects of this kind were still on the host. */
  spaces: string[];
}

/** The space's storage as lock finds it (undefined: the storage driver does not know it). */
export interface StorageState {
  unlocked: boolean;
  mountpoint: string;
}

/**
 * One kind of workload's part in the space's life. Its module is also the `OperationModule` of
 * its operations.
 */
export interface WorkloadKind<K extends WorkloadKindName = WorkloadKindName> {
  readonly kind: K;
  /** Opens what opens with the space's storage, before the space turns active (volume keys live inside it). */
  open?(space: SpaceRow, mountpoint: string): Promise<void>;
  /**
   * A restored space's first unlock, first of all: what this kind keeps in the storage by id (a
   * volume's directory or dataset, its key file) under the workloads' new ids, so that `open`
   * finds it. Idempotent.
   */
  rename?(space: SpaceRow, mountpoint: string, from: RemapFrom): Promise<void>;
  /**
   * A restored space's first unlock, after `rename` and `open`: what this kind keeps in the space
   * made the restored space's own (this node's paths, ids and network). The files' owners are
   * already mapped. Idempotent: a crash halfway runs it again.
   */
  remap?(space: SpaceRow, mountpoint: string, from: RemapFrom): Promise<void>;
  /**
   * Before the space's storage locks: stops its workloads of this kind, each given
   * `graceSeconds` before it is killed. Returns the ids that were running, which `restore` gets
   * after the next unlock.
   */
  stopForLock(space: SpaceRow, storage: StorageState | undefined, graceSeconds: number): Promise<string[]>;
  /** After unlock: starts again what ran at lock. One that cannot start is logged and left stopped. */
  restore(space: SpaceRow, mountpoint: string, running: readonly string[]): Promise<void>;
  /** Removes every host object of this kind of a space that is going (its storage goes after). */
  removeAll(spaceId: string): Promise<void>;
  /**
   * First at start, before any undo: stops what of this kind still runs for a space that is not
   * active (an engine a lock cut short). Returns the gone spaces it found something of.
   */
  stopInactive?(view: Omit<SpacesView, 'known'>): Promise<string[]>;
  /**
   * After a crash: undoes a workload half made, or half removed. False when it cannot be done
   * now (the space is locked); the record stays, and counts, until a later start.
   */
  undo(w: WorkloadRow, active: SpaceRow | undefined): Promise<boolean>;
  /** After the undos: removes host objects of this kind that no record explains. */
  removeOrphans(view: SpacesView): Promise<Orphans>;
}
