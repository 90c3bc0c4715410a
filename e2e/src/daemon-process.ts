/**
 * The real daemon as a child process (`ocs-node start`), for tests that kill it with SIGKILL
 * and start it again on the same state: its URL from the banner, and a client whose tokens its
 * own development issuer mints.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { OcsClient } from '@ocs/client';
import { generatePrivateKey, mintToken, type Ed25519PrivateKey, type Role } from '@ocs/protocol';

const MAIN = fileURLToPath(import.meta.resolve('@ocs/node-daemon/main'));

export interface Daemon {
  child: ChildProcess;
  url: string;
}

/** `prefix`: a command the daemon runs under (e.g. setpriv), which execs it in the same process. */
export function startDaemon(configPath: string, timeoutMs = 30_000, o: { prefix?: string[] } = {}): Promise<Daemon> {
  const argv = [process.execPath, MAIN, 'start', '--config', configPath];
  const [cmd, ...args] = [...(o.prefix ?? []), ...argv] as [string, ...string[]];
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`daemon not up: ${out}`)), timeoutMs);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /url:\s+(\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ child, url: m[1]! });
      }
    });
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    child.once('exit', (c) => {
      clearTimeout(timer);
      reject(new Error(`daemon exited ${c}: ${out}`));
    });
  });
}

export function kill9(d: Daemon): Promise<void> {
  return new Promise((resolve) => {
    if (d.child.exitCode !== null || d.child.signalCode !== null) return resolve();
    d.child.once('exit', () => resolve());
    d.child.kill('SIGKILL');
  });
}

/** A client of the daemon at `d.url`, with tokens of `org` carrying `roles`, signing as `owner`. */
export function daemonClient(
  stateDir: string,
  d: Pick<Daemon, 'url'>,
  opts: { roles: Role[]; org: string; owner?: Ed25519PrivateKey },
): OcsClient {
  const nodeId = readFileSync(join(stateDir, 'node-id'), 'utf8').trim();
  const key = createPrivateKey(readFileSync(join(stateDir, 'keys', 'dev-issuer.pem'), 'utf8'));
  const x = (key.export({ format: 'jwk' }) as { x: string }).x;
  const token = () =>
    mintToken({
      privateKey: key,
      kid: `dev-${x.slice(0, 12)}`,
      alg: 'EdDSA',
      issuer: `ocs-dev:${nodeId}`,
      audience: nodeId,
      subject: 'crash',
      org: opts.org,
      roles: opts.roles,
    });
  const ca = new X509Certificate(readFileSync(join(stateDir, 'tls', 'cert.pem'))).toString();
  return new OcsClient({ url: d.url, ca, token, ownerKey: opts.owner ?? generatePrivateKey() });
}
