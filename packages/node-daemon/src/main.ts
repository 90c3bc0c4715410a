#!/usr/bin/env node
/**
 * `ocs-node`: the node daemon's entry point. The only module that reads argv and the environment.
 */
import { Command, Option } from 'commander';
import { join } from 'node:path';
import { createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { cipherImplementation, detectCgroups, createStorageDriver, V2CgroupDriver } from '@ocs/host';
import { ROLES, mintToken, type Role } from '@ocs/protocol';
import { loadConfigFile, type Config } from './config.js';
import { createLogger } from './logger.js';
import { startNode, VERSION } from './node.js';
import { openWorkloadDrivers } from './workload-drivers.js';
import { devIssuerKeyPath, loadOrCreateDevIssuer } from './identity.js';
import { verifyAuditFile } from './state/index.js';
import { drainCommand } from './drain-command.js';

/** The daemon's own leaf in a delegated cgroup v2 root, beside `cgroups.parent`. */
const DAEMON_GROUP = 'daemon';

const program = new Command('ocs-node').description('OpenCluster Spaces reservation daemon').version(VERSION);

function withOverrides(opts: { config?: string; stateDir?: string; port?: string }): Config {
  const config = loadConfigFile(opts.config ?? process.env.OCS_CONFIG);
  if (opts.stateDir) config.stateDir = opts.stateDir;
  if (opts.port) config.listen.port = Number(opts.port);
  return config;
}

function cipherLine(): string {
  const c = cipherImplementation();
  return `${c.algorithm} by ${c.driver}${c.accelerated ? ' (hardware)' : ' (NOT accelerated)'}`;
}

program
  .command('start')
  .description('run the daemon in the foreground')
  .option('-c, --config <file>', 'JSON config file (defaults are embedded)')
  .option('--state-dir <dir>', 'state directory (database, keys, TLS)')
  .option('--port <port>', 'HTTPS port')
  .action(async (opts: { config?: string; stateDir?: string; port?: string }) => {
    const config = withOverrides(opts);
    const logger = createLogger({ level: config.log.level });
    const cgroups = await detectCgroups({ root: config.cgroups.root });
    const ownGroup =
      cgroups instanceof V2CgroupDriver ? await cgroups.enterLeaf(DAEMON_GROUP, config.cgroups.daemon) : undefined;
    const storage = await createStorageDriver(config.storage);
    const { containers, vms, firewall } = await openWorkloadDrivers(config, logger, cgroups, storage);
    const node = await startNode({ config, logger, drivers: { cgroups, storage, containers, vms, firewall } });
    process.stdout.write(
      [
        `OpenCluster Spaces node ${node.nodeId} is running`,
        `  url:             ${node.url}`,
        // The runtime is pinned (.node-version, scripts/install-node.sh): this says which one runs.
        `  runtime:         ocs-node ${VERSION} on Node.js ${process.version}`,
        `  tls fingerprint: ${node.tls.fingerprint}`,
        `  unlock key:      ${node.identity.unlockRecipient}`,
        `  storage:         ${storage.kind} under ${config.storage.root}; cgroups ${cgroups.version}${ownGroup ? ` (delegated; the daemon in ${ownGroup})` : ''}`,
        `  cipher:          ${cipherLine()}`,
        `  workloads:       containers ${containers ? 'on (podman per space)' : 'off'}; VMs ${vms ? `on (${vms.accelerator}: ${vms.acceleratorReason})` : 'off'}`,
        ...(node.devIssuer
          ? [
              `  dev issuer:      ${node.devIssuer.issuer} (key ${devIssuerKeyPath(config.stateDir)}, 0600)`,
              `  farmer token:    ocs-node token --state-dir ${config.stateDir} --role farmer`,
            ]
          : []),
        ...node.warnings.map((w) => `  WARNING:         ${w}`),
        '',
      ].join('\n'),
    );
    const log = logger.child({ nodeId: node.nodeId });
    const shutdown = (signal: string) => {
      log.info({ signal }, 'shutting down');
      node.stop().then(
        () => process.exit(0),
        (err: unknown) => {
          log.error({ err }, 'shutdown failed');
          process.exit(1);
        },
      );
    };
    process.once('SIGTERM', () => shutdown('SIGTERM'));
    process.once('SIGINT', () => shutdown('SIGINT'));
  });

program
  .command('token')
  .description("mint a short-lived token from this development node's issuer (root only)")
  .option('--state-dir <dir>', 'state directory', '/var/lib/ocs')
  .addOption(new Option('--role <role...>', 'roles').choices([...ROLES]).default(['farmer']))
  .option('--org <org>', 'organization', 'dev')
  .option('--sub <subject>', 'subject', 'farmer@localhost')
  .option('--ttl <seconds>', 'lifetime in seconds (at most the node maximum)', '300')
  .action(async (opts: { stateDir: string; role: Role[]; org: string; sub: string; ttl: string }) => {
    const nodeId = readFileSync(join(opts.stateDir, 'node-id'), 'utf8').trim();
    const issuer = loadOrCreateDevIssuer(opts.stateDir, nodeId);
    const token = await mintToken({
      privateKey: createPrivateKey(readFileSync(devIssuerKeyPath(opts.stateDir), 'utf8')),
      kid: issuer.kid,
      alg: 'EdDSA',
      issuer: issuer.issuer,
      audience: nodeId,
      subject: opts.sub,
      org: opts.org,
      roles: opts.role,
      lifetimeSeconds: Number(opts.ttl),
    });
    process.stdout.write(`${token}\n`);
  });

program
  .command('audit')
  .description('audit log tools')
  .command('verify')
  .description('verify the hash chain of the audit log')
  .option('--db <path>', 'database file', '/var/lib/ocs/node.db')
  .action((opts: { db: string }) => {
    const r = verifyAuditFile(opts.db);
    process.stdout.write(`${JSON.stringify(r)}\n`);
    process.exit(r.ok ? 0 : 1);
  });

drainCommand(program, withOverrides);

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`ocs-node: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
