/**
 * A node daemon of the benchmark's own, as the separate process it is in production
 * (`ocs-node start` with a config file): its own state, run and storage directories and cgroup
 * parent, the development issuer on (the benchmark mints its tokens), no workloads unless asked.
 * `stop()` ends it and removes whatever it made, by this run's own ids.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { devIssuer, mintToken, type Role } from '@ocs/protocol';
import { daemonDir } from '@ocs/e2e/daemon-process';

const MAIN = fileURLToPath(import.meta.resolve('@ocs/node-daemon/main'));
const MiB = 1024 ** 2;

export interface BenchDaemon {
  child: ChildProcess;
  url: string;
  ca: string;
  stateDir: string;
  runDir: string;
  token(roles: Role[], lifetimeSeconds?: number): Promise<string>;
  stop(): Promise<void>;
}

export async function startBenchDaemon(
  name: string,
  o: { idleSeconds?: number; storageBytes?: number } = {},
): Promise<BenchDaemon> {
  const home = daemonDir(name);
  // No workloads: no host firewall rule or engine is left behind.
  const config = home.nodeConfig({
    uidFirst: 500_000,
    storageBytes: o.storageBytes ?? 64 * 1024 * MiB,
    idleSeconds: o.idleSeconds ?? 60,
  });
  const configPath = home.write(config);
  const child = spawn(process.execPath, [MAIN, 'start', '--config', configPath], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const cleanup = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
    await home.remove();
  };
  let url: string;
  try {
    url = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /url:\s+(\S+)/.exec(out);
        if (m) resolve(m[1]!);
      });
      child.once('exit', (c) => reject(new Error(`daemon exited ${c}`)));
    });
  } catch (err) {
    await cleanup();
    throw err;
  }
  const nodeId = readFileSync(join(config.stateDir, devIssuer.nodeIdFile), 'utf8').trim();
  const issuerKey = createPrivateKey(readFileSync(join(config.stateDir, devIssuer.keyFile), 'utf8'));
  const x = String(createPublicKey(issuerKey).export({ format: 'jwk' }).x);
  return {
    child,
    url,
    ca: new X509Certificate(readFileSync(join(config.stateDir, 'tls', 'cert.pem'))).toString(),
    stateDir: config.stateDir,
    runDir: config.runDir,
    token: (roles, lifetimeSeconds = 900) =>
      mintToken({
        privateKey: issuerKey,
        kid: devIssuer.kid(x),
        alg: 'EdDSA',
        issuer: devIssuer.name(nodeId),
        audience: nodeId,
        subject: 'bench',
        org: 'bench',
        roles,
        lifetimeSeconds,
      }),
    stop: cleanup,
  };
}
