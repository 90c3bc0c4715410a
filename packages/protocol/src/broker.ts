/**
 * The contract between a space's API process and the daemon's privileged broker: one operation
 * per host action, each a JSON body posted to `/<op>` on the space's own broker connection (HTTP/2
 * over a socket the space process inherits at {@link BROKER_FD}). The broker learns which space
 * asks from the connection alone and validates every argument with these
 * schemas again: a compromised space process can send anything, and gets no more than its owner.
 */
import type { Static } from '@sinclair/typebox';
import { brokerOpsOf, type BrokerOps } from './operations.js';

/**
 * Every operation: its arguments and its result; `readOnly` ones change nothing (audited only
 * when refused); its kind, and the part of the host that can fail under it. A view of
 * `SPACE_OPERATIONS` (operations.ts): the entries that reach the host.
 */
export const BROKER_OPS: BrokerOps = brokerOpsOf();

export type BrokerOp = keyof typeof BROKER_OPS;
export type BrokerArgs<O extends BrokerOp> = Static<(typeof BROKER_OPS)[O]['args']>;
export type BrokerResult<O extends BrokerOp> = Static<(typeof BROKER_OPS)[O]['result']>;

export function isReadOnlyOp(op: BrokerOp): boolean {
  return BROKER_OPS[op].readOnly;
}

export function isBrokerOp(op: string): op is BrokerOp {
  return Object.prototype.hasOwnProperty.call(BROKER_OPS, op);
}

/** Largest JSON body the broker reads. */
export const BROKER_BODY_LIMIT = 128 * 1024;

/**
 * The descriptor a space process inherits its broker connection on: the child's end of a socket
 * pair the daemon makes at spawn, with no name in the file system (fd 3 carries the seccomp
 * program to the sandbox).
 */
export const BROKER_FD = 4;
