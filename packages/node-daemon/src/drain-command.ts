/**
 * `ocs-node drain`: the farmer retires this node, from the node itself. A client of the
 * daemon's own API (`POST /v1/node/drain`), pinned to the certificate in its state directory,
 * with a farmer's token: the drain is the API's, so it is audited and checked as any call is.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import type { Command } from 'commander';
import { OcsClient, describeDrain, followDrain } from '@ocs/client';
import { isOcsError } from '@ocs/protocol';
import type { Config } from './config.js';

interface DrainOptions {
  config?: string;
  stateDir?: string;
  url?: string;
  tokenFile?: string;
  grace: string;
  status?: boolean;
  cancel?: boolean;
  wait?: boolean;
}

export function drainCommand(program: Command, configOf: (o: { config?: string; stateDir?: string }) => Config): void {
  program
    .command('drain')
    .description(
      "retire this node: it takes no new space; each space moves to a node its owner's delegation names, or is exported to drain.exportDir",
    )
    .option('-c, --config <file>', 'JSON config file (defaults are embedded)')
    .option('--state-dir <dir>', 'state directory (its TLS certificate pins the daemon)')
    .option('--url <url>', 'the daemon (default: https://127.0.0.1 on the configured port)')
    .option(
      '--token-file <file>',
      "a farmer's token (default: $OCS_TOKEN; on a dev node, ocs-node token --role farmer)",
    )
    .option('--grace <seconds>', 'how long spaces delegated to an orchestrator wait for it', '600')
    .option('--status', "show the drain's progress only")
    .option('--cancel', 'stop the drain; the node takes new spaces again')
    .option('--wait', 'wait until the node is drained, printing each change')
    .action(async (o: DrainOptions) => {
      const config = configOf(o);
      const token = (o.tokenFile ? readFileSync(o.tokenFile, 'utf8') : (process.env.OCS_TOKEN ?? '')).trim();
      if (!token) {
        process.stderr.write('error: a farmer token is needed: --token-file FILE or OCS_TOKEN\n');
        process.exit(2);
      }
      const ca = new X509Certificate(readFileSync(join(config.stateDir, 'tls', 'cert.pem'))).toString();
      const client = new OcsClient({
        url: o.url ?? `https://127.0.0.1:${config.listen.port}`,
        ca,
        token: () => token,
      });
      try {
        const s = await followDrain(
          client.node,
          {
            action: o.cancel ? 'cancel' : o.status ? 'status' : 'start',
            graceSeconds: Number(o.grace),
            wait: o.wait === true,
          },
          (x) => process.stdout.write(`${describeDrain(x)}\n`),
        );
        process.exitCode = s.spaces.some((x) => x.outcome === 'failed') && s.state !== 'draining' ? 1 : 0;
      } catch (err) {
        process.stderr.write(`error: ${isOcsError(err) ? `${err.code}: ${err.message}` : String(err)}\n`);
        process.exitCode = 1;
      } finally {
        client.close();
      }
    });
}
