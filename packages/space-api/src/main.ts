/**
 * Entry point of a space's API process. Started by the daemon as the space's own uid, with no
 * capabilities, inside the space's cgroup; argv[2] is its config file and fd 4 (`BROKER_FD`) its
 * broker connection. Prints `ready` on stdout once it listens, logs JSON to stderr, and exits 0
 * after `idleSeconds` without a request.
 */
import { createServer } from 'node:http';
import { Socket } from 'node:net';
import { rmSync } from 'node:fs';
import { pino } from 'pino';
import { BROKER_FD } from '@ocs/protocol';
import { loadConfig } from './config.js';
import { createSpaceApp } from './app.js';
import { brokerClient } from './broker-client.js';
import { openSpaceState } from './state.js';
import { spaceTokenVerifier } from './token-verifier.js';

const configPath = process.argv[2];
if (!configPath) {
  process.stderr.write('usage: space-api <config.json>\n');
  process.exit(2);
}
const config = loadConfig(configPath);
const logger = pino({ level: 'info', base: { svc: 'ocs-space', spaceId: config.spaceId } }, pino.destination(2));

// Inherited from the daemon: one end of a socket pair, not a path anyone could connect to.
const broker = brokerClient(new Socket({ fd: BROKER_FD, readable: true, writable: true }));
const verifier = spaceTokenVerifier(config.auth, broker, logger);
const state = openSpaceState(config.dataDir);
const app = createSpaceApp({
  config,
  verifyToken: (t) => verifier(t),
  state,
  broker,
  logger,
});

let idleTimer: NodeJS.Timeout | undefined;
let inFlight = 0;
function armIdle(): void {
  clearTimeout(idleTimer);
  if (inFlight > 0) return;
  // Nonces held only in memory (storage full) must outlive their validity in this process.
  const hold = Math.max(0, state.unsavedUntil(Date.now()) - Date.now());
  idleTimer = setTimeout(() => shutdown(0), Math.max(config.idleSeconds * 1000, hold + 1000));
}

const handle = app.callback();
const server = createServer((req, res) => {
  inFlight++;
  clearTimeout(idleTimer);
  res.once('close', () => {
    inFlight--;
    armIdle();
  });
  void handle(req, res);
});
// Its only client is the daemon's forwarder (over the space's socket): an image upload of many
// GiB is one request, which Node's default whole-request deadline (300 s) would cut.
server.requestTimeout = 0;

function shutdown(code: number): void {
  server.close(() => {
    state.flush();
    state.close();
    process.exit(code);
  });
  server.closeIdleConnections();
  setTimeout(() => process.exit(code), 2000).unref();
}
process.once('SIGTERM', () => shutdown(0));

rmSync(config.socket, { force: true });
server.listen(config.socket, () => {
  armIdle();
  process.stdout.write('ready\n');
});
