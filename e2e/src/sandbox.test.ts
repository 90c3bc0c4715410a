/**
 * The space process's sandbox, on the real kernel: the live process of a real space is checked
 * for its namespaces, seccomp, capabilities and uid, and for its broker connection (inherited,
 * with no name another process of its uid could connect to); and a probe run in the very sandbox the
 * supervisor builds (same function, same seccomp program) tries what a compromised space
 * process would: TCP to the host's loopback, other uids' /proc, another space's storage, and
 * making namespaces of its own.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Writable } from 'node:stream';
import { BROKER_FD, generatePrivateKey, type CreateSpaceResponse } from '@ocs/protocol';
import { sandboxArgs, seccompProgram, spaceCgroupLayout, spaceRunDir } from '@ocs/node-daemon';
import type { OcsClient } from '@ocs/client';
import { startTestNode, MiB, type TestNode } from './harness.js';

let t: TestNode;
before(async () => {
  t = await startTestNode();
});
after(async () => {
  await t?.stop();
});

const ALL = ['spaces', 'storage', 'containers', 'vms', 'monitor'] as const;

/** A space of a new owner's, and a client of that owner's with every role. */
async function reserve(): Promise<{ c: OcsClient; a: CreateSpaceResponse }> {
  const owner = generatePrivateKey();
  const c = t.client({ roles: [...ALL], owner });
  const a = (
    await c.call<CreateSpaceResponse>('POST', '/v1/spaces', {
      ownerKey: owner.publicKey.toBase64url(),
      resources: { cpuMillicores: 200, memoryBytes: 128 * MiB, storageBytes: 32 * MiB },
      leaseSeconds: 600,
    })
  ).body;
  return { c, a };
}

function status(pid: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return out;
}

test('a real space process runs in its own network, mount and PID namespaces, under seccomp, as its uid', async () => {
  const { c, a } = await reserve();
  await c.call('GET', `${a.space.apiBase}/status`);
  const pids = await t.cgroups.processes(spaceCgroupLayout(t.config.cgroups.parent, a.space.id).api);
  const node = pids.find((p) => readlinkSync(`/proc/${p}/exe`) === process.execPath);
  assert.ok(node, `a node process among ${pids.join(',')}`);
  for (const ns of ['net', 'mnt', 'pid', 'ipc', 'uts'])
    assert.notEqual(readlinkSync(`/proc/${node}/ns/${ns}`), readlinkSync(`/proc/self/ns/${ns}`), `${ns} namespace`);
  const st = status(node);
  assert.equal(st.Seccomp, '2', 'seccomp filter mode');
  assert.equal(st.NoNewPrivs, '1');
  assert.equal(st.CapEff, '0000000000000000');
  assert.equal(st.CapBnd, '0000000000000000');
  const uid = t.node.repo.get(a.space.id)!.uid;
  assert.equal(st.Uid!.split(/\s+/)[0], String(uid));
  // What it can see of the file system: its own storage, not the others'.
  const mounts = readFileSync(`/proc/${node}/mountinfo`, 'utf8');
  assert.ok(!mounts.includes(t.config.stateDir), "the daemon's state directory is not in its mount namespace");
});

/** The space process's node (inside bwrap), found in the space's `api` cgroup by its executable. */
async function spaceNodePid(spaceId: string): Promise<number> {
  const pids = await t.cgroups.processes(spaceCgroupLayout(t.config.cgroups.parent, spaceId).api);
  const node = pids.find((p) => readlinkSync(`/proc/${p}/exe`) === process.execPath);
  assert.ok(node, `a node process among ${pids.join(',')}`);
  return node;
}

/** The inode of the socket at `fd` of `pid`, or undefined if it is no socket (or not open). */
function socketInode(pid: number | 'self', fd: number | string): number | undefined {
  try {
    const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** The peer of a connected unix socket, from `ss` (the kernel's sock_diag). */
function unixPeer(inode: number): number | undefined {
  const out = spawnSync('ss', ['-x', '-a', '-n', '-H'], { encoding: 'utf8' }).stdout;
  for (const line of out.split('\n')) {
    // u_str ESTAB 0 0 <local name or *> <local inode> <peer name or *> <peer inode>
    const f = line.trim().split(/\s+/);
    if (Number(f[5]) === inode) return Number(f[7]);
  }
  return undefined;
}

test("a process of the space's uid finds no broker to connect to; the space process's inherited one works, and is new with each process", async () => {
  const { c, a } = await reserve();
  const id = a.space.id;
  // `status` is a broker call: the space process reaches the daemon over its inherited socket.
  assert.equal((await c.call('GET', `${a.space.apiBase}/status`)).status, 200);
  const uid = t.node.repo.get(id)!.uid;
  const run = spaceRunDir(t.config.runDir, id).dir;
  const pid = await spaceNodePid(id);

  const ino = socketInode(pid, BROKER_FD);
  assert.ok(ino, `fd ${BROKER_FD} of the space process is a socket`);
  // No name: the pair's row in the node's table of unix sockets has no path.
  const row = readFileSync('/proc/net/unix', 'utf8')
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .find((f) => Number(f[6]) === ino);
  assert.ok(row, 'the socket is in the host network namespace');
  assert.equal(row[7], undefined, 'the socket has no name');
  const daemonEnd = unixPeer(ino);
  assert.ok(daemonEnd && fdOf(daemonEnd), "its peer is the daemon's own descriptor");

  // A local account that became the space's uid (setpriv here; newuidmap in a user namespace
  // gives the same uid): the run directory holds no socket, the old name is not there, and the
  // space process's descriptor cannot be opened through /proc.
  const probe = `
    const fs = require('node:fs'), net = require('node:net');
    const run = ${JSON.stringify(run)}, r = {};
    r.sockets = fs.readdirSync(run).filter((n) => fs.lstatSync(run + '/' + n).isSocket());
    try { fs.openSync('/proc/${pid}/fd/${BROKER_FD}', 'r+'); r.procFd = 'opened'; } catch (e) { r.procFd = e.code; }
    net.connect(run + '/broker.sock')
      .on('connect', () => { r.connect = 'connected'; done(); })
      .on('error', (e) => { r.connect = e.code; done(); });
    function done() { process.stdout.write(JSON.stringify(r)); process.exit(0); }`;
  const p = spawnSync(
    'setpriv',
    [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', process.execPath, '-e', probe],
    { encoding: 'utf8', cwd: '/' },
  );
  assert.equal(p.status, 0, p.stderr);
  const r = JSON.parse(p.stdout) as Record<string, unknown>;
  assert.deepEqual(r.sockets, [], 'no socket in the space run directory');
  assert.equal(r.connect, 'ENOENT', 'no broker.sock to connect to');
  assert.notEqual(r.procFd, 'opened', "the space process's socket cannot be opened through /proc");

  // The process exits as when idle: the daemon's end closes with it, and the next process gets a
  // pair of its own, which works.
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 100 && t.node.supervisor.isRunning(id); i++) await new Promise((res) => setTimeout(res, 50));
  assert.equal(t.node.supervisor.isRunning(id), false, 'the space process exited');
  await new Promise((res) => setTimeout(res, 50));
  assert.equal(fdOf(daemonEnd), undefined, "the daemon's end is closed");
  assert.equal((await c.call('GET', `${a.space.apiBase}/status`)).status, 200);
  const again = socketInode(await spaceNodePid(id), BROKER_FD);
  assert.ok(again && again !== ino, 'a fresh socket pair');
});

/** The daemon's (this process's) descriptor holding socket `inode`, as a string, or undefined. */
function fdOf(inode: number): string | undefined {
  return readdirSync('/proc/self/fd').find((fd) => socketInode('self', fd) === inode);
}

/** Runs `script` with node inside the supervisor's sandbox as `uid`; resolves with its stdout. */
function inSandbox(
  uid: number,
  runDir: string,
  dataDir: string,
  script: string,
): Promise<{ code: number; out: string }> {
  const installRoot = join(fileURLToPath(new URL('.', import.meta.url)), '../..');
  const args = sandboxArgs({
    uid,
    installRoot,
    runDir,
    dataDir,
    nodePath: process.execPath,
    seccompFd: 3,
    argv: [process.execPath, '-e', script],
  });
  return new Promise((resolve) => {
    const child = spawn('bwrap', args, { stdio: ['ignore', 'pipe', 'pipe', 'pipe'], env: { PATH: '/usr/bin:/bin' } });
    (child.stdio[3] as Writable).end(seccompProgram());
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    child.on('close', (code) => resolve({ code: code ?? -1, out }));
  });
}

/** A temporary run and data directory (and `extra` ones) owned by a fresh uid above `base`. */
function sandboxDirs(base: number, extra: string[] = []) {
  const dir = mkdtempSync(join(tmpdir(), 'ocs-sandbox-'));
  chmodSync(dir, 0o711);
  const uid = base + Math.floor(Math.random() * 10_000);
  const [runDir, dataDir, ...more] = ['run', 'data', ...extra].map((n) => join(dir, n)) as [
    string,
    string,
    ...string[],
  ];
  for (const d of [runDir, dataDir, ...more]) {
    mkdirSync(d);
    chownSync(d, uid, uid);
  }
  return { dir, uid, runDir, dataDir, more };
}

test('inside the sandbox: no TCP to the host, no other process, no other storage, no namespaces of its own', async () => {
  const { dir, uid, runDir, dataDir, more } = sandboxDirs(470_000, ['other-space']);
  const other = more[0]!;
  writeFileSync(join(other, 'secret'), 'another tenant');
  chownSync(join(other, 'secret'), uid, uid); // even the same uid: it is simply not there
  const server = createServer((s) => s.end('host service'));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  try {
    const script = `
      const fs = require('node:fs'); const net = require('node:net'); const cp = require('node:child_process');
      const r = {};
      r.ownData = (fs.writeFileSync(${JSON.stringify(join(dataDir, 'x'))}, 'ok'), 'ok');
      try { fs.readFileSync(${JSON.stringify(join(other, 'secret'))}); r.other = 'read'; } catch (e) { r.other = e.code; }
      try { fs.readFileSync('/proc/${process.pid}/cmdline'); r.proc = 'read'; } catch (e) { r.proc = e.code; }
      r.pids = fs.readdirSync('/proc').filter((n) => /^\\d+$/.test(n)).length;
      const u = cp.spawnSync('/usr/bin/unshare', ['--user', '--map-root-user', 'true'], { encoding: 'utf8' });
      r.unshare = u.status;
      const s = net.connect(${port}, '127.0.0.1');
      s.on('data', () => { r.tcp = 'connected'; done(); });
      s.on('error', (e) => { r.tcp = e.code; done(); });
      function done() { console.log(JSON.stringify(r)); process.exit(0); }
    `;
    const { code, out } = await inSandbox(uid, runDir, dataDir, script);
    assert.equal(code, 0, out);
    const r = JSON.parse(out.trim().split('\n').pop()!) as Record<string, string | number>;
    assert.equal(r.ownData, 'ok', 'its own home is writable');
    assert.equal(r.other, 'ENOENT', "another space's storage is not in its world");
    assert.equal(r.proc, 'ENOENT', "the daemon's process does not exist for it");
    assert.ok(Number(r.pids) <= 3, `it sees ${r.pids} processes`);
    assert.notEqual(r.unshare, 0, 'no namespaces of its own (seccomp)');
    assert.match(String(r.tcp), /^(ENETUNREACH|ECONNREFUSED|EHOSTUNREACH)$/, `TCP to the host's loopback: ${r.tcp}`);
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * Raw clone(2) and clone3(2) through perl's syscall() (perl-base is in every Debian /usr): what a
 * static binary written into the space's storage would call. Prints one JSON object.
 */
const CLONE_PROBE = String.raw`
  my %r;
  sub try_clone { my ($flags) = @_; my $pid = syscall(56, $flags, 0, 0, 0, 0);
    if ($pid == 0) { POSIX::_exit(0) } if ($pid > 0) { waitpid($pid, 0); return "ok" } return "errno " . ($! + 0) }
  use POSIX ();
  $r{fork} = try_clone(17);
  $r{newuser} = try_clone(0x10000000 | 17);
  $r{newnet} = try_clone(0x40000000 | 0x10000000 | 17);
  my $args = pack("Q11", 0x10000000, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0);
  my $pid = syscall(435, $args, length($args));
  if ($pid == 0) { POSIX::_exit(0) } $r{clone3} = $pid > 0 ? (waitpid($pid, 0), "ok")[1] : "errno " . ($! + 0);
  print "{" . join(",", map { "\"$_\":\"$r{$_}\"" } sort keys %r) . "}\n";
`;

test('inside the sandbox: clone with a namespace flag is EPERM, clone3 is ENOSYS, bwrap --unshare-user fails; a plain fork works', async () => {
  const { dir, uid, runDir, dataDir } = sandboxDirs(480_000);
  try {
    // The control: the same uid outside the sandbox, with no filter, makes a user and a network
    // namespace (this kernel allows unprivileged user namespaces), so a refusal inside is ours.
    const outside = spawnSync(
      'setpriv',
      [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', 'perl', '-e', CLONE_PROBE],
      {
        encoding: 'utf8',
        cwd: '/',
      },
    );
    const control = JSON.parse(outside.stdout.trim()) as Record<string, string>;
    assert.deepEqual(control, { clone3: 'ok', fork: 'ok', newnet: 'ok', newuser: 'ok' }, outside.stderr);

    const script = `
      const cp = require('node:child_process');
      const probe = cp.spawnSync('/usr/bin/perl', ['-e', ${JSON.stringify(CLONE_PROBE)}], { encoding: 'utf8' });
      const r = JSON.parse(probe.stdout.trim() || '{}');
      const b = cp.spawnSync('/usr/bin/bwrap', ['--unshare-user', '--ro-bind', '/usr', '/usr', '--symlink', 'usr/bin', '/bin', '/usr/bin/true'], { encoding: 'utf8' });
      r.bwrap = b.status === 0 ? 'ok' : 'failed: ' + (b.stderr || '').trim().slice(0, 200);
      console.log(JSON.stringify(r));
    `;
    const { code, out } = await inSandbox(uid, runDir, dataDir, script);
    assert.equal(code, 0, out);
    const r = JSON.parse(out.trim().split('\n').pop()!) as Record<string, string>;
    assert.equal(r.fork, 'ok', 'a plain fork (clone with SIGCHLD only) still works');
    assert.equal(r.newuser, 'errno 1', 'clone(CLONE_NEWUSER) is EPERM');
    assert.equal(r.newnet, 'errno 1', 'clone(CLONE_NEWUSER|CLONE_NEWNET) is EPERM');
    assert.equal(r.clone3, 'errno 38', 'clone3 is ENOSYS');
    assert.match(r.bwrap!, /^failed: /, 'bwrap cannot make a user namespace');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
