/** `ocs node`: the nodes this machine talks to, each pinned to its certificate on first contact. */
import { X509Certificate } from 'node:crypto';
import { createInterface } from 'node:readline/promises';
import { connect } from 'node:tls';
import { isIP } from 'node:net';
import type { Command } from 'commander';
import { describeDrain, followDrain, normalizeFingerprint, PinMismatchError } from '@ocs/client';
import { UsageError, formatBytes } from '../units.js';
import { keyValues, print, table } from '../output.js';
import type { Run } from '../main.js';

/** The certificate the server at `url` presents, unverified (what trust on first use shows the user). */
export function fetchCertificate(url: URL): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const s = connect(
      { host, port: Number(url.port || 443), rejectUnauthorized: false, ...(isIP(host) ? {} : { servername: host }) },
      () => {
        const raw = s.getPeerCertificate(true).raw;
        s.end();
        if (!raw) return reject(new Error('the server presented no certificate'));
        resolve(new X509Certificate(raw));
      },
    );
    s.setTimeout(10_000, () => s.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })));
    s.once('error', reject);
  });
}

export function nodeCommands(program: Command, run: Run): void {
  const node = program.command('node').description('nodes: add (pinning the certificate), list, inspect, drain');
  node
    .command('add <name> <url>')
    .description('add a node; its TLS fingerprint is shown and pinned (trust on first use), like ssh')
    .option('--fingerprint <sha256>', 'the fingerprint the farmer gave you: refuse any other')
    .option('-y, --yes', 'trust the fingerprint shown without asking')
    .option('--default', 'make it the default node')
    .action(
      run(async (ctx, name: string, urlText: string, o: { fingerprint?: string; yes?: boolean; default?: boolean }) => {
        let url: URL;
        try {
          url = new URL(urlText);
        } catch {
          throw new UsageError(`${JSON.stringify(urlText)} is not a URL like https://node.example:8443`);
        }
        if (url.protocol !== 'https:') throw new UsageError('a node is reached over https only');
        const cert = await fetchCertificate(url);
        const fp = normalizeFingerprint(cert.fingerprint256);
        if (o.fingerprint && normalizeFingerprint(o.fingerprint) !== fp)
          throw new PinMismatchError(normalizeFingerprint(o.fingerprint), fp);
        if (!o.fingerprint && !o.yes) {
          if (!process.stdin.isTTY)
            throw new UsageError(
              `the node's certificate has fingerprint ${fp}: pass --fingerprint ${fp} (checked with the farmer) or --yes to trust it`,
            );
          const rl = createInterface({ input: process.stdin, output: process.stderr });
          const answer = await rl.question(
            `The authenticity of node ${name} (${url.host}) can't be established.\nIts certificate's SHA-256 fingerprint is ${fp}.\nTrust it? [y/N] `,
          );
          rl.close();
          if (!/^y(es)?$/i.test(answer.trim())) throw new UsageError('not added');
        }
        const origin = `${url.protocol}//${url.host}`;
        ctx.store.addNode(
          { name, url: origin, fingerprint: fp, cert: cert.toString(), addedAt: new Date().toISOString() },
          o.default === true,
        );
        print(ctx.out, { name, url: origin, fingerprint: fp }, () => `added ${name} (${origin}), pinned ${fp}`);
      }),
    );
  node
    .command('ls')
    .description('the nodes added, and which is the default')
    .action(
      run(async (ctx) => {
        const s = ctx.store.nodes();
        print(ctx.out, s, () =>
          table(
            ['', 'NAME', 'URL', 'FINGERPRINT'],
            s.nodes.map((n) => [n.name === s.default ? '*' : '', n.name, n.url, n.fingerprint]),
            'no nodes: ocs node add NAME URL',
          ),
        );
      }),
    );
  node
    .command('info [name]')
    .description("the node's identity, cipher and capacity (needs a token)")
    .action(
      run(async (ctx, name?: string) => {
        const info = await ctx.client({ ...(name ? { node: name } : {}) }).node.info();
        const a = info.capacity.allocatable;
        const u = info.capacity.used;
        print(ctx.out, info, () =>
          keyValues([
            ['node', info.id],
            ['version', info.version],
            ['fingerprint', info.tlsFingerprint],
            [
              'storage',
              `${info.storageBackend}, ${info.storageCipher.driver}${info.storageCipher.accelerated ? '' : ' (not accelerated)'}`,
            ],
            ['cpu', `${(u.cpuMillicores / 1000).toFixed(2)} of ${(a.cpuMillicores / 1000).toFixed(2)} reserved`],
            ['memory', `${formatBytes(u.memoryBytes)} of ${formatBytes(a.memoryBytes)} reserved`],
            ['storage space', `${formatBytes(u.storageBytes)} of ${formatBytes(a.storageBytes)} reserved`],
            ['spaces', info.spaces],
          ]),
        );
      }),
    );
  node
    .command('metrics [name]')
    .description("the node's Prometheus metrics, as its /metrics serves them")
    .action(
      run(async (ctx, name?: string) => {
        const text = await ctx.client({ ...(name ? { node: name } : {}) }).node.metrics();
        process.stdout.write(text);
      }),
    );
  node
    .command('drain [name]')
    .description(
      "retire the node (a farmer's token): it takes no new space; each space moves where its owner's delegation allows, or is exported on the node",
    )
    .option('--grace <seconds>', 'how long spaces delegated to an orchestrator wait for it', '600')
    .option('--status', "show the drain's progress only")
    .option('--cancel', 'stop the drain; the node takes new spaces again')
    .option('--wait', 'wait until the node is drained, printing each change')
    .action(
      run(
        async (
          ctx,
          name: string | undefined,
          o: { grace: string; status?: boolean; cancel?: boolean; wait?: boolean },
        ) => {
          const grace = Number(o.grace);
          if (!Number.isSafeInteger(grace) || grace < 0)
            throw new UsageError('--grace must be a whole number of seconds');
          const client = ctx.client({ ...(name ? { node: name } : {}) });
          const s = await followDrain(
            client.node,
            { action: o.cancel ? 'cancel' : o.status ? 'status' : 'start', graceSeconds: grace, wait: o.wait === true },
            // --json prints the last status only; the text prints each change as it comes.
            (x) => {
              if (!ctx.out.json) process.stdout.write(`${describeDrain(x)}\n`);
            },
          );
          if (ctx.out.json) print(ctx.out, s, () => describeDrain(s));
          if (s.state !== 'draining' && s.spaces.some((x) => x.outcome === 'failed')) process.exitCode = 1;
        },
      ),
    );
  node
    .command('rm <name>')
    .description('forget a node (its pinned certificate with it)')
    .action(
      run(async (ctx, name: string) => {
        if (!ctx.store.removeNode(name)) throw new UsageError(`no node named ${name}`);
        print(ctx.out, { removed: name }, () => `removed ${name}`);
      }),
    );
  node
    .command('use <name>')
    .description('make a node the default')
    .action(
      run(async (ctx, name: string) => {
        ctx.store.setDefaultNode(name);
        print(ctx.out, { default: name }, () => `${name} is the default node`);
      }),
    );
}
