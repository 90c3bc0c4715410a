/**
 * Where refusals go. Every refusal is counted (the `ocs_refusals_total` metric, by code). Only
 * a refusal of a known principal (a verified token, or a space on its broker socket) is chained
 * into the audit log, and at most a budget of them per principal and window: the rest are
 * counted into one summary entry per principal and window. A caller who proved nothing leaves
 * no entry, and a caller who proved something cannot grow the log faster than its budget.
 */
import { RefusalBudget, type DroppedRefusals, type ErrorCode, type RefusalBudgetOptions } from '@ocs/protocol';
import type { Clock } from '../clock.js';
import type { Logger } from '../logger.js';
import type { AuditLog } from './audit.js';

export interface Refusal {
  /**
   * Whom to chain the entry under: `key` is what the budget counts by (unique per principal),
   * `actor` what the entry shows. Absent: counted only (an unauthenticated caller, a routine miss).
   */
  chainAs?: { key: string; actor: string } | undefined;
  /** What was attempted: chosen by the server (a route pattern, a broker operation), never by the caller. */
  action: string;
  target?: string | undefined;
  code: ErrorCode;
  detail?: Record<string, unknown> | undefined;
}

/** The action of the entry that says how many refusals of a principal were not chained. */
export const DROPPED_ACTION = 'audit.refusals-dropped';

export class RefusalLog {
  private readonly budget: RefusalBudget;

  /** Counts one refusal by code; the daemon points it at its metrics once they exist. */
  count: (code: ErrorCode) => void = () => undefined;

  constructor(
    private readonly d: { audit: AuditLog; clock: Clock; logger: Logger },
    budget: RefusalBudgetOptions = {},
  ) {
    this.budget = new RefusalBudget(budget);
  }

  /** Never throws: a refusal is answered whatever happens to its record. */
  record(r: Refusal): void {
    this.count(r.code);
    if (!r.chainAs) return;
    const { record, due } = this.budget.admit(r.chainAs.key, r.chainAs.actor, r.code, this.d.clock.now());
    this.summarize(due);
    if (!record) return;
    this.append(() =>
      this.d.audit.append({
        actor: r.chainAs!.actor,
        action: r.action,
        target: r.target,
        outcome: r.code === 'internal' ? 'failed' : 'refused',
        code: r.code,
        detail: r.detail,
      }),
    );
  }

  /**
   * Writes the summaries that are due: of windows that have ended, or (`all`, at shutdown) of
   * every window. Run on a timer, so a principal that stopped is summarized too.
   */
  flush(all = false): void {
    this.summarize(this.budget.drain(this.d.clock.now(), all));
  }

  private summarize(due: DroppedRefusals[]): void {
    for (const s of due) {
      this.append(() =>
        this.d.audit.append({
          actor: s.actor,
          action: DROPPED_ACTION,
          outcome: 'refused',
          detail: {
            dropped: s.dropped,
            codes: s.codes,
            from: new Date(s.from).toISOString(),
            until: new Date(s.until).toISOString(),
          },
        }),
      );
    }
  }

  private append(write: () => void): void {
    try {
      write();
    } catch (err) {
      this.d.logger.error({ err }, 'a refusal could not be written to the audit log');
    }
  }
}
