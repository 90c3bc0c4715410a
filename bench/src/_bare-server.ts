/**
 * bench/forward's baselines, each in a process of its own as the daemon and the space process
 * are. argv[2] is the role:
 *
 * - `route CERT KEY JSON`: a bare Koa route over TLS answering fixed JSON. Prints its port.
 * - `front CERT KEY SOCKET`: a bare Koa app over TLS that forwards every request, kept alive,
 *   to the unix socket SOCKET and sends the answer back. Prints its port.
 * - `back SOCKET BROKER`: a bare Koa app on the unix socket SOCKET that asks BROKER (kept
 *   alive) for its JSON and answers it. Prints `ready`.
 * - `broker SOCKET JSON`: a bare Koa app on the unix socket SOCKET answering fixed JSON.
 *
 * front → back → broker is our process topology (daemon → space process → broker) with none of
 * our checks: what the hops themselves cost on this machine.
 */
import { readFileSync, rmSync } from 'node:fs';
import { Agent, request, createServer as createHttpServer, type IncomingMessage, type Server } from 'node:http';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import Koa from 'koa';

const [role, ...args] = process.argv.slice(2) as [string, ...string[]];
const app = new Koa();
let server: Server;

/** One kept-alive request over a unix socket; the answer as a stream, status and headers. */
function over(agent: Agent, socketPath: string, method: string, path: string, headers: Record<string, string>) {
  return new Promise<IncomingMessage>((resolve, reject) => {
    const req = request({ agent, socketPath, method, path, headers }, resolve);
    req.once('error', reject);
    req.end();
  });
}

const tls = (certFile: string, keyFile: string) => ({ cert: readFileSync(certFile), key: readFileSync(keyFile) });
const listenTcp = () =>
  server.listen(0, '127.0.0.1', () => process.stdout.write(`${(server.address() as AddressInfo).port}\n`));
const listenUnix = (path: string) => {
  rmSync(path, { force: true });
  server.listen(path, () => process.stdout.write('ready\n'));
};

if (role === 'route') {
  const [certFile, keyFile, body] = args as [string, string, string];
  const answer = JSON.parse(body) as unknown;
  app.use((ctx) => {
    ctx.body = answer;
  });
  server = createServer(tls(certFile, keyFile), app.callback());
  listenTcp();
} else if (role === 'front') {
  const [certFile, keyFile, socket] = args as [string, string, string];
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  app.use(async (ctx) => {
    const res = await over(agent, socket, ctx.method, ctx.url, { host: ctx.get('host') });
    ctx.status = res.statusCode ?? 502;
    ctx.set('content-type', res.headers['content-type'] ?? 'application/json');
    // Read whole, as the daemon does for small answers: a stream body costs Koa a pipeline.
    const chunks: Buffer[] = [];
    for await (const c of res) chunks.push(c as Buffer);
    ctx.body = Buffer.concat(chunks);
  });
  server = createServer(tls(certFile, keyFile), app.callback());
  listenTcp();
} else if (role === 'back') {
  const [socket, broker] = args as [string, string];
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  app.use(async (ctx) => {
    const res = await over(agent, broker, 'POST', '/status', { 'content-length': '0' });
    const chunks: Buffer[] = [];
    for await (const c of res) chunks.push(c as Buffer);
    ctx.body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  });
  server = createHttpServer(app.callback());
  listenUnix(socket);
} else if (role === 'broker') {
  const [socket, body] = args as [string, string];
  const answer = JSON.parse(body) as unknown;
  app.use((ctx) => {
    ctx.body = answer;
  });
  server = createHttpServer(app.callback());
  listenUnix(socket);
} else {
  process.stderr.write(`unknown role ${role}\n`);
  process.exit(2);
}
process.on('SIGTERM', () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
