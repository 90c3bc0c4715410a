/**
 * Structured logs (pino). Logs must never carry a token, a signature or a key: the redaction
 * below is the second line of defence; the first is that no code logs headers or bodies.
 */
import { hostname } from 'node:os';
import { pino, type Logger } from 'pino';

export type { Logger };

/** Field names that hold secrets wherever they appear: at the top level of a line or one level down. */
const SECRET_FIELDS = [
  'token',
  'key',
  'sealedKey',
  'wrappedKey',
  'privateKey',
  'secret',
  'password',
  'authorization',
  'signature',
  'cookie',
];

const REDACT = [
  'req.headers.authorization',
  'req.headers.signature',
  'req.headers["signature-input"]',
  'req.headers.cookie',
  ...SECRET_FIELDS,
  ...SECRET_FIELDS.map((f) => `*.${f}`),
];

export function createLogger(opts: { level?: string; destination?: pino.DestinationStream } = {}): Logger {
  return pino(
    {
      level: opts.level ?? 'info',
      redact: { paths: REDACT, censor: '[redacted]' },
      // pino's own base (pid, hostname) plus who we are; the node adds its id once it knows it.
      base: { pid: process.pid, hostname: hostname(), svc: 'ocs-node' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    // stderr by default: stdout carries the daemon's start-up banner for people and scripts.
    opts.destination ?? pino.destination(2),
  );
}
