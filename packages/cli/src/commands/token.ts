/** `ocs token`: a short-lived token from a development node's own issuer (root on that node). */
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Option, type Command } from 'commander';
import { ROLES, devIssuer, mintToken, type Role } from '@ocs/protocol';
import { UsageError, parseDuration } from '../units.js';
import type { Run } from '../main.js';

export function tokenCommand(program: Command, run: Run): void {
  program
    .command('token')
    .description(
      "mint a short-lived token from this development node's issuer (root on the node); export OCS_TOKEN=$(ocs token)",
    )
    .option('--state-dir <dir>', "the node's state directory", '/var/lib/ocs')
    .addOption(
      new Option('--role <role...>', 'roles')
        .choices([...ROLES])
        .default(['spaces', 'storage', 'containers', 'vms', 'monitor']),
    )
    .option('--org <org>', 'organization', 'dev')
    .option('--sub <subject>', 'subject', process.env.USER ?? 'owner')
    .option('--ttl <duration>', 'lifetime (at most 15m)', '15m')
    .action(
      run(async (_ctx, o: { stateDir: string; role: Role[]; org: string; sub: string; ttl: string }) => {
        let pem: string;
        let nodeId: string;
        try {
          pem = readFileSync(join(o.stateDir, devIssuer.keyFile), 'utf8');
          nodeId = readFileSync(join(o.stateDir, devIssuer.nodeIdFile), 'utf8').trim();
        } catch {
          throw new UsageError(
            `no development issuer in ${o.stateDir} (run as root on a node started with the dev issuer, or pass --state-dir)`,
          );
        }
        const privateKey = createPrivateKey(pem);
        const x = String(createPublicKey(privateKey).export({ format: 'jwk' }).x);
        const token = await mintToken({
          privateKey,
          kid: devIssuer.kid(x),
          alg: 'EdDSA',
          issuer: devIssuer.name(nodeId),
          audience: nodeId,
          subject: o.sub,
          org: o.org,
          roles: o.role,
          lifetimeSeconds: parseDuration(o.ttl, 'ttl'),
        });
        process.stdout.write(`${token}\n`);
      }),
    );
}
