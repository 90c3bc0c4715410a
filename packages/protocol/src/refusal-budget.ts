/**
 * How many refusals of one principal a log keeps. A refusal's entry is written by the server
 * but caused by the caller, so without a bound any caller could grow an append-only log for as
 * long as it likes. Each principal gets `perWindow` entries per window; what it is refused
 * beyond that is only counted, and the count is handed back once the window has ended, to be
 * written as one summary entry. Pure bookkeeping: the caller brings the clock and the log.
 */

export interface RefusalBudgetOptions {
  /** Entries kept per principal and window (default 60). */
  perWindow?: number;
  /** Window length, milliseconds (default 60,000). */
  windowMs?: number;
  /** Principals tracked at once (default 10,000); past that, the rest share one window. */
  maxPrincipals?: number;
}

/** What was not recorded for one principal in one window. */
export interface DroppedRefusals {
  principal: string;
  /** The actor the principal's entries are recorded under. */
  actor: string;
  dropped: number;
  /** Dropped refusals by error code. */
  codes: Record<string, number>;
  /** Unix milliseconds: the window the drops fell in. */
  from: number;
  until: number;
}

interface Window {
  actor: string;
  start: number;
  kept: number;
  dropped: number;
  codes: Map<string, number>;
}

/** The key under which principals beyond `maxPrincipals` share a window. */
export const OVERFLOW_PRINCIPAL = '*';

export class RefusalBudget {
  private readonly perWindow: number;
  private readonly windowMs: number;
  private readonly maxPrincipals: number;
  private readonly windows = new Map<string, Window>();
  private lastDrain = -Infinity;

  constructor(opts: RefusalBudgetOptions = {}) {
    this.perWindow = opts.perWindow ?? 60;
    this.windowMs = opts.windowMs ?? 60_000;
    this.maxPrincipals = opts.maxPrincipals ?? 10_000;
  }

  /**
   * Whether to record this refusal (`record`), and the summaries that are now due (windows of
   * any principal that ended with drops): write those first.
   */
  admit(principal: string, actor: string, code: string, now: number): { record: boolean; due: DroppedRefusals[] } {
    const due = now - this.lastDrain >= this.windowMs ? this.drain(now) : [];
    let key = principal;
    let w = this.windows.get(key);
    if (w && now - w.start >= this.windowMs) {
      if (w.dropped > 0) due.push(this.summary(key, w, w.start + this.windowMs));
      this.windows.delete(key);
      w = undefined;
    }
    if (!w && this.windows.size >= this.maxPrincipals) {
      due.push(...this.drain(now));
      if (this.windows.size >= this.maxPrincipals) {
        key = OVERFLOW_PRINCIPAL;
        actor = OVERFLOW_PRINCIPAL;
        w = this.windows.get(key);
      }
    }
    if (!w) {
      w = { actor, start: now, kept: 0, dropped: 0, codes: new Map() };
      this.windows.set(key, w);
    }
    if (w.kept < this.perWindow && key !== OVERFLOW_PRINCIPAL) {
      w.kept++;
      return { record: true, due };
    }
    w.dropped++;
    w.codes.set(code, (w.codes.get(code) ?? 0) + 1);
    return { record: false, due };
  }

  /**
   * Summaries of the windows that have ended (with `all`, of every window, ended or not: at
   * shutdown), each returned once; windows without drops are forgotten silently.
   */
  drain(now: number, all = false): DroppedRefusals[] {
    this.lastDrain = now;
    const out: DroppedRefusals[] = [];
    for (const [key, w] of this.windows) {
      const ended = now - w.start >= this.windowMs;
      if (!ended && !all) continue;
      if (w.dropped > 0) out.push(this.summary(key, w, ended ? w.start + this.windowMs : now));
      this.windows.delete(key);
    }
    return out;
  }

  private summary(principal: string, w: Window, until: number): DroppedRefusals {
    return {
      principal,
      actor: w.actor,
      dropped: w.dropped,
      codes: Object.fromEntries([...w.codes].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
      from: w.start,
      until,
    };
  }
}
