/**
 * Runs each space's API process: its own uid, no capabilities, `no_new_privs`, inside the
 * space's `api` cgroup, listening on a unix socket in a directory only that uid (and root) can
 * enter. Processes are started on demand and exit by themselves when idle, so a node can hold
 * a thousand spaces that cost nothing while nobody talks to them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import {
  chownSync,
  lstatSync,
  readlinkSync,
  renameSync,
  closeSync,
  fchownSync,
  mkdirSync,
  openSync,
  rmdirSync,
  rmSync,
  unlinkSync,
  writeSync,
  chmodSync,
} from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { CgroupDriver } from '@ocs/host';
import type { Socket } from 'node:net';
import { BROKER_FD, OcsError, isOcsError, type SpaceProcessConfig } from '@ocs/protocol';
import type { Logger } from '../logger.js';
import { spaceCgroupLayout, spaceRunDir } from './layout.js';
import { sandboxArgs, seccompProgram } from './sandbox.js';
import type { Writable } from 'node:stream';
import type { SpaceProcesses } from './service.js';

export interface SupervisorOptions {
  cgroups: CgroupDriver;
  logger: Logger;
  runDir: string;
  cgroupParent: string;
  /** Absolute path of packages/space-api/dist/main.js. */
  spaceApiMain: string;
  /** The node install (bundle and native modules), shown read-only in the sandbox. */
  installRoot: string;
  nodePath?: string;
  /** From spawn to listening (`spaces.readySeconds`). */
  readyTimeoutMs: number;
  /** Fresh config for a space (from its record), or undefined if it may not run. */
  configFor(spaceId: string): Promise<Omit<SpaceProcessConfig, 'socket'> | undefined>;
  uidOf(spaceId: string): number | undefined;
  /**
   * Serves the space's broker on the daemon's end of the socket pair its process inherits at
   * `BROKER_FD`; closed when that process exits.
   */
  serveBroker(spaceId: string, connection: Socket): { close(): void };
}

interface Running {
  child: ChildProcess;
  socket: string;
  startedAt: number;
  stopping: boolean;
  exited: Promise<void>;
}

const MAX_BACKOFF_MS = 60_000;

export class SpaceSupervisor implements SpaceProcesses {
  private readonly running = new Map<string, Running>();
  private readonly starting = new Map<string, Promise<Running>>();
  private readonly failures = new Map<string, { count: number; notBefore: number }>();
  private readonly restartTimers = new Map<string, NodeJS.Timeout>();
  private closed = false;

  constructor(private readonly o: SupervisorOptions) {
    for (const d of [o.runDir, join(o.runDir, 'spaces')]) {
      mkdirSync(d, { recursive: true });
      chmodSync(d, 0o711);
    }
    mkdirSync(join(o.runDir, 'api'), { recursive: true });
    chmodSync(join(o.runDir, 'api'), 0o700);
    // Where daemons before the broker's socket pair bound broker sockets: root's, 0700, so no
    // space could have put anything in it.
    rmSync(join(o.runDir, 'spaces', '.staging'), { recursive: true, force: true });
  }

  /** The socket of a running space process, starting it if needed (concurrent callers share one start). */
  async ensure(spaceId: string): Promise<string> {
    const r = this.running.get(spaceId);
    if (r && !r.stopping) return r.socket;
    let p = this.starting.get(spaceId);
    if (!p) {
      p = this.start(spaceId).finally(() => this.starting.delete(spaceId));
      this.starting.set(spaceId, p);
    }
    return (await p).socket;
  }

  isRunning(spaceId: string): boolean {
    return this.running.has(spaceId);
  }

  pidOf(spaceId: string): number | undefined {
    return this.running.get(spaceId)?.child.pid;
  }

  get count(): number {
    return this.running.size;
  }

  private async start(spaceId: string): Promise<Running> {
    if (this.closed) throw new OcsError('unavailable', 'the node is shutting down');
    const fail = this.failures.get(spaceId);
    if (fail && fail.notBefore > Date.now()) {
      throw new OcsError('unavailable', 'the space process is restarting after a failure; retry shortly');
    }
    const cfg = await this.o.configFor(spaceId);
    const uid = this.o.uidOf(spaceId);
    if (!cfg || uid === undefined) throw new OcsError('space_locked', 'the space is not active');

    const paths = spaceRunDir(this.o.runDir, spaceId);
    mkdirSync(paths.dir, { recursive: true });
    chownSync(paths.dir, uid, uid);
    chmodSync(paths.dir, 0o700);
    rmSync(paths.apiSocket, { force: true });
    // Left by a daemon before the broker's socket pair, if it crashed: nothing listens on it.
    rmSync(paths.legacyBrokerSocket, { force: true });
    const full: SpaceProcessConfig = { ...cfg, socket: paths.apiSocket };
    rmSync(paths.config, { force: true });
    // O_EXCL, and fchown on the descriptor: the directory is the space's, so never write or
    // chown through whatever it may have left or swapped in there.
    const fd = openSync(paths.config, 'wx', 0o400);
    try {
      writeSync(fd, JSON.stringify(full));
      fchownSync(fd, uid, uid);
    } finally {
      closeSync(fd);
    }

    // The shell waits for one line on stdin before exec'ing the sandbox, so the daemon can put
    // it into the space's cgroup first: nothing the space runs is ever charged elsewhere.
    // Every 'pipe' is a socket pair (libuv's): fd 3 carries the seccomp program to bwrap, which
    // closes it once read; BROKER_FD stays open through sh, bwrap and setpriv (none closes what
    // it inherits) and is the space process's broker connection, a fresh pair per process.
    const SECCOMP_FD = 3;
    // Built before the spawn: nothing may throw between the spawn and the try below, or the
    // waiting shell would be left behind.
    const seccomp = seccompProgram();
    const child = spawn(
      '/bin/sh',
      [
        '-c',
        'read -r _ && exec "$@"',
        'ocs-space',
        'bwrap',
        ...sandboxArgs({
          uid,
          installRoot: this.o.installRoot,
          runDir: paths.dir,
          dataDir: cfg.dataDir,
          nodePath: this.o.nodePath ?? process.execPath,
          seccompFd: SECCOMP_FD,
          // --max-semi-space-size=1 (MiB): Node 24's young generation grows to tens of MiB
          // before its first scavenge, and the process is charged to its space's memory. At
          // start-up it peaked at 49 MiB without the flag and 33 MiB with it (Node 20: 44):
          // without it a 64 MiB space was OOM-killed before its API answered.
          argv: [
            this.o.nodePath ?? process.execPath,
            '--enable-source-maps',
            '--max-semi-space-size=1',
            this.o.spaceApiMain,
            paths.config,
          ],
        }),
      ],
      {
        stdio: ['pipe', 'pipe', 'pipe', 'pipe', 'pipe'],
        env: { PATH: '/usr/bin:/bin', NODE_ENV: 'production' },
        cwd: '/',
      },
    );
    (child.stdio[SECCOMP_FD] as Writable | null)?.end(seccomp);
    const connection = child.stdio[BROKER_FD] as Socket | null;
    let broker: { close(): void } | undefined;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve())).then(() => {
      // The space's end is gone with its process (bwrap's outer process may outlive it briefly):
      // ours closes now, and every call in flight with it.
      broker?.close();
      connection?.destroy();
    });
    try {
      if (child.pid === undefined || !connection) throw new Error('spawn failed');
      broker = this.o.serveBroker(spaceId, connection);
      // From the first byte: a process that dies during start-up says why in the daemon's log.
      this.pipeLogs(spaceId, child);
      await this.o.cgroups.addProcess(spaceCgroupLayout(this.o.cgroupParent, spaceId).api, child.pid);
      child.stdin!.end('go\n');
      await this.waitReady(child);
      const ino = this.handOver(paths.apiSocket, paths.handedApiSocket, uid);
      // Gone with the process; only ours: a newer process of the space may own the path by then.
      void exited.then(() => {
        if (lstatSync(paths.handedApiSocket, { throwIfNoEntry: false })?.ino === ino)
          rmSync(paths.handedApiSocket, { force: true });
      });
    } catch (err) {
      child.kill('SIGKILL');
      await exited;
      this.recordFailure(spaceId);
      this.o.logger.error({ err, spaceId }, 'space process failed to start');
      throw new OcsError('unavailable', 'the space process could not be started');
    }
    const running: Running = { child, socket: paths.handedApiSocket, startedAt: Date.now(), stopping: false, exited };
    this.running.set(spaceId, running);
    this.failures.delete(spaceId);
    child.once('exit', (code, signal) => this.onExit(spaceId, running, code, signal));
    return running;
  }

  /**
   * Moves the space's listening socket into the root-only `api/` directory. rename(2) moves a
   * planted link itself, never what it points to, and the result must be a socket of the
   * space's uid: a link or another file there is refused and removed.
   */
  private handOver(from: string, to: string, uid: number): number {
    rmSync(to, { force: true });
    renameSync(from, to);
    const st = lstatSync(to);
    if (!st.isSocket() || st.uid !== uid) {
      rmSync(to, { force: true });
      throw new Error('the space process left something other than its own socket');
    }
    return st.ino;
  }

  private waitReady(child: ChildProcess): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('space process not ready in time')), this.o.readyTimeoutMs);
      const lines = createInterface({ input: child.stdout! });
      lines.once('line', (line) => {
        clearTimeout(timer);
        lines.close();
        if (line.trim() === 'ready') resolve();
        else reject(new Error('unexpected first line from space process'));
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`space process exited with ${code} before it was ready`));
      });
    });
  }

  private pipeLogs(spaceId: string, child: ChildProcess): void {
    // `pid` is the daemon's own (in the log base): the space process's gets a name of its own.
    const log = this.o.logger.child({ spaceId, spacePid: child.pid });
    createInterface({ input: child.stderr! }).on('line', (line) =>
      log.info({ space: line.slice(0, 2000) }, 'space process'),
    );
  }

  private onExit(spaceId: string, r: Running, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.running.get(spaceId) === r) this.running.delete(spaceId);
    if (r.stopping || this.closed) return;
    if (code === 0) {
      this.o.logger.debug({ spaceId }, 'space process exited idle');
      return;
    }
    this.o.logger.warn({ spaceId, code, signal }, 'space process died; restarting with backoff');
    this.scheduleRestart(spaceId, this.recordFailure(spaceId));
  }

  /** Tries again after `delay`, and again with more backoff while it fails, until the space may not run. */
  private scheduleRestart(spaceId: string, delay: number): void {
    const t = setTimeout(() => {
      this.restartTimers.delete(spaceId);
      this.ensure(spaceId).catch((err: unknown) => {
        if (this.closed || (isOcsError(err) && err.code === 'space_locked')) return;
        this.o.logger.warn({ err, spaceId }, 'restart failed; trying again with backoff');
        const notBefore = this.failures.get(spaceId)?.notBefore ?? Date.now();
        this.scheduleRestart(spaceId, Math.max(250, notBefore - Date.now()));
      });
    }, delay);
    t.unref();
    this.restartTimers.set(spaceId, t);
  }

  private recordFailure(spaceId: string): number {
    const prev = this.failures.get(spaceId)?.count ?? 0;
    const delay = Math.min(MAX_BACKOFF_MS, 250 * 2 ** prev);
    this.failures.set(spaceId, { count: prev + 1, notBefore: Date.now() + delay });
    return delay;
  }

  async stop(spaceId: string): Promise<void> {
    clearTimeout(this.restartTimers.get(spaceId));
    this.restartTimers.delete(spaceId);
    this.failures.delete(spaceId);
    await this.starting.get(spaceId)?.catch(() => undefined);
    const r = this.running.get(spaceId);
    if (!r) return;
    r.stopping = true;
    await this.terminate(spaceId, r);
    const timer = setTimeout(() => r.child.kill('SIGKILL'), 3000);
    await r.exited;
    clearTimeout(timer);
    this.running.delete(spaceId);
  }

  /**
   * SIGTERM to the space's Node process itself, so it drains and closes its database: bwrap
   * does not pass signals on, and killing bwrap kills the sandbox outright. The process is found
   * in the space's own `api` cgroup by its executable; bwrap is signalled only if it is not there.
   */
  private async terminate(spaceId: string, r: Running): Promise<void> {
    const node = this.o.nodePath ?? process.execPath;
    const pids = await this.o.cgroups
      .processes(spaceCgroupLayout(this.o.cgroupParent, spaceId).api)
      .catch(() => [] as number[]);
    const inner = pids.filter((pid) => {
      try {
        return pid !== r.child.pid && readlinkSync(`/proc/${pid}/exe`) === node;
      } catch {
        return false;
      }
    });
    if (inner.length === 0) r.child.kill('SIGTERM');
    for (const pid of inner) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        /* gone already */
      }
    }
  }

  /**
   * For a space that is gone: stops its process and removes what the daemon put in its run
   * directory, then the directory. By name, never a recursive walk: the directory is the
   * space's uid's, and unlink and rmdir never follow a link it may have planted. Whatever the
   * space left there itself keeps the directory, and says so in the log.
   */
  async forget(spaceId: string): Promise<void> {
    await this.stop(spaceId);
    const paths = spaceRunDir(this.o.runDir, spaceId);
    rmSync(paths.handedApiSocket, { force: true });
    for (const file of [paths.config, paths.apiSocket, paths.legacyBrokerSocket]) {
      try {
        unlinkSync(file);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
          this.o.logger.warn({ err, spaceId }, 'a file in the space run directory could not be removed');
      }
    }
    try {
      rmdirSync(paths.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        this.o.logger.warn({ err, spaceId }, 'the space run directory was left: it holds files the space made');
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.running.keys()].map((id) => this.stop(id)));
  }
}
