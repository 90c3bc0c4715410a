/**
 * A small network made of network namespaces, for tests and benchmarks of what crosses a node:
 * hosts (namespaces), veth links between them, bridges, and tiny servers and probes written in
 * Node itself (no tool beyond iproute2 and nsenter). Every name carries the lab's own tag and is
 * removed by that name; of the host's own namespace only the lab's links to it are touched
 * (they go with the lab's namespaces).
 * Not for production code.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { run } from '#src/exec.js';

export interface Target {
  proto: 'tcp' | 'udp';
  host: string;
  port: number;
  /** The address to send from (one of the prober's own, e.g. a spoofed one it was given). */
  from?: string;
}

/** What a probe got: the server's line (`name@local from remote`), or null for no answer. */
export type Answer = string | null;

const SERVER = `
const net = require('node:net'); const dgram = require('node:dgram');
const o = JSON.parse(process.argv[1]);
let pending = o.tcp.length + o.udp.length;
const ready = () => { if (--pending === 0) process.stdout.write('ready\\n'); };
for (const port of o.tcp) {
  net.createServer((s) => {
    s.on('error', () => {});
    if (o.hold) return;
    if (o.bulk) { const buf = Buffer.alloc(65536); const pump = () => { while (s.write(buf)); }; s.on('drain', pump); pump(); s.on('data', () => {}); return; }
    s.end(o.name + '@' + s.localAddress + ' from ' + s.remoteAddress + '\\n');
  }).listen(port, o.bind, ready);
}
for (const port of o.udp) {
  const u = dgram.createSocket('udp4');
  u.on('message', (m, r) => u.send(o.name + ' from ' + r.address, r.port, r.address));
  u.bind(port, o.bind, ready);
}
if (pending === 0) process.stdout.write('ready\\n');
`;

const PROBE = `
const net = require('node:net'); const dgram = require('node:dgram');
const { targets, timeoutMs } = JSON.parse(process.argv[1]);
const one = (t) => new Promise((done) => {
  const timer = setTimeout(() => finish(null), timeoutMs);
  let finished = false; let close = () => {};
  const finish = (v) => { if (finished) return; finished = true; clearTimeout(timer); close(); done(v); };
  if (t.proto === 'tcp') {
    const s = net.connect({ port: t.port, host: t.host, localAddress: t.from }); let got = '';
    close = () => s.destroy();
    s.on('data', (d) => { got += d; }); s.on('end', () => finish(got.trim() || null)); s.on('error', () => finish(null));
  } else {
    const u = dgram.createSocket('udp4'); close = () => u.close();
    u.on('message', (m) => finish(String(m))); u.on('error', () => finish(null));
    u.bind({ port: 0, address: t.from }, () => u.send('hi', t.port, t.host));
  }
});
Promise.all(targets.map(one)).then((r) => process.stdout.write(JSON.stringify(r)));
`;

const HOLD = `
const net = require('node:net');
const { host, port, n, ms } = JSON.parse(process.argv[1]);
let connected = 0; const sockets = [];
for (let i = 0; i < n; i++) {
  const s = net.connect(port, host); sockets.push(s);
  s.on('connect', () => { connected++; }); s.on('error', () => {});
}
setTimeout(() => process.stdout.write(connected + '\\n'), ms);
process.stdin.on('end', () => { for (const s of sockets) s.destroy(); process.exit(0); }).resume();
`;

const COUNT = `
const net = require('node:net');
const { host, port, ms } = JSON.parse(process.argv[1]);
let bytes = 0; const s = net.connect(port, host);
s.on('data', (d) => { bytes += d.length; }); s.on('error', () => {});
setTimeout(() => { s.destroy(); process.stdout.write(String(bytes)); }, ms);
`;

export class NetnsLab {
  /** Short: namespace and link names are built from it. */
  readonly tag = `ocsl${randomBytes(3).toString('hex')}`;
  private readonly namespaces: string[] = [];
  private readonly servers: ChildProcess[] = [];

  /** The namespace's name for a host of this lab. */
  ns(host: string): string {
    return `${this.tag}-${host}`;
  }

  async host(name: string): Promise<string> {
    const ns = this.ns(name);
    await run('ip', ['netns', 'add', ns]);
    this.namespaces.push(ns);
    await this.ip(name, ['link', 'set', 'lo', 'up']);
    return ns;
  }

  /** `ip -n <ns> …` */
  async ip(host: string, args: string[]): Promise<void> {
    await run('ip', ['-n', this.ns(host), ...args]);
  }

  /** Runs a command inside the host's namespace (nsenter: `ip netns exec` would remount /sys). */
  exec(host: string, cmd: string, args: string[], stdin?: Uint8Array) {
    return run('nsenter', [`--net=/run/netns/${this.ns(host)}`, '--', cmd, ...args], stdin ? { stdin } : {});
  }

  /** The argv prefix that runs a command in the host's namespace. */
  prefix(host: string): string[] {
    return ['nsenter', `--net=/run/netns/${this.ns(host)}`, '--'];
  }

  /** A veth between two hosts, each end named and addressed (`a.b.c.d/n`, or none for a bridge port). */
  async link(a: { host: string; dev: string; addr?: string }, b: { host: string; dev: string; addr?: string }) {
    await run('ip', [
      'link',
      'add',
      a.dev,
      'netns',
      this.ns(a.host),
      'type',
      'veth',
      'peer',
      'name',
      b.dev,
      'netns',
      this.ns(b.host),
    ]);
    for (const end of [a, b]) {
      if (end.addr) await this.ip(end.host, ['addr', 'add', end.addr, 'dev', end.dev]);
      await this.ip(end.host, ['link', 'set', end.dev, 'up']);
    }
  }

  /**
   * A veth between a host of the lab and the namespace this process runs in (a real node's),
   * the root end named `<tag>` + `suffix` and addressed; it goes with the lab's namespace.
   */
  async linkToRoot(a: { host: string; dev: string; addr: string }, root: { suffix: string; addr: string }) {
    const rootDev = `${this.tag}${root.suffix}`;
    if (rootDev.length > 15) throw new Error(`interface name ${rootDev} is too long`);
    await run('ip', ['link', 'add', rootDev, 'type', 'veth', 'peer', 'name', a.dev, 'netns', this.ns(a.host)]);
    await run('ip', ['addr', 'add', root.addr, 'dev', rootDev]);
    await run('ip', ['link', 'set', rootDev, 'up']);
    await this.ip(a.host, ['addr', 'add', a.addr, 'dev', a.dev]);
    await this.ip(a.host, ['link', 'set', a.dev, 'up']);
    return rootDev;
  }

  async bridge(host: string, name: string, addr: string): Promise<void> {
    await this.ip(host, ['link', 'add', name, 'type', 'bridge']);
    await this.ip(host, ['addr', 'add', addr, 'dev', name]);
    await this.ip(host, ['link', 'set', name, 'up']);
  }

  /** A host on a bridge of `node`, like a container on its space's network. */
  async attach(host: string, node: string, bridgeDev: string, addr: string, gateway: string, port: string) {
    await this.link({ host, dev: 'eth0', addr }, { host: node, dev: port });
    await this.ip(node, ['link', 'set', port, 'master', bridgeDev]);
    await this.ip(host, ['route', 'add', 'default', 'via', gateway]);
  }

  /** Servers on every address of the host (or `bind`) that answer with `name@local from remote` (UDP: `name from remote`). */
  async serve(
    host: string,
    name: string,
    ports: { tcp?: number[]; udp?: number[]; bulk?: boolean; hold?: boolean; bind?: string },
  ): Promise<void> {
    const arg = JSON.stringify({
      name,
      tcp: ports.tcp ?? [],
      udp: ports.udp ?? [],
      bulk: ports.bulk === true,
      // Accepts and says nothing: a connection held open (a probe of it times out).
      hold: ports.hold === true,
      // UDP answers from the address it is bound to: bound to all, a reply would leave from the primary address.
      bind: ports.bind ?? '0.0.0.0',
    });
    const child = spawn('nsenter', [...this.prefix(host), process.execPath, '-e', SERVER, arg], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    this.servers.push(child);
    await new Promise<void>((resolve, reject) => {
      let out = '';
      child.stdout?.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('ready')) resolve();
      });
      child.once('exit', (code) => reject(new Error(`server ${name} in ${host} exited (${code})`)));
    });
  }

  /** Tries every target at once from the host (as `uid`, default root); each answer or null. */
  async probe(host: string, targets: Target[], timeoutMs = 1500, uid?: number): Promise<Answer[]> {
    const node = [process.execPath, '-e', PROBE, JSON.stringify({ targets, timeoutMs })];
    const [cmd, ...args] =
      uid === undefined ? node : ['setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', ...node];
    const { stdout } = await this.exec(host, cmd!, args);
    return JSON.parse(stdout) as Answer[];
  }

  /**
   * Opens `n` TCP connections from the host to the target at once and holds them open: how many
   * were connected after `ms` milliseconds, and a close that ends them all (and the process).
   */
  async hold(
    host: string,
    target: { host: string; port: number },
    n: number,
    ms: number,
  ): Promise<{ connected: number; close: () => Promise<void> }> {
    const child = spawn(
      'nsenter',
      [...this.prefix(host), process.execPath, '-e', HOLD, JSON.stringify({ ...target, n, ms })],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const connected = await new Promise<number>((resolve, reject) => {
      let out = '';
      child.stdout?.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('\n')) resolve(Number(out.trim()));
      });
      child.once('exit', (code) => reject(new Error(`holder in ${host} exited (${code})`)));
    });
    return {
      connected,
      close: async () => {
        child.stdin?.end();
        await exited;
      },
    };
  }

  /** Bytes a bulk server sent to the host over `ms` milliseconds. */
  async download(host: string, target: { host: string; port: number }, ms: number): Promise<number> {
    const { stdout } = await this.exec(host, process.execPath, ['-e', COUNT, JSON.stringify({ ...target, ms })]);
    return Number(stdout);
  }

  async cleanup(): Promise<void> {
    for (const s of this.servers) s.kill('SIGKILL');
    this.servers.length = 0;
    for (const ns of this.namespaces.splice(0)) {
      if (existsSync(`/run/netns/${ns}`)) await run('ip', ['netns', 'del', ns]).catch(() => undefined);
    }
  }
}
