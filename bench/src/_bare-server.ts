/**
 * bench/forward's baseline, in a process of its own as the daemon is: a bare Koa route over TLS
 * answering fixed JSON. argv: cert file, key file, the JSON body. Prints its port.
 */
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import Koa from 'koa';

const [certFile, keyFile, body] = process.argv.slice(2) as [string, string, string];
const app = new Koa();
const answer = JSON.parse(body) as unknown;
app.use((ctx) => {
  ctx.body = answer;
});
const server = createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) }, app.callback());
server.listen(0, '127.0.0.1', () => process.stdout.write(`${(server.address() as AddressInfo).port}\n`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
