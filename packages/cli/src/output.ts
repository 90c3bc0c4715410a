/**
 * What the user sees: tables for people, JSON with `--json`, and for every failure one line
 * saying what went wrong, one saying what to do, and an exit code from docs/cli.md.
 */
import { OcsError, type ErrorCode } from '@ocs/protocol';
import { PinMismatchError } from '@ocs/client';
import { UsageError } from './units.js';

export const EXIT = {
  ok: 0,
  failed: 1,
  usage: 2,
  auth: 3,
  notFound: 4,
  state: 5,
  capacity: 6,
  unreachable: 7,
  invalid: 8,
} as const;

export interface Out {
  json: boolean;
}

/** Prints `value` as JSON, or as people read it (`human`). */
export function print(o: Out, value: unknown, human: () => string): void {
  process.stdout.write(o.json ? `${JSON.stringify(value, null, 2)}\n` : `${human()}\n`);
}

/** Columns padded to their widest cell; an empty list says so. */
export function table(headers: string[], rows: (string | number | undefined)[][], empty = '(none)'): string {
  if (rows.length === 0) return empty;
  const cells = [headers, ...rows.map((r) => r.map((c) => (c === undefined ? '-' : String(c))))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n');
}

export function keyValues(pairs: [string, string | number | boolean | undefined][]): string {
  const w = Math.max(...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${`${k}:`.padEnd(w + 1)} ${v === undefined ? '-' : String(v)}`).join('\n');
}

const HINTS: Partial<Record<ErrorCode, string>> = {
  token_missing: 'set OCS_TOKEN (or OCS_TOKEN_FILE) to a token of your org; on a development node: ocs token',
  token_expired: 'tokens are short-lived: get a fresh one (on a development node: ocs token)',
  token_issuer_unknown: "this node does not trust your token's issuer: ask the farmer to add it",
  token_audience_invalid: 'the token was made for another node',
  role_missing: 'your token lacks the role this needs (see docs/cli.md for which command needs which)',
  not_owner: 'the space is bound to another key: pass --key with the key that reserved it',
  signature_expired: "check this machine's clock",
  signature_not_yet_valid: "check this machine's clock",
  space_locked: 'unlock it first: ocs space unlock <id>',
  space_unlocked: 'the space is already unlocked',
  lease_expired: 'the lease has run out: renew it within the grace period (ocs space renew <id> --lease 24h)',
  capacity_exceeded: 'the node has not that much free: see ocs node info, or ask for less',
  budget_exceeded: 'that does not fit in what the space reserved: free some, or reserve a larger space',
  unwrap_failed: 'the wrapped key does not open with this key: pass --key with the key that reserved the space',
  not_found: 'check the id or name (ocs space ls, ocs container ls, ...)',
  conflict: 'something of that name exists, or is in use',
  rate_limited: 'too many refused requests: wait a minute',
  unavailable: 'the node could not do it now: try again shortly',
  archive_malformed: 'restore a whole archive as ocs space backup wrote it (a cut copy is not one)',
  archive_corrupt: 'the file changed after the backup: restore another copy of it',
  archive_version: 'the archive is of another format than this node reads: restore it on a node of its version',
  archive_signature_invalid: "restore the file ocs space backup wrote: it carries its owner's signature",
  archive_filesystem_invalid: "the node's check refused the image in it: restore another copy of it",
  archive_backend: 'restore it on a node with the same storage backend (ocs node info)',
  space_moved:
    'the space is on another node now (details.to): ocs node add it, then use --node; or a drain exported it (details.archive): get the file from the farmer, then ocs space restore FILE',
  delegation_invalid:
    'sign a new delegation: ocs space delegate (it is checked against the space, its owner key and org, and the time)',
  not_delegated: "the space's delegation does not name this node or key: ocs space delegate names them",
  node_draining: 'the node is being retired: reserve or restore on another node',
  move_aborted: 'the space is back on this node, locked: ocs space unlock, or try the move again',
};

export function exitCodeOf(err: unknown): number {
  if (err instanceof UsageError) return EXIT.usage;
  if (err instanceof PinMismatchError) return EXIT.unreachable;
  if (err instanceof OcsError) {
    const c = err.code;
    if (
      c.startsWith('token_') ||
      c.startsWith('signature_') ||
      c === 'role_missing' ||
      c === 'not_owner' ||
      c === 'delegation_invalid' ||
      c === 'not_delegated' ||
      c === 'replayed' ||
      c === 'unwrap_failed'
    )
      return EXIT.auth;
    if (c === 'not_found') return EXIT.notFound;
    if (c === 'capacity_exceeded' || c === 'budget_exceeded' || c === 'node_draining') return EXIT.capacity;
    if (['space_locked', 'space_unlocked', 'lease_expired', 'conflict', 'space_moved', 'move_aborted'].includes(c))
      return EXIT.state;
    if (c === 'internal' || c === 'host_failed' || c === 'unavailable') return EXIT.failed;
    return EXIT.invalid;
  }
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code && ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTFOUND', 'EAI_AGAIN'].includes(code))
    return EXIT.unreachable;
  return EXIT.failed;
}

/** Says what failed (stderr, or JSON on stdout with --json) and returns the exit code. */
export function report(o: Out, err: unknown): number {
  const exit = exitCodeOf(err);
  let code = 'failed';
  let message = err instanceof Error ? err.message : String(err);
  let hint: string | undefined;
  if (err instanceof OcsError) {
    code = err.code;
    hint = HINTS[err.code];
  } else if (err instanceof UsageError) {
    code = 'usage';
  } else if (err instanceof PinMismatchError) {
    code = 'certificate_changed';
    message =
      `THE NODE'S CERTIFICATE HAS CHANGED since it was added (pinned ${err.expected}, now ${err.actual}). ` +
      'Someone may be impersonating the node, or its farmer made a new certificate.';
    hint = 'if the farmer confirms the new fingerprint: ocs node rm NAME && ocs node add NAME URL --fingerprint NEW';
  } else if (exit === EXIT.unreachable) {
    code = 'unreachable';
    hint = 'is the node running, and is its URL right? (ocs node ls)';
  }
  const details = err instanceof OcsError ? err.details : undefined;
  if (o.json)
    process.stdout.write(
      `${JSON.stringify({ error: { code, message, ...(details ? { details } : {}), ...(hint ? { hint } : {}) } })}\n`,
    );
  else process.stderr.write(`error: ${message} (${code})\n${hint ? `  ${hint}\n` : ''}`);
  return exit;
}

/** A progress line on stderr for transfers, when stderr is a terminal. */
export function progressBar(label: string): { update(sent: number, total: number): void; done(): void } {
  const tty = process.stderr.isTTY === true;
  const start = Date.now();
  let last = 0;
  const mib = (n: number) => (n / 1024 / 1024).toFixed(1);
  return {
    update(sent, total) {
      const now = Date.now();
      if (!tty || (now - last < 100 && sent < total)) return;
      last = now;
      const rate = sent / Math.max(0.001, (now - start) / 1000);
      // A total of 0: not known until the end (a ZFS space's send stream).
      const of = total > 0 ? ` / ${mib(total)} MiB  ${Math.floor((sent / total) * 100)}%` : ' MiB';
      process.stderr.write(`\r${label}  ${mib(sent)}${of}  ${mib(rate)} MiB/s   `);
    },
    done() {
      if (tty) process.stderr.write('\n');
    },
  };
}

/**
 * For what may take more than a second (reserve, lock, unlock, run, …): after a second, a line
 * on stderr with the time so far, when stderr is a terminal; cleared when done.
 */
export async function busy<T>(label: string, work: Promise<T>): Promise<T> {
  if (process.stderr.isTTY !== true) return work;
  const start = Date.now();
  let shown = false;
  const timer = setInterval(() => {
    shown = true;
    process.stderr.write(`\r${label}… ${Math.floor((Date.now() - start) / 1000)} s `);
  }, 1000);
  try {
    return await work;
  } finally {
    clearInterval(timer);
    if (shown) process.stderr.write('\r\x1b[K');
  }
}
