/**
 * `zfs send` and `zfs receive` as streams: what a space archive reads a ZFS space's image from,
 * and what it writes a restored one into. Same rules as exec.ts (no shell, argv as given, a
 * minimal environment, stderr kept for the error); the bytes go through pipes, a chunk at a time,
 * with the pipe's back-pressure, so neither end holds more than a few chunks.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { CommandError } from '../exec.js';

const PATH = process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const MAX_STDERR = 64 * 1024;

interface Child {
  child: ChildProcess;
  /** Resolves once the child has exited 0; rejects with a CommandError otherwise. */
  exited: Promise<void>;
}

function start(cmd: string, args: string[], stdio: ['pipe', 'ignore', 'pipe'] | ['ignore', 'pipe', 'pipe']): Child {
  const child = spawn(cmd, args, { shell: false, env: { PATH, LC_ALL: 'C' }, stdio });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    if (stderr.length < MAX_STDERR) stderr += d.toString('utf8');
  });
  const exited = new Promise<void>((resolve, reject) => {
    child.on('error', (cause) =>
      reject(new CommandError({ cmd, args, exitCode: null, signal: null, stderr: cause.message, cause })),
    );
    child.on('close', (code, signal) =>
      code === 0 ? resolve() : reject(new CommandError({ cmd, args, exitCode: code, signal, stderr: stderr.trim() })),
    );
  });
  exited.catch(() => undefined); // awaited by whoever reads the end
  return { child, exited };
}

/** A command's stdout, read in order. */
export interface CommandStream {
  /** Fills `into` with what comes next (at most its length); 0 once the command exited 0. */
  read(into: Uint8Array): Promise<number>;
  /** Kills the command if it still runs. */
  close(): Promise<void>;
}

export function readCommand(cmd: string, args: string[]): CommandStream {
  const { child, exited } = start(cmd, args, ['ignore', 'pipe', 'pipe']);
  const chunks = child.stdout![Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let left: Buffer | undefined;
  let done = false;
  return {
    async read(into) {
      if (!left?.length) {
        if (done) return 0;
        const next = await chunks.next();
        if (next.done) {
          done = true;
          await exited; // the stream is whole only if the command said so
          return 0;
        }
        left = next.value;
      }
      const n = Math.min(into.length, left.length);
      into.set(left.subarray(0, n));
      left = left.subarray(n);
      return n;
    },
    async close() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      // What is left unread in the pipe would hold its stream open, and the child's `close`
      // (which `exited` waits for) with it: a reader that stops early drops it.
      child.stdout!.destroy();
      await exited.catch(() => undefined);
    },
  };
}

/** A command's stdin, written in order. */
export interface CommandSink {
  write(data: Uint8Array): Promise<void>;
  /** Closes stdin and waits for the command: a CommandError if it did not exit 0. */
  end(): Promise<void>;
  /** Kills the command if it still runs. */
  kill(): Promise<void>;
}

export function writeCommand(cmd: string, args: string[]): CommandSink {
  const { child, exited } = start(cmd, args, ['pipe', 'ignore', 'pipe']);
  const stdin = child.stdin!;
  // A command that stops reading (it refused the stream) makes writes fail with EPIPE: its exit
  // status and stderr say why, so that is what a write reports.
  let broken = false;
  stdin.on('error', () => (broken = true));
  const failed = async (): Promise<never> => {
    await exited;
    throw new Error(`${cmd} stopped reading its input`);
  };
  return {
    async write(data) {
      if (broken) return failed();
      // A copy: the caller reuses its buffer once this resolves, and the pipe may still hold it.
      if (!stdin.write(Buffer.from(data))) {
        await Promise.race([once(stdin, 'drain'), exited.then(() => undefined)]).catch(() => failed());
      }
      if (broken) return failed();
    },
    async end() {
      stdin.end();
      await exited;
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited.catch(() => undefined);
      }
    },
  };
}
