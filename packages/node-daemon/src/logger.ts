/**
 * Structured logs (pino). Logs must never carry a token, a signature or a key: the redaction
 * below is the second line of defence; the first is that no code logs headers or bodies.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

const REDACT = [
  'req.headers.authorization',
  'req.headers.signature',
  'req.headers["signature-input"]',
  'headers.authorization',
  'headers.signature',
  '*.token',
  '*.key',
  '*.sealedKey',
  '*.wrappedKey',
  '*.privateKey',
  '*.secret',
];

export function createLogger(opts: { level?: string; destination?: pino.DestinationStream } = {}): Logger {
  return pino(
    {
      level: opts.level ?? 'info',
      redact: { paths: REDACT, censor: '[redacted]' },
      base: { svc: 'ocs-node' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    // stderr by default: stdout carries the daemon's start-up banner for people and scripts.
    opts.destination ?? pino.destination(2),
  );
}
