/**
 * The one way host drivers start programs: no shell, argv passed as-is, secrets only through
 * stdin or inherited file descriptors, a deadline, and errors that say what failed without
 * repeating anything that was fed to the child.
 */
import { spawn } from 'node:child_process';

/** Options for {@link run}. */
export interface RunOptions {
  /** Bytes written to the child's stdin, which is then closed. Without it stdin is /dev/null, so a prompt gets EOF instead of hanging. */
  stdin?: Uint8Array;
  /** Kills the child (SIGKILL) after this many milliseconds. Default 60 000. */
  timeoutMs?: number;
  /** Extra environment on top of the minimal one (PATH and LC_ALL=C); the daemon's own environment is not passed on. */
  env?: Record<string, string>;
  /** Open file descriptors handed to the child as its fds 3, 4, … (for tools that must open a key by path, e.g. /proc/self/fd/3). */
  fds?: number[];
}

/** What a finished command printed. */
export interface RunResult {
  stdout: string;
  stderr: string;
}

/** A command runner; drivers take one so tests can record argv without touching the host. */
export type Runner = (cmd: string, args: string[], opts?: RunOptions) => Promise<RunResult>;

/** A command that could not be started, exited non-zero, was killed, or ran out of time. */
export class CommandError extends Error {
  readonly cmd: string;
  readonly args: readonly string[];
  /** Exit code, or null when the child was killed by a signal or never started. */
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  /** The child's stderr, trimmed. Never contains what was written to its stdin. */
  readonly stderr: string;
  readonly timedOut: boolean;

  constructor(o: {
    cmd: string;
    args: string[];
    exitCode: number | null;
    signal: NodeJS.Signals | null;
    stderr: string;
    timedOut?: boolean;
    cause?: unknown;
  }) {
    const why = o.timedOut
      ? 'timed out and was killed'
      : o.exitCode !== null
        ? `exited with code ${o.exitCode}`
        : o.signal !== null
          ? `was killed by ${o.signal}`
          : 'could not be started';
    const detail = o.stderr ? `: ${o.stderr.length > 2000 ? `${o.stderr.slice(0, 2000)}…` : o.stderr}` : '';
    super(`${[o.cmd, ...o.args].join(' ')} ${why}${detail}`, o.cause === undefined ? undefined : { cause: o.cause });
    this.name = 'CommandError';
    this.cmd = o.cmd;
    this.args = [...o.args];
    this.exitCode = o.exitCode;
    this.signal = o.signal;
    this.stderr = o.stderr;
    this.timedOut = o.timedOut ?? false;
  }
}

const DEFAULT_TIMEOUT_MS = 60_000;
// Output larger than this means something is wrong (a runaway tool); better to fail than to exhaust memory.
const MAX_OUTPUT_BYTES = 16 * 1024 * 1024;
const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * Runs `cmd` with `args` (no shell: nothing is interpolated) and resolves with its output when it
 * exits 0. Rejects with a {@link CommandError} otherwise.
 */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const env = { PATH: process.env.PATH ?? DEFAULT_PATH, LC_ALL: 'C', ...opts.env };
    const child = spawn(cmd, args, {
      shell: false,
      env,
      stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe', ...(opts.fds ?? [])],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let size = 0;
    let timedOut = false;
    let settled = false;
    const fail = (e: CommandError) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(e);
    };
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    const collect = (into: Buffer[]) => (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_OUTPUT_BYTES) {
        child.kill('SIGKILL');
        return;
      }
      into.push(chunk);
    };
    child.stdout?.on('data', collect(out));
    child.stderr?.on('data', collect(err));
    child.on('error', (cause) =>
      fail(new CommandError({ cmd, args, exitCode: null, signal: null, stderr: cause.message, cause })),
    );
    child.on('close', (code, signal) => {
      const stderr = Buffer.concat(err).toString('utf8').trim();
      if (timedOut || code !== 0 || size > MAX_OUTPUT_BYTES) {
        fail(
          new CommandError({
            cmd,
            args,
            exitCode: code,
            signal,
            stderr: size > MAX_OUTPUT_BYTES ? 'output too large' : stderr,
            timedOut,
          }),
        );
        return;
      }
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ stdout: Buffer.concat(out).toString('utf8'), stderr });
    });
    if (opts.stdin && child.stdin) {
      // A child that exits without reading its stdin makes the write fail with EPIPE; its exit status tells the story.
      child.stdin.on('error', () => undefined);
      // A view, not a copy, so the caller's zeroing of its buffer is the only copy to care about.
      child.stdin.end(Buffer.from(opts.stdin.buffer, opts.stdin.byteOffset, opts.stdin.byteLength));
    }
  });
}
